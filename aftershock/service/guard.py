"""The service's outer ASGI middleware: metrics, the request body's size and time limits, text clean-up and
the per-request deadline.

- The body is read here, whole, before any route runs: more than ``max_body_bytes`` (declared in
  Content-Length or counted) -> 413; not complete within ``body_timeout`` seconds (a Content-Length larger
  than what is sent) -> 408. Both close the connection.
- Undecodable text never reaches the app: invalid UTF-8 bytes and JSON escapes of lone surrogates
  (``"\\ud800"``) become U+FFFD, as everywhere else in Aftershock.
- The app then has ``request_timeout`` seconds to answer; past it the client gets 504 ``deadline_exceeded``
  at once (work already running in a thread finishes in the background and is discarded).
"""

from __future__ import annotations

import json
import re
import time

import anyio
from fastapi.responses import JSONResponse

from aftershock.service.metrics import Metrics
from aftershock.service.settings import ServiceSettings

DEADLINE_KEY = "aftershock.deadline"  # scope key: time.monotonic() by which the answer is due
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class SafeJSONResponse(JSONResponse):
    """JSONResponse whose body never fails to encode (a stray lone surrogate becomes '?')."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8", "replace")


def error_response(status: int, code: str, message: str, field: str | None = None, details=None, headers=None):
    body = {"error": code, "message": message, "field": field, "details": details or []}
    return SafeJSONResponse(body, status_code=status, headers=headers)


def route_of(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _fix(value):
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_fix(v) for v in value]
    if isinstance(value, dict):
        return {_fix(k): _fix(v) for k, v in value.items()}
    return value


def clean_body(body: bytes) -> bytes:
    """``body`` with invalid UTF-8 and lone-surrogate escapes replaced by U+FFFD (unchanged when clean, or when
    it is not JSON at all: the app's parser then reports it)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        body = body.decode("utf-8", "replace").encode("utf-8")
    if _SURROGATE_ESCAPE.search(body) is None:
        return body
    try:
        return json.dumps(_fix(json.loads(body)), ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return body


class Guard:
    def __init__(self, app, metrics: Metrics, settings: ServiceSettings):
        self.app, self.metrics, self.s = app, metrics, settings

    def _too_large(self, size: str):
        return error_response(413, "body_too_large", f"request body of {size} bytes exceeds this server's "
                              f"max_body_bytes={self.s.max_body_bytes}; send fewer or smaller queries per request "
                              "(or start the server with a larger --max-body-bytes)", "body",
                              headers={"connection": "close"})

    async def _read_body(self, scope, receive):
        """(body, None) or (None, a refusal response) or (None, None) when the client left."""
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.s.max_body_bytes:
            return None, self._too_large(length.decode())
        chunks, size = [], 0
        with anyio.move_on_after(self.s.body_timeout) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None, None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.s.max_body_bytes:
                    return None, self._too_large(f"more than {size - 1}")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if timer.cancelled_caught:
            got = f"{size} of {length.decode()}" if length is not None else f"{size}"
            return None, error_response(408, "body_timeout", f"the request body did not arrive within "
                                        f"body_timeout={self.s.body_timeout:g}s ({got} bytes received); send the "
                                        "whole body promptly with a correct Content-Length (or start the server "
                                        "with a larger --body-timeout)", "body", headers={"connection": "close"})
        return clean_body(b"".join(chunks)), None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        m = self.metrics
        status, started = [500], [False]
        t0 = time.perf_counter()
        m.in_flight.inc()

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
            await send(message)

        try:
            body, refusal = await self._read_body(scope, receive)
            if refusal is not None:
                m.errors.labels(route_of(scope), json.loads(refusal.body)["error"]).inc()
                return await refusal(scope, receive, send_wrapped)
            if body is None:  # the client disconnected
                status[0] = 499
                return
            replayed = [False]

            async def replay():
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            scope[DEADLINE_KEY] = time.monotonic() + self.s.request_timeout
            with anyio.move_on_after(self.s.request_timeout) as timer:
                await self.app(scope, replay, send_wrapped)
            if timer.cancelled_caught and not started[0]:
                m.errors.labels(route_of(scope), "deadline_exceeded").inc()
                resp = error_response(504, "deadline_exceeded", f"no answer within this server's request_timeout="
                                      f"{self.s.request_timeout:g}s; send fewer queries or a smaller k per request "
                                      "(or start the server with a larger --request-timeout)")
                await resp(scope, replay, send_wrapped)
        finally:
            route = route_of(scope)
            m.in_flight.dec()
            m.requests.labels(scope.get("method", ""), route, str(status[0])).inc()
            m.latency.labels(route).observe(time.perf_counter() - t0)
