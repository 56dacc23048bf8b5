"""The FastAPI application: `create_app(index, encoder=None, settings=..., documents=None)`, or
`create_app(None, ..., collection=c)` over a writable collection (`aftershock.service.collection`).

Native API (``/search``, ``/search/batch``, ``/documents/{id}``, ``/info``, ``/health``, ``/metrics``)
plus two familiar aliases: Qdrant's ``POST /collections/{c}/points/query`` and OpenSearch's
``POST /{index}/_search`` with a ``neural_sparse`` query. Every refused request is a 4xx JSON
`ErrorResponse` naming the field and the fix; searches run off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from aftershock.errors import AftershockError
from aftershock.index import FORMAT_VERSION
from aftershock.service import models as M
from aftershock.service.engine import ApiError, SearchEngine, api_error_from, dumps
from aftershock.service.guard import DEADLINE_KEY, Guard, error_response, route_of
from aftershock.service.metrics import Metrics
from aftershock.service.settings import ServiceSettings

log = logging.getLogger("aftershock.service")
ERRORS = {"4XX": {"model": M.ErrorResponse, "description": "refused request: the message names the field and "
                                                           "the fix"}}

# pydantic error type -> the fix appended to its message
_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove this field (the accepted fields are in /docs)",
    "greater_than_equal": "send a value within the limit",
    "greater_than": "send a value within the limit",
    "less_than_equal": "send a value within the limit",
    "less_than": "send a value within the limit",
    "finite_number": "send a finite number (no NaN or Infinity)",
    "too_short": "send at least one item",
    "string_too_short": "send a non-empty string",
    "json_invalid": "send a valid JSON body with Content-Type: application/json",
    "model_attributes_type": "send a JSON object",
    "dict_type": "send a JSON object",
    "list_type": "send a JSON array",
    "int_type": "send a JSON integer",
    "float_type": "send a JSON number",
    "string_type": "send a JSON string",
    "bool_type": "send true or false",
}
STREAM_BYTES = 1 << 20  # answers above this are streamed part by part
_UNION_TAGS = {"str", "SparseQuery"}  # pydantic names union members in error locations


def _field_of(loc) -> str | None:
    """("query", "values", 3) -> "query.values[3]" (union member tags dropped)."""
    text = ""
    for p in loc:
        if isinstance(p, int):
            text += f"[{p}]" if text else str(p)
        elif p not in _UNION_TAGS and "[" not in str(p):
            text += ("." if text else "") + str(p)
    return text or None


def _short(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_details(exc: RequestValidationError) -> list[dict]:
    errs = list(exc.errors())
    # a union (text string or query object) reports one error per member: keep the object member's
    if len(errs) > 1:
        errs = [e for e in errs if not (e["loc"] and e["loc"][-1] == "str")] or errs
    out = []
    for e in errs:
        loc = tuple(e["loc"])
        if loc and loc[0] == "body":
            loc = loc[1:]
        field = "body" if e["type"] == "json_invalid" else (_field_of(loc) or "body")
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        got = f" (got {_short(e['input'])})" if "input" in e and e["type"] not in ("missing", "json_invalid") else ""
        fix = _FIXES.get(e["type"])
        if isinstance(e.get("input"), (bytes, bytearray)):  # a body that was not parsed as JSON
            fix = "send the body as JSON with Content-Type: application/json"
        if e["type"] == "json_invalid":
            msg = f"{msg} at character {loc[0] if loc else 0}: {e.get('ctx', {}).get('error', '')}"
        out.append({"field": field, "message": f"{field}: {msg}{got}" + (f"; {fix}" if fix else "")})
    return out


_error = error_response
_route_of = route_of


def _lower_priority(nice: int) -> None:
    """Raise this thread's nice value by ``nice`` (Linux: per thread; threads it starts, e.g. the search
    kernels' OpenMP team, inherit it). Elsewhere, or without permission, nothing happens."""
    if nice:
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except (AttributeError, OSError):
            pass


def _member(prop: dict, typ: str) -> dict:
    """The member of type ``typ`` of an optional/union property schema (or the schema itself)."""
    return next((m for m in prop.get("anyOf", [prop]) if m.get("type") == typ), {})


def _tighten_openapi(schema: dict, settings: ServiceSettings, dim: int) -> dict:
    """Write this server's limits (dim, max_k, max_batch, ...) into the OpenAPI schema, so clients and fuzzers
    see the real bounds."""
    s = schema["components"]["schemas"]
    sq = s["SparseQuery"]["properties"]
    _member(sq["indices"], "array").update(maxItems=settings.max_query_terms)
    _member(sq["indices"], "array")["items"]["maximum"] = dim - 1
    _member(sq["values"], "array").update(maxItems=settings.max_query_terms)
    _member(sq["tokens"], "object").update(maxProperties=settings.max_query_terms)
    _member(sq["text"], "string").update(maxLength=settings.max_text_chars)
    for name, field in (("SearchRequest", "k"), ("BatchSearchRequest", "k"), ("QdrantQueryRequest", "limit"),
                        ("OpenSearchRequest", "size")):
        s[name]["properties"][field]["maximum"] = settings.max_k
    _member(s["SearchRequest"]["properties"]["query"], "string").update(maxLength=settings.max_text_chars)
    queries = s["BatchSearchRequest"]["properties"]["queries"]
    queries["maxItems"] = settings.max_batch
    _member(queries["items"], "string").update(maxLength=settings.max_text_chars)
    s["NeuralSparseQuery"]["properties"]["neural_sparse"].update(minProperties=1, maxProperties=1)
    clause = s["NeuralSparseClause"]["properties"]
    _member(clause["query_text"], "string").update(maxLength=settings.max_text_chars)
    _member(clause["query_tokens"], "object").update(maxProperties=settings.max_query_terms)
    return schema


def create_app(index, encoder=None, settings: ServiceSettings | None = None, documents: dict | None = None,
               meta: dict | None = None, collection=None) -> FastAPI:
    """Build the app around a loaded index (`ExactIndex` or `SeismicIndex`), or around a writable ``collection``
    (``index`` None): then every search body takes a ``filter``, hits carry external ids, and the collection's
    write routes (`aftershock.service.collection.collection_router`) replace the read-only Qdrant alias.

    ``encoder``: any object with ``encode_queries(list[str]) -> SparseBatch`` (text queries need one);
    ``documents``: ``{doc_id: {"title", "text"}}`` for ``return_documents`` (see `aftershock.index.read_documents`);
    ``meta``: the index directory's meta.json (for /info's format version).
    """
    settings = settings or ServiceSettings()
    metrics = Metrics()
    if collection is not None:
        from aftershock.service.collection import CollectionEngine

        engine = CollectionEngine(collection, encoder, settings)
    else:
        engine = SearchEngine(index, encoder, documents, settings, meta or {"format_version": FORMAT_VERSION})
    warm_error: list[str] = []

    def _warm():
        try:
            engine.warmup()
            metrics.ready.set(1)
        except Exception as e:  # noqa: BLE001 - reported by /health
            log.exception("warm-up failed")
            warm_error.append(f"{type(e).__name__}: {e}")

    batch_pool = ThreadPoolExecutor(max_workers=2 * settings.batch_slots + 2, thread_name_prefix="aftershock-batch",
                                    initializer=_lower_priority, initargs=(settings.batch_nice,))

    @asynccontextmanager
    async def lifespan(app):
        if settings.warmup:
            threading.Thread(target=_warm, name="aftershock-warmup", daemon=True).start()
        else:
            engine.ready.set()
            metrics.ready.set(1)
        yield
        batch_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Aftershock search", version="1", lifespan=lifespan,
                  description="Learned-sparse retrieval over an Aftershock index. Queries are text (encoded by the "
                              "server's model), {token: weight} maps or {indices, values} sparse vectors. Errors are "
                              "4xx JSON naming the field and the fix. Qdrant- and OpenSearch-style aliases included.")
    app.state.engine, app.state.metrics, app.state.settings = engine, metrics, settings
    base_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _tighten_openapi(base_openapi(), settings, engine.dim)
        return app.openapi_schema

    app.openapi = openapi

    # ------------------------------------------------------------------ errors
    def _count(request: Request, code: str):
        metrics.errors.labels(_route_of(request.scope), code).inc()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        _count(request, exc.code)
        return _error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(AftershockError)
    async def _aftershock_error(request: Request, exc: AftershockError):
        e = api_error_from(exc)
        _count(request, e.code)
        return _error(e.status, e.code, e.message, e.field)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        details = _validation_details(exc)
        _count(request, "validation_error")
        first = details[0] if details else {"field": None, "message": "invalid request"}
        more = f" (and {len(details) - 1} more problem(s), see details)" if len(details) > 1 else ""
        return _error(422, "validation_error", first["message"] + more, first["field"], details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "body_too_large"}.get(
            exc.status_code, "http_error")
        _count(request, code)
        msg = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no route {request.method} {request.url.path}; the endpoints are listed at /docs"
        elif exc.status_code == 400 and msg == "There was an error parsing the body":
            msg = "the request body could not be parsed; send UTF-8 JSON with Content-Type: application/json"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}; the methods per endpoint are at /docs"
        return _error(exc.status_code, code, msg, "body" if exc.status_code == 413 else None,
                      headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # a bug: log it, answer JSON
        log.exception("unhandled error on %s", request.url.path)
        _count(request, "internal_error")
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")

    # ------------------------------------------------------------------ security, CORS, metrics middleware
    deps = []
    if settings.api_key:
        header = APIKeyHeader(name=settings.api_key_header, auto_error=False)

        async def check_key(key: str | None = Depends(header)):
            if key is None or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
                raise HTTPException(401, detail=f"missing or wrong API key; send header "
                                                f"'{settings.api_key_header}: <key>'")

        deps = [Depends(check_key)]
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    app.add_middleware(Guard, metrics=metrics, settings=settings)

    # ------------------------------------------------------------------ helpers
    async def offload(request: Request, fn, *args, batch: bool = False):
        """Run ``fn(*args, deadline)`` in a worker thread: validation, encoding, search and the response body
        all happen off the event loop. Batch requests run in their own pool of lower-priority threads
        (``batch_nice``), so they cannot take the cores from single queries. At the request deadline the Guard
        middleware answers 504 at once (the thread is abandoned: it notices the deadline at its next check
        and stops; a batch still queued never starts)."""
        call = functools.partial(fn, *args, request.scope.get(DEADLINE_KEY))
        if batch:
            return await asyncio.get_running_loop().run_in_executor(batch_pool, call)
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)

    def count_forms(queries) -> None:
        for q in queries:
            form = "text" if isinstance(q, str) or q.text is not None else ("tokens" if q.tokens is not None
                                                                            else "vector")
            metrics.queries.labels(form).inc()

    def searched(queries, field, many, k, params, endpoint, deadline, filt=None, hybrid=None):
        """(result, encode s, search s) of ``queries`` (in a worker thread), metrics observed."""
        if filt is not None and not getattr(engine, "filterable", False):
            raise ApiError(422, "no_metadata", "filter needs a collection (aftershock serve --collection DIR); an "
                           "index stores no metadata: drop the filter", "filter")
        if hybrid is not None and getattr(engine, "filterable", False):
            raise ApiError(422, "no_hybrid", "hybrid search needs an index served with --hybrid --documents; a "
                           "collection has none: drop \"hybrid\"", "hybrid")
        if hybrid is not None and filt is not None:
            raise ApiError(422, "hybrid_with_filter", "hybrid search takes no filter (the BM25 side has no metadata): "
                           "drop one of the two", "hybrid")
        extra = {"filt": filt} if filt is not None else {}
        if hybrid is not None:
            extra["hybrid"] = hybrid
        res, enc_s, search_s = engine.run(queries, field, many, k, params, deadline, **extra)
        if enc_s:
            metrics.encode.observe(enc_s)
        metrics.search.labels(endpoint).observe(search_s)
        count_forms(queries)
        return res, enc_s, search_s

    def search_one(query, k, query_cut, heap_factor, n_knn, with_docs, endpoint, deadline, field="query", filt=None):
        """Dict hits of one query (the aliases reshape them); runs in a worker thread."""
        kfield = "limit" if endpoint == "qdrant" else ("size" if endpoint == "opensearch" else "k")
        engine.check_k(k, kfield)
        engine.check_response(1, k, with_docs, kfield)
        params = engine.params(query_cut, heap_factor, n_knn)
        res, enc_s, search_s = searched([query], field, False, k, params, endpoint, deadline, filt)
        return engine.hits(res.scores[0], res.ids[0], with_docs), enc_s, search_s

    def timing(t0, enc_s, search_s) -> bytes:
        return dumps({"encode_ms": enc_s * 1e3, "search_ms": search_s * 1e3,
                      "total_ms": (time.perf_counter() - t0) * 1e3})

    def json_bytes(body) -> Response:
        """A JSON body built in a worker thread: bytes, or a list of byte parts (a large answer is streamed
        part by part, so it is never copied into one buffer)."""
        if isinstance(body, bytes):
            return Response(body, media_type="application/json")
        if sum(map(len, body)) < STREAM_BYTES:
            return Response(b"".join(body), media_type="application/json")

        async def parts():
            for part in body:
                yield part

        return StreamingResponse(parts(), media_type="application/json")

    # ------------------------------------------------------------------ health, metrics, info
    def health_body() -> dict:
        ready = engine.ready.is_set()
        return {"status": "ok" if ready else "starting", "live": True, "ready": ready,
                "checks": {"index_loaded": True, "kernels_warm": ready, "encoder": engine.encoder is not None,
                           "warmup_failed": bool(warm_error)}}

    @app.get("/health", response_model=M.HealthResponse, tags=["ops"],
             summary="liveness and readiness in one (always 200 while the process serves)")
    async def health():
        return health_body()

    @app.get("/health/live", response_model=M.HealthResponse, tags=["ops"], summary="liveness probe")
    async def live():
        return health_body()

    @app.get("/health/ready", response_model=M.HealthResponse, tags=["ops"],
             responses={503: {"model": M.HealthResponse, "description": "still warming up (or warm-up failed)"}},
             summary="readiness probe: 200 once the index is loaded and the kernels are compiled, else 503")
    async def ready():
        body = health_body()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def health_head():
        return Response(status_code=200, media_type="application/json")

    async def ready_head():
        return Response(status_code=200 if engine.ready.is_set() else 503, media_type="application/json")

    for path, fn in (("/health", health_head), ("/health/live", health_head), ("/health/ready", ready_head)):
        app.add_api_route(path, fn, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", tags=["ops"], dependencies=deps, responses={**ERRORS, 200: {
        "content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text exposition"}},
        response_class=Response, summary="Prometheus metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/info", response_model=M.InfoResponse, tags=["index"], dependencies=deps, responses=ERRORS,
             summary="index size, build parameters, vocabulary, format version, limits")
    async def info():
        return engine.info()

    # ------------------------------------------------------------------ native search
    @app.post("/search", response_model=M.SearchResponse, tags=["search"], dependencies=deps, responses=ERRORS,
              summary="search with one query: text, {token: weight} or {indices, values}")
    async def search(req: M.SearchRequest, request: Request):
        t0 = time.perf_counter()

        def work(deadline) -> bytes:
            k = engine.check_k(req.k)
            budget = [engine.check_response(1, k, req.return_documents)]
            params = engine.params(req.query_cut, req.heap_factor, req.n_knn)
            res, enc_s, search_s = searched([req.query], "query", False, k, params, "search", deadline, req.filter,
                                             req.hybrid)
            hits = engine.hits_json(res.scores[0], res.ids[0], req.return_documents, budget, "k", deadline)
            return b'{"hits":' + hits + b',"timing":' + timing(t0, enc_s, search_s) + b"}"

        return json_bytes(await offload(request, work))

    @app.post("/search/batch", response_model=M.BatchSearchResponse, tags=["search"], dependencies=deps,
              responses=ERRORS, summary="search many queries in one request (results in request order)")
    async def search_batch(req: M.BatchSearchRequest, request: Request):
        t0 = time.perf_counter()

        def work(deadline) -> list:
            k = engine.check_k(req.k)
            engine.check_batch(len(req.queries), "queries")
            budget = [engine.check_response(len(req.queries), k, req.return_documents)]
            params = engine.params(req.query_cut, req.heap_factor, req.n_knn)
            res, enc_s, search_s = searched(req.queries, "queries", True, k, params, "batch", deadline, req.filter,
                                             req.hybrid)
            parts = [b'{"results":[']
            for i in range(len(req.queries)):
                parts.append((b'{"hits":' if i == 0 else b',{"hits":')
                             + engine.hits_json(res.scores[i], res.ids[i], req.return_documents, budget, "k",
                                                deadline) + b"}")
            parts.append(b'],"timing":' + timing(t0, enc_s, search_s) + b"}")
            return parts

        return json_bytes(await offload(request, work, batch=len(req.queries) > 1))

    @app.get("/documents/{doc_id:path}", response_model=M.Document, tags=["index"], dependencies=deps,
             responses=ERRORS, summary="a document's stored sparse vector (and text, with --documents)")
    async def document(doc_id: str):
        return json_bytes(dumps(engine.document(engine.row(doc_id))))

    # ------------------------------------------------------------------ Qdrant-style alias
    if collection is not None:  # the collection's write routes (its query is this app's, below, with filter)
        from aftershock.service.collection import collection_router

        app.include_router(collection_router(collection, encoder, settings.collection, with_query=False),
                           dependencies=deps)

    @app.post("/collections/{collection}/points/query", response_model=M.QdrantQueryResponse, tags=["compat"],
              dependencies=deps, responses=ERRORS, summary="Qdrant-style sparse query (query.indices/values, limit)")
    async def qdrant_query(collection: str, req: M.QdrantQueryRequest, request: Request):
        t0 = time.perf_counter()
        if collection != settings.collection:
            raise ApiError(404, "unknown_collection", f"collection {collection[:80]!r} does not exist; this server "
                           f"serves {settings.collection!r}", "collection")
        p = req.params or M.QdrantParams()

        def work(deadline) -> bytes:
            hits, _, _ = search_one(req.query, req.limit, p.query_cut, p.heap_factor, p.n_knn,
                                    req.with_payload or req.with_vector, "qdrant", deadline, filt=req.filter)
            points = []
            for h in hits:
                doc = h.pop("document", None)
                if req.with_payload:  # a collection's metadata, else the document's title/text
                    h["payload"] = doc["payload"] if "payload" in doc else {
                        k: doc[k] for k in ("title", "text") if doc[k] is not None}
                if req.with_vector:
                    h["vector"] = doc["vector"]
                points.append(h)
            return dumps({"result": {"points": points}, "status": "ok", "time": time.perf_counter() - t0})

        return json_bytes(await offload(request, work))

    # ------------------------------------------------------------------ OpenSearch-style alias
    @app.post("/{index_name}/_search", response_model=M.OpenSearchResponse, tags=["compat"], dependencies=deps,
              responses=ERRORS, response_model_by_alias=True,
              summary="OpenSearch-style neural_sparse query (query_text or query_tokens, size)")
    async def opensearch(index_name: str, req: M.OpenSearchRequest, request: Request):
        t0 = time.perf_counter()
        if index_name != settings.collection:
            raise ApiError(404, "unknown_index", f"index {index_name[:80]!r} does not exist; this server serves "
                           f"{settings.collection!r}", "index_name")
        (name, clause), = req.query.neural_sparse.items()
        query = M.SparseQuery.model_construct(text=clause.query_text, tokens=clause.query_tokens, indices=None,
                                              values=None)
        prefix = f"query.neural_sparse.{name}"

        def work(deadline) -> bytes:
            try:
                hits, _, _ = search_one(query, req.size, None, None, None, req.source, "opensearch", deadline,
                                        prefix, req.filter)
            except ApiError as e:  # name the OpenSearch fields, not the native ones
                for ours, theirs in ((".tokens", ".query_tokens"), (".text", ".query_text")):
                    e.field = e.field and e.field.replace(prefix + ours, prefix + theirs)
                    e.message = e.message.replace(prefix + ours, prefix + theirs)
                raise
            out = []
            for h in hits:
                item = {"_index": settings.collection, "_id": h["id"], "_score": h["score"]}
                if req.source:
                    doc = h["document"]
                    item["_source"] = {k: doc[k] for k in ("title", "text") if doc[k] is not None}
                    item["_source"].update(doc.get("payload") or {})
                out.append(item)
            return dumps({"took": int((time.perf_counter() - t0) * 1e3), "timed_out": False,
                          "hits": {"total": {"value": len(out), "relation": "eq"},
                                   "max_score": out[0]["_score"] if out else None, "hits": out}})

        return json_bytes(await offload(request, work))

    from aftershock.service.static import search_page  # the search page at / (owned by aftershock/service/static)

    app.add_api_route("/", search_page, include_in_schema=False)
    return app
