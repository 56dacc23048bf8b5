"""uvicorn's h11 protocol with the connection limits a public server needs (uvicorn has no header timeout
and keeps idle connections beyond ``limit_concurrency`` open):

- ``max_connections``: a connection beyond it is answered ``503 too_many_connections`` and closed at once,
  so idle clients cannot exhaust file descriptors;
- ``header_timeout``: a connection that has not sent a whole request line and headers that many seconds
  after connecting (or after the previous response) is answered ``408 header_timeout`` and closed
  (slowloris);
- request line + headers above ``max_header_bytes`` -> ``431 headers_too_large``, closed (also h11's max
  incomplete event size; other malformed HTTP -> ``400 bad_request`` JSON, closed).

Every refusal is a JSON error body like the app's. The limits are class attributes set by `configure`
(in each worker process: `aftershock.service.server` calls it before uvicorn starts serving).
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
           503: b"Service Unavailable"}


def raw_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with a JSON error body and ``connection: close``."""
    body = json.dumps({"error": code, "message": message, "field": None, "details": []}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status, REASONS[status], len(body))
    return head + body


class GuardedH11Protocol(H11Protocol):
    max_connections: int | None = None
    header_timeout: float | None = None
    max_header_bytes: int | None = None

    @classmethod
    def configure(cls, settings) -> None:
        cls.max_connections = settings.max_connections
        cls.header_timeout = settings.header_timeout
        cls.max_header_bytes = settings.max_header_bytes

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._header_timer = None
        self._head = b""  # bytes of a request head not yet complete
        super().connection_made(transport)
        limit = self.max_connections
        if limit is not None and len(self.connections) > limit:
            transport.write(raw_response(503, "too_many_connections", f"this server holds at most "
                                         f"max_connections={limit} open connections; retry later, reuse "
                                         "connections, or start the server with a larger --max-connections"))
            transport.close()
            return
        self._arm()

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self.header_timeout and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        if self.max_header_bytes and self._waiting_for_headers():
            # h11 checks its limit only on an incomplete event: a whole oversized head in one read passes it
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(self._head)) > self.max_header_bytes:
                self._disarm()
                self.transport.write(raw_response(431, "headers_too_large", f"the request line and headers exceed "
                                                  f"max_header_bytes={self.max_header_bytes}; send smaller headers "
                                                  "(or start the server with a larger --max-header-bytes)"))
                self.transport.close()
                return
            if end >= 0:
                self._head = b""
        super().data_received(data)
        if self.transport.is_closing() or not self._waiting_for_headers():
            self._disarm()
        else:  # part of a request line or headers: they must be complete within header_timeout
            self._arm()

    def _header_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        if self.cycle is not None and self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            return  # idle between requests, nothing pending: the keep-alive timeout closes it
        self.transport.write(raw_response(408, "header_timeout", f"the request line and headers did not arrive "
                                          f"within header_timeout={self.header_timeout:g}s; send the whole request "
                                          "promptly (or start the server with a larger --header-timeout)"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self.transport.write(raw_response(400, "bad_request", f"{msg} The request line and headers may take at "
                                          f"most max_header_bytes={self.max_header_bytes} bytes (--max-header-bytes) "
                                          "and must be valid HTTP/1.1."))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
