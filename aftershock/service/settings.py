"""Service settings: limits, security and concurrency knobs (all off-by-default features stay off)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from aftershock.index.backends import resolve_backend
from aftershock.index.config import Config, check, check_known, is_int


INT_LIMITS = ("max_k", "max_batch", "max_query_terms", "max_text_chars", "max_body_bytes", "max_hits",
              "max_response_bytes", "batch_slots", "max_connections", "max_header_bytes")
TIMEOUTS = ("request_timeout", "body_timeout", "header_timeout", "keep_alive_timeout")


@dataclass(frozen=True)
class ServiceSettings(Config):
    """Limits and switches of one service instance.

    Limits (each breach is a 4xx naming the field and the limit): ``max_k`` results per query,
    ``max_batch`` queries per batch request, ``max_query_terms`` non-zeros per query (indices/values
    pairs or tokens), ``max_text_chars`` characters of a text query, ``max_body_bytes`` bytes of a
    request body (413 beyond it). ``api_key``: when set, every endpoint except ``/health*``, ``/docs``
    and ``/openapi.json`` needs header ``api_key_header: <key>`` (401 otherwise). ``cors_origins``:
    origins allowed by CORS (empty = no CORS headers). ``threads``: search threads of a batch request
    (None = all cores); a single query runs on one thread (concurrent requests run side by side).
    ``collection``: the name the Qdrant/OpenSearch-style
    routes answer to. ``backend``: where the index searches, "numba" (CPU), "cuda" or "auto" (see
    `aftershock.load_index`).

    Response and time limits: ``max_hits`` queries x k per request (422 beyond), ``max_response_bytes``
    estimated response size (422 before searching, checked again while the body is built),
    ``request_timeout`` seconds from the end of the body to the answer (504 beyond; a search already
    running finishes in the background), ``body_timeout`` seconds to receive the body (408, connection
    closed), ``batch_slots`` multi-threaded batch searches at a time (others wait; single queries never do),
    ``batch_nice`` how much lower the CPU priority of batch requests' threads is (Linux nice, 0 = same).
    Connection limits (applied by `aftershock.service.serve` on uvicorn): ``max_connections`` open
    connections (503 and close beyond), ``header_timeout`` seconds for a connection to send a request's
    headers (408 and close), ``keep_alive_timeout`` idle seconds between requests, ``max_header_bytes``
    request line + headers (400 beyond).
    """

    max_k: int = 1000
    max_batch: int = 256
    max_query_terms: int = 4096
    max_text_chars: int = 20000
    max_body_bytes: int = 4 * 1024 * 1024
    api_key: str | None = None
    api_key_header: str = "X-API-Key"
    cors_origins: tuple[str, ...] = ()
    threads: int | None = None
    collection: str = "default"
    warmup: bool = True
    backend: str = "numba"
    max_hits: int = 100_000
    max_response_bytes: int = 64 * 1024 * 1024
    request_timeout: float = 30.0
    body_timeout: float = 10.0
    batch_slots: int = 1
    batch_nice: int = 10
    max_connections: int = 1000
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 16 * 1024
    hybrid: bool = False  # build a BM25 index of the served documents for "hybrid" requests (service/hybrid.py)

    def __post_init__(self):
        for name in INT_LIMITS:
            v = getattr(self, name)
            check(is_int(v, 1), f"{name}={v!r} must be an integer >= 1")
        check(is_int(self.batch_nice, 0) and self.batch_nice <= 19,
              f"batch_nice={self.batch_nice!r} must be an integer in [0, 19] (0: batches run at normal priority)")
        for name in TIMEOUTS:
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6,
                  f"{name}={v!r} must be a number of seconds > 0")
        check(self.threads is None or is_int(self.threads, 1),
              f"threads={self.threads!r} must be None (all cores) or an integer >= 1")
        check(self.api_key is None or bool(self.api_key),
              "api_key='' is empty; pass a non-empty key or None to disable the check")
        check(bool(self.collection) and "/" not in self.collection,
              f"collection={self.collection!r} must be a non-empty name without '/'")
        resolve_backend(self.backend)  # ConfigError naming the choices
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServiceSettings":
        data = json.loads(text)
        check_known(cls, data)
        return cls(**data)

    def public(self) -> dict:
        """Settings safe to show in /info (no API key)."""
        d = asdict(self)
        d["api_key"] = "set" if self.api_key else None
        return d


__all__ = ["ServiceSettings"]
