"""REST routes over a writable `Collection`, Qdrant- and OpenSearch-shaped:

* ``PUT  /collections/{c}/points``          upsert: ``{"points": [{"id", "vector": {"indices", "values"} | "text",
  "payload": {...}}]}`` — answered after the write-ahead log is durable (the collection's durability mode)
* ``POST /collections/{c}/points/delete``   ``{"points": [ids]}``
* ``POST /collections/{c}/points/query``    ``{"query": {"indices", "values"} | "text", "limit", "filter",
  "with_payload", "params": {"query_cut", "heap_factor", "n_knn"}}``
* ``GET  /collections/{c}``                 counts, segments, durability
* ``POST /_bulk``                           OpenSearch NDJSON ``index`` / ``delete`` actions (``_source`` holds
  ``vector``: ``{"indices", "values"}`` or ``text``, other fields are the payload)

`collection_router(collection, encoder=None, name="default")` returns an APIRouter (errors raise `ApiError`,
which the main app maps to 4xx JSON); `create_collection_app(...)` wraps it in an app of its own.

`aftershock serve --collection DIR` (`aftershock.service.server.serve_collection`) serves the full app of `aftershock.service.app` over a
`CollectionEngine`: these routes plus ``/search``, ``/search/batch``, ``/documents/{id}``, ``/info``, health,
metrics and the OpenSearch ``_search``, each search body taking a Qdrant-shaped ``filter``; hits carry the
external ids. One process writes a collection, so it runs one uvicorn worker.
"""

from __future__ import annotations

import json
import threading
import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from aftershock.collection import check_filter
from aftershock.errors import AftershockError
from aftershock.index import SparseBatch
from aftershock.seismic import SearchParams
from aftershock.service.engine import ApiError, SearchEngine, api_error_from, deadline_exceeded, dumps
from aftershock.service.settings import ServiceSettings

MAX_K = 1000


def _vectors(items: list, collection, encoder, field: str) -> SparseBatch:
    """Request vectors ({"indices", "values"} or {"text"} / a string) -> one SparseBatch."""
    rows, texts, where = [], [], []
    for j, v in enumerate(items):
        if isinstance(v, str) or (isinstance(v, dict) and "text" in v):
            texts.append(v if isinstance(v, str) else v["text"])
            where.append(j)
            rows.append(None)
        elif isinstance(v, dict) and isinstance(v.get("indices"), list) and isinstance(v.get("values"), list):
            rows.append((v["indices"], v["values"]))
        else:
            raise ApiError(422, "invalid_vector", f"{field}[{j}] must be {{'indices': [...], 'values': [...]}} or "
                           "{'text': '...'}", f"{field}[{j}]")
    if texts:
        if encoder is None:
            raise ApiError(422, "no_encoder", "text needs a query encoder; send {'indices', 'values'} vectors or "
                           "start the server with --model", field)
        enc = encoder.encode_queries(texts)
        for j, r in enumerate(where):
            rows[r] = enc.row(j)
    try:
        return SparseBatch.from_rows(rows, dim=collection.dim, what=field)
    except AftershockError as e:
        raise api_error_from(e, field) from None


def _call(fn, prefix: str):
    try:
        return fn()
    except AftershockError as e:
        raise api_error_from(e, prefix) from None


def checked_filter(filt, collection, field: str = "filter"):
    """A request's filter, validated against the collection's schema (422 ``invalid_filter`` naming it)."""
    try:
        check_filter(filt, collection.schema, field)
    except AftershockError as e:
        raise ApiError(422, "invalid_filter", str(e), field) from None
    return filt


def _check_name(c: str, name: str):
    if c != name:
        raise ApiError(404, "unknown_collection", f"collection {c[:80]!r} does not exist; this server serves "
                       f"{name!r}", "collection")


def collection_router(collection, encoder=None, name: str = "default", with_query: bool = True) -> APIRouter:
    """The routes above; ``with_query=False`` leaves out the query route (the main app answers it)."""
    r = APIRouter(tags=["collection"])

    @r.put("/collections/{c}/points", summary="upsert points (acknowledged once durable)")
    def upsert(c: str, body: dict):
        _check_name(c, name)
        points = body.get("points")
        if not isinstance(points, list) or not points:
            raise ApiError(422, "invalid_points", "points must be a non-empty list of {id, vector, payload}",
                           "points")
        ids = [str(p.get("id")) if isinstance(p, dict) and p.get("id") is not None else None for p in points]
        if None in ids:
            raise ApiError(422, "missing_id", f"points[{ids.index(None)}] has no id", f"points[{ids.index(None)}].id")
        vecs = _vectors([p.get("vector", p.get("text")) for p in points], collection, encoder, "points.vector")
        md = [p.get("payload") for p in points] if collection.schema else None
        n = _call(lambda: collection.upsert(vecs, ids=ids, metadata=md), "points")
        return {"result": {"operation_id": collection.generation, "status": "completed", "upserted": n},
                "status": "ok"}

    @r.post("/collections/{c}/points/delete", summary="delete points by id")
    def delete(c: str, body: dict):
        _check_name(c, name)
        ids = body.get("points")
        if not isinstance(ids, list):
            raise ApiError(422, "invalid_points", "points must be a list of ids", "points")
        n = _call(lambda: collection.delete([str(i) for i in ids]), "points")
        return {"result": {"status": "completed", "deleted": n}, "status": "ok"}

    def query(c: str, body: dict):
        _check_name(c, name)
        k = body.get("limit", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ApiError(422, "invalid_parameter", f"limit={k!r} must be an integer in [1, {MAX_K}]", "limit")
        q = _vectors([body.get("query")], collection, encoder, "query")
        p = body.get("params") or {}
        params = _call(lambda: SearchParams(**{x: p[x] for x in ("query_cut", "heap_factor", "n_knn") if x in p}),
                       "params")
        filt = checked_filter(body.get("filter"), collection)
        res = _call(lambda: collection.search(q, k, params, filter=filt), "query")
        hits = [{"id": d, "score": float(s)} for s, d in zip(res.scores[0], res.ids[0]) if d is not None]
        if body.get("with_payload") and hits:
            _, md = collection.get([h["id"] for h in hits])
            for h, m in zip(hits, md):
                h["payload"] = m
        return {"result": {"points": hits}, "status": "ok"}

    if with_query:
        r.post("/collections/{c}/points/query", summary="sparse query with a Qdrant filter")(query)

    @r.get("/collections/{c}", summary="counts, segments and durability of the collection")
    def info(c: str):
        _check_name(c, name)
        i = collection.info()
        return {"result": {"status": "green", "points_count": i["count"], "segments_count": len(i["segments"]),
                           "buffer_docs": i["buffer_docs"], "durability": i["durability"],
                           "segments": i["segments"], "schema": i["schema"]}, "status": "ok"}

    @r.post("/_bulk", summary="OpenSearch bulk: index / delete actions (NDJSON)")
    async def bulk(request: Request):
        lines = [x for x in (await request.body()).decode("utf-8", "replace").split("\n") if x.strip()]
        try:
            objs = [json.loads(x) for x in lines]
        except json.JSONDecodeError as e:
            raise ApiError(400, "invalid_json", f"the bulk body is not NDJSON ({e})", "body") from None
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_bulk, objs, collection, encoder, name)

    return r


def _bulk(objs: list, collection, encoder, name: str) -> dict:
    """Run the actions in order: consecutive index actions with distinct ids go in one upsert call."""
    items, group, j = [], [], 0

    def run_group():
        if group:
            vecs = _vectors([u[1] for u in group], collection, encoder, "_source.vector")
            md = [u[2] for u in group] if collection.schema else None
            _call(lambda: collection.upsert(vecs, ids=[u[0] for u in group], metadata=md), "_source")
            group.clear()

    while j < len(objs):
        action = objs[j]
        if not isinstance(action, dict) or len(action) != 1:
            raise ApiError(400, "invalid_bulk", f"bulk line {j + 1}: expected one index/create/update/delete action",
                           "body")
        op, meta = next(iter(action.items()))
        doc_id = str((meta or {}).get("_id"))
        if op in ("index", "create", "update") and j + 1 < len(objs) and isinstance(objs[j + 1], dict):
            src = dict(objs[j + 1].get("doc", {}) if op == "update" else objs[j + 1])
            vec = src.pop("vector", None) or ({"text": src.pop("text")} if "text" in src else None)
            if any(u[0] == doc_id for u in group):
                run_group()
            group.append((doc_id, vec, src))
            items.append({op: {"_index": name, "_id": doc_id, "status": 201, "result": "created"}})
            j += 2
        elif op == "delete":
            run_group()
            collection.delete([doc_id])
            items.append({"delete": {"_index": name, "_id": doc_id, "status": 200, "result": "deleted"}})
            j += 1
        else:
            raise ApiError(400, "invalid_bulk", f"bulk line {j + 1}: expected an index/create/update/delete action "
                           "followed by its document", "body")
    run_group()
    return {"took": 0, "errors": False, "items": items}


def create_collection_app(collection, encoder=None, name: str = "default") -> FastAPI:
    """A FastAPI app serving only the collection routes (for tests and embedding)."""
    app = FastAPI(title="Aftershock collection", version="1")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
                            status_code=exc.status)

    app.include_router(collection_router(collection, encoder, name))
    return app


class CollectionEngine(SearchEngine):
    """The service engine over a writable `Collection`: the same request checks, limits and hit JSON as over an
    index, but hits carry external ids (a collection's rows move at every flush), ``run`` takes a
    Qdrant-shaped ``filt`` and documents are read from the collection (vector + payload)."""

    filterable = True
    DOC_BYTES = 2048.0  # estimated JSON size of a returned document (a collection changes: not sampled)

    def __init__(self, collection, encoder=None, settings: ServiceSettings | None = None):
        self.collection, self.index, self.encoder = collection, None, encoder
        self.documents, self.meta = {}, {}
        self.settings = settings or ServiceSettings()
        self.dim, self.vocab, self.knn = int(collection.dim), collection.vocab, None
        self.ready = threading.Event()
        self.batch_gate = threading.BoundedSemaphore(self.settings.batch_slots)
        self._doc_bytes, self._id_bytes = self.DOC_BYTES, 24.0
        self.hybrid = None

    @property
    def n_docs(self) -> int:
        return self.collection.count()

    @property
    def index_info(self) -> dict:
        i = self.collection.info()
        return {"kind": "collection", "backend": "numba", "n_docs": i["count"], "index_bytes": i["disk_bytes"],
                "vocab_size": len(self.vocab) if self.vocab is not None else None, "config": i["config"],
                "build_stats": {"segments": len(i["segments"]), "buffer_docs": i["buffer_docs"],
                                "durability": i["durability"], "schema": i["schema"]}}

    def search_batch(self, batch: SparseBatch, k: int, params: SearchParams, deadline: float | None = None,
                     filt=None):
        if len(batch) < 2 or params.threads == 1:
            return self.collection.search(batch, k, params, filter=filt)
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.batch_gate.acquire(timeout=wait):
            raise deadline_exceeded(self.settings.request_timeout)
        try:
            return self.collection.search(batch, k, params, filter=filt)
        finally:
            self.batch_gate.release()

    def run(self, queries, field: str, many: bool, k: int, params: SearchParams, deadline: float | None = None,
            filt=None):
        """Validate/encode ``queries`` and search them with filter ``filt``: (result with external ids,
        encode seconds, search seconds)."""
        checked_filter(filt, self.collection)
        batch, enc_s = self.to_batch(queries, field, many)
        self.check_deadline(deadline)
        t0 = time.perf_counter()
        try:
            res = self.search_batch(batch, k, params, deadline, filt)
        except AftershockError as e:
            raise api_error_from(e) from None
        return res, enc_s, time.perf_counter() - t0

    def _pairs(self, scores, ids):
        for s, d in zip(scores.tolist(), ids.tolist()):
            if d is None:
                break
            yield s, d

    def hits_json(self, scores, ids, with_docs: bool, budget: list, field: str = "k", deadline=None) -> bytes:
        self.check_deadline(deadline)
        parts = []
        for s, d in self._pairs(scores, ids):
            part = {"id": d, "score": s}
            if with_docs:
                part["document"] = self.document(d)
            b = dumps(part)
            budget[0] -= len(b) + 1
            if budget[0] < 0:
                raise self._too_large(f"more than {self.settings.max_response_bytes} bytes", field)
            parts.append(b)
        return b"[" + b",".join(parts) + b"]"

    def hits(self, scores, ids, with_docs: bool) -> list[dict]:
        return [{"id": d, "score": s, **({"document": self.document(d)} if with_docs else {})}
                for s, d in self._pairs(scores, ids)]

    def row(self, doc_id: str) -> str:
        return doc_id  # `document` answers 404 for an id the collection does not hold

    def document_json(self, doc_id: str) -> bytes:
        return dumps(self.document(doc_id))  # no cache: an upsert may replace the document at any time

    def document(self, doc_id: str) -> dict:
        found, md = self.collection.get([doc_id])
        if not len(found):
            shown = doc_id if len(doc_id) <= 80 else doc_id[:80] + "..."
            raise ApiError(404, "unknown_document", f"document id {shown!r} is not in this collection; use an id "
                           "returned by a search (or upsert it first)", "doc_id")
        idx, val = found.row(0)
        ids, vals = idx.tolist(), val.tolist()
        return {"id": doc_id, "vector": {"indices": ids, "values": vals},
                "tokens": dict(zip((self.vocab.tokens[t] for t in ids), vals)) if self.vocab is not None else None,
                "title": None, "text": None, "payload": md[0]}

