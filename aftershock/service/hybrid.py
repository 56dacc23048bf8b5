"""Hybrid search in the service: ``"hybrid": {"method", "weight", "depth", "rrf_k"}`` in a ``/search`` or
``/search/batch`` body fuses the served (learned) index with a BM25 index of the same documents.

The BM25 side is built once at startup (``ServiceSettings.hybrid``, ``aftershock serve --hybrid``) from the
served document texts (``--documents``), in the index's row order, so both sides share row numbers. Per
request the lexical side (BM25 encoding and exact search) runs on a worker thread while the request's own
thread validates, encodes and searches the learned side (the search kernels release the GIL); the two
top-``depth`` lists are fused by `aftershock.index.fusion.fuse`. Hybrid queries must be text.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from aftershock.errors import AftershockError, ConfigError
from aftershock.index import SearchResult, doc_text
from aftershock.index.fusion import FusionParams, fuse

log = logging.getLogger("aftershock.service")


class LexicalSide:
    """BM25 over the served documents' texts, row-aligned with the served index."""

    def __init__(self, doc_ids: list[str], documents: dict | None, threads: int | None = None):
        from aftershock.lsr import BM25
        from aftershock.seismic import ExactIndex

        if not documents:
            raise ConfigError("hybrid search builds a BM25 index from the served documents' texts: start the "
                              "server with --documents FILE (the corpus the index was built from)", field="hybrid")
        texts = [doc_text(documents.get(d) or {}) for d in doc_ids]
        missing = sum(1 for t in texts if not t.strip())
        if missing == len(texts):
            raise ConfigError(f"none of the index's {len(texts)} document ids has a text in --documents; pass the "
                              "corpus the index was built from", field="hybrid")
        if missing:
            log.warning("hybrid: %d of %d indexed documents have no text in --documents; BM25 never finds them",
                        missing, len(texts))
        t0 = time.perf_counter()
        self.encoder = BM25().fit(texts)
        self.index = ExactIndex.build(self.encoder.encode_documents(texts, ids=doc_ids))
        self.build_s = time.perf_counter() - t0
        self.missing = missing
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aftershock-lexical")
        self.search(["warm up"], 1, None)

    def search(self, texts: list[str], depth: int, params) -> tuple[SearchResult, float]:
        t0 = time.perf_counter()
        queries = self.encoder.encode_queries(texts)
        return self.index.search(queries, min(depth, self.index.n_docs), params), time.perf_counter() - t0

    def info(self) -> dict:
        return {"lexical": "bm25", "n_docs": int(self.index.n_docs), "vocab_size": len(self.encoder.vocab),
                "documents_without_text": self.missing, "build_s": round(self.build_s, 3),
                "defaults": FusionParams().to_dict()}


def _texts(queries, field: str, many: bool, api_error) -> list[str]:
    out = []
    for i, q in enumerate(queries):
        text = q if isinstance(q, str) else q.text
        if text is None:
            name = f"{field}[{i}]" if many else field
            raise api_error(422, "hybrid_needs_text", f"{name}: hybrid search fuses BM25 with the learned index and "
                             "BM25 needs the query's words; send a text query (or drop 'hybrid')", name)
        out.append(text)
    return out


def fusion_params(opts, max_k: int, api_error) -> FusionParams:
    """The request's ``hybrid`` object -> `FusionParams` (None fields keep the defaults); 422 on a bad value."""
    try:
        fp = FusionParams().with_(method=opts.method, weight=opts.weight, depth=opts.depth, rrf_k=opts.rrf_k)
    except ConfigError as e:
        raise api_error(422, "invalid_parameter", str(e), "hybrid") from None
    if fp.depth > max_k:
        raise api_error(422, "limit_exceeded", f"hybrid.depth={fp.depth} exceeds this server's max_k={max_k}; "
                         f"fuse at most {max_k} hits per side", "hybrid.depth")
    return fp


def run_hybrid(engine, queries, field: str, many: bool, k: int, params, opts, deadline, api_error
               ) -> tuple[SearchResult, float, float]:
    """Fused top ``k`` of text ``queries``: (result in the served index's rows, encode s, search s); the search
    seconds cover both sides (run side by side), the lexical encoding and the fusion. ``api_error``: the
    engine's `ApiError` class (passed in: this module does not import the engine)."""
    side = engine.hybrid
    if side is None:
        raise api_error(422, "no_hybrid", "this server has no lexical (BM25) index for hybrid search; start it with "
                         "--hybrid --documents FILE, or drop 'hybrid' from the request", "hybrid")
    fp = fusion_params(opts, engine.settings.max_k, api_error)
    texts = _texts(queries, field, many, api_error)
    depth = max(fp.depth, k)
    t0 = time.perf_counter()
    lexical = side.pool.submit(side.search, texts, depth, params)
    try:
        learned, enc_s, _ = engine.run(queries, field, many, depth, params, deadline)
    finally:
        lex, _ = lexical.result()
    try:
        fused = fuse([lex, learned], fp.method, fp.weights(2), k, fp.rrf_k)
    except AftershockError as e:
        raise api_error(422, "invalid_parameter", str(e), "hybrid") from None
    return fused, enc_s, time.perf_counter() - t0 - enc_s
