"""The cluster's REST API: the routes of one machine over a `ShardedCollection` (which has the `Collection`
interface), so a client cannot tell one machine from a cluster except by two request options.

* the collection routes of `aftershock.service.collection` (upsert, delete, info, OpenSearch ``_bulk``), as
  they are;
* ``POST /collections/{c}/points/query`` (Qdrant-shaped, filters), ``POST /search`` and ``POST /search/batch``
  (the native shapes: ``query`` / ``queries`` as ``{"indices", "values"}`` or ``{"text"}``, ``k``,
  ``query_cut``, ``heap_factor``, ``n_knn``, ``filter``), each with ``"partial"`` (default false) and
  ``"deadline"`` (seconds): while a shard is down, a search waits up to the deadline and then answers 503
  (``shard_unavailable``, naming the shards), or with ``partial: true`` answers from the other shards with
  ``"partial": true, "missing_shards": [...]``; never a silently short list;
* ``GET /health`` (each shard pinged; ``degraded`` and 503 while one is down), ``GET /metrics`` (Prometheus),
  ``GET /info``.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from aftershock.cluster.sharded import ShardUnavailableError
from aftershock.errors import AftershockError
from aftershock.service.collection import MAX_K, _vectors, collection_router
from aftershock.service.engine import ApiError, api_error_from

KNOBS = ("query_cut", "heap_factor", "n_knn")
MAX_BATCH = 1000


class _Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.searches = Counter("aftershock_cluster_searches", "search requests by endpoint and outcome (ok, partial, "
                                "unavailable)", ["endpoint", "outcome"], registry=r)
        self.queries = Counter("aftershock_cluster_queries", "queries searched", registry=r)
        self.latency = Histogram("aftershock_cluster_search_seconds", "scatter + gather + merge time per request",
                                 ["endpoint"], registry=r)
        self.overhead = Histogram("aftershock_cluster_gather_overhead_seconds", "request time outside the slowest "
                                  "shard's own search (transport, merge)", registry=r)


def _options(body: dict) -> tuple[bool, float | None]:
    partial = body.get("partial", False)
    if not isinstance(partial, bool):
        raise ApiError(422, "invalid_parameter", f"partial={partial!r} must be true or false", "partial")
    deadline = body.get("deadline")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not 0 < deadline <= 3600):
        raise ApiError(422, "invalid_parameter", f"deadline={deadline!r} must be a number of seconds in (0, 3600]",
                       "deadline")
    return partial, deadline


def _k(body: dict, field: str, default: int = 10) -> int:
    k = body.get(field, default)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ApiError(422, "invalid_parameter", f"{field}={k!r} must be an integer in [1, {MAX_K}]", field)
    return k


def create_cluster_app(cluster, encoder=None, name: str = "default") -> FastAPI:
    """A FastAPI app serving ``cluster`` (a `ShardedCollection`, or anything with its interface)."""
    app = FastAPI(title="Aftershock cluster", version="1")
    metrics = _Metrics()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
                            status_code=exc.status)

    @app.exception_handler(ShardUnavailableError)
    async def _unavailable(request: Request, exc: ShardUnavailableError):
        return JSONResponse({"error": {"code": "shard_unavailable", "message": str(exc), "field": "shards",
                                       "shards": exc.shards}}, status_code=503, headers={"Retry-After": "1"})

    def run(endpoint: str, queries, body: dict):
        partial, deadline = _options(body)
        k = _k(body, "limit" if endpoint == "qdrant" else "k")
        knobs = (body.get("params") or {}) if endpoint == "qdrant" else body
        overrides = {x: knobs[x] for x in KNOBS if knobs.get(x) is not None}
        t0 = time.perf_counter()
        try:
            res = cluster.search(queries, k, None, filter=body.get("filter"), partial=partial, deadline=deadline,
                                 **overrides)
        except ShardUnavailableError:
            metrics.searches.labels(endpoint, "unavailable").inc()
            raise
        except AftershockError as e:
            raise api_error_from(e, "filter" if body.get("filter") else "query") from None
        dt = time.perf_counter() - t0
        stats = getattr(cluster, "last_stats", {})
        metrics.searches.labels(endpoint, "partial" if res.partial else "ok").inc()
        metrics.queries.inc(len(queries))
        metrics.latency.labels(endpoint).observe(dt)
        metrics.overhead.observe(max(stats.get("total_s", dt) - stats.get("shard_search_s", 0.0), 0.0))
        hits = [[{"id": d, "score": float(s)} for s, d in zip(srow, irow) if d is not None]
                for srow, irow in zip(res.scores, res.ids)]
        return hits, {"partial": res.partial, "missing_shards": list(res.missing_shards)}, dt

    @app.post("/collections/{c}/points/query", summary="sparse query with a Qdrant filter, over every shard")
    def query(c: str, body: dict):
        if c != name:
            raise ApiError(404, "unknown_collection", f"collection {c[:80]!r} does not exist; this server serves "
                           f"{name!r}", "collection")
        q = _vectors([body.get("query")], cluster, encoder, "query")
        hits, mark, _ = run("qdrant", q, body)
        hits = hits[0]
        if body.get("with_payload") and hits:
            _, md = cluster.get([h["id"] for h in hits])
            for h, m in zip(hits, md):
                h["payload"] = m
        return {"result": {"points": hits, **mark}, "status": "ok"}

    @app.post("/search", summary="one query over every shard (native shape)")
    def search(body: dict):
        q = _vectors([body.get("query")], cluster, encoder, "query")
        hits, mark, dt = run("search", q, body)
        return {"hits": hits[0], **mark, "timing": {"total_ms": dt * 1e3}}

    @app.post("/search/batch", summary="many queries over every shard (native shape)")
    def search_batch(body: dict):
        items = body.get("queries")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise ApiError(422, "invalid_parameter", f"queries must be a list of 1 to {MAX_BATCH} queries", "queries")
        q = _vectors(items, cluster, encoder, "queries")
        hits, mark, dt = run("batch", q, body)
        return {"results": [{"hits": h} for h in hits], **mark, "timing": {"total_ms": dt * 1e3}}

    @app.get("/health", summary="every shard pinged: ok, or degraded (503) naming the shards that are down")
    def health():
        try:
            res = cluster.ping(deadline=2.0)
        except ShardUnavailableError as e:
            return JSONResponse({"status": "degraded", "shards": cluster.n_shards, "down": e.shards},
                                status_code=503)
        return {"status": "ok", "shards": cluster.n_shards, "down": [], "docs": res}

    @app.get("/metrics", summary="Prometheus metrics of this ingress")
    def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info", summary="the cluster: shards, counts, segments")
    def info():
        return cluster.info()

    app.include_router(collection_router(cluster, encoder, name))
    return app
