"""The service's search engine, free of HTTP: request queries -> validated `SparseBatch` -> index search
-> hits. Every bad value raises `ApiError` naming the request field (``query.indices[3]``) and the fix.

The engine uses only the index contract: ``search(queries, k, params)``, ``document(row)``, ``info()``,
``vocab``, ``doc_ids``, ``dim`` — so it serves any index (exact, Seismic, on the CPU or a GPU) alike.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

from aftershock.errors import (
    AftershockError,
    ConfigError,
    DuplicateTermError,
    InvalidVectorError,
    NegativeWeightError,
    NonFiniteValueError,
    RaggedArrayError,
    TermIdOutOfRangeError,
    UnknownTokenError,
)
from aftershock.index import SearchResult, SparseBatch
from aftershock.seismic import SearchParams
from aftershock.service.models import SparseQuery
from aftershock.service.settings import ServiceSettings

class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, short ``code``, the ``field`` at fault, a message with the fix."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


_ID_JSON = json.JSONEncoder(ensure_ascii=False).encode
HIT_BYTES = 40  # {"id":"","score":0.12345678901234567}, without the id's own characters
DOC_CACHE_BYTES = 128 * 1024 * 1024  # JSON of recently returned documents, reused by return_documents


def dumps(obj) -> bytes:
    """JSON bytes as Starlette's JSONResponse writes them; a stray lone surrogate becomes '?', never an error."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8", "replace")


def deadline_exceeded(timeout: float) -> ApiError:
    return ApiError(504, "deadline_exceeded", f"no answer within this server's request_timeout={timeout:g}s; send "
                    "fewer queries or a smaller k per request (or start the server with a larger --request-timeout)")


class _DocCache:
    """Document JSON bytes by row, least recently used dropped beyond ``budget`` bytes (thread-safe)."""

    def __init__(self, budget: int):
        self.budget, self.size, self.items, self.lock = budget, 0, OrderedDict(), threading.Lock()

    def get(self, row: int):
        with self.lock:
            b = self.items.get(row)
            if b is not None:
                self.items.move_to_end(row)
            return b

    def put(self, row: int, b: bytes) -> None:
        with self.lock:
            if row in self.items or len(b) > self.budget // 8:
                return
            self.items[row] = b
            self.size += len(b)
            while self.size > self.budget:
                self.size -= len(self.items.popitem(last=False)[1])


_ERROR_FIELD = [  # aftershock error class -> (code, field suffix) for errors raised below the service
    (UnknownTokenError, "unknown_token", "tokens"),
    (TermIdOutOfRangeError, "term_id_out_of_range", "indices"),
    (DuplicateTermError, "duplicate_term", "indices"),
    (NonFiniteValueError, "non_finite_weight", "values"),
    (NegativeWeightError, "negative_weight", "values"),
    (RaggedArrayError, "ragged_vector", "values"),
    (InvalidVectorError, "invalid_vector", None),
]


def api_error_from(exc: AftershockError, prefix: str = "query") -> ApiError:
    """Map an `aftershock.errors` exception to a 4xx (the message already names value, limit and fix)."""
    field = getattr(exc, "field", None)  # set by the raiser (AftershockError(msg, field=...)), never parsed
    if isinstance(exc, ConfigError):
        return ApiError(422, "invalid_parameter", str(exc), field)
    for cls, code, suffix in _ERROR_FIELD:
        if isinstance(exc, cls):
            suffix = field or suffix
            return ApiError(422, code, str(exc), f"{prefix}.{suffix}" if suffix else prefix)
    return ApiError(400, type(exc).__name__, str(exc), field)


def _hit_pairs(scores: np.ndarray, rows: np.ndarray):
    """(score, row) of one query's hits, padding dropped; an overflowed (non-finite) score is a 422."""
    for s, r in zip(scores.tolist(), rows.tolist()):
        if r < 0:
            break
        if not math.isfinite(s):
            raise ApiError(422, "score_overflow", f"a score overflowed float32 ({s}); the query weights times the "
                           "document weights are too large: scale the query weights down", "query")
        yield s, r


class SearchEngine:
    """An index, an optional query encoder and optional document texts, behind request-level checks."""

    def __init__(self, index, encoder=None, documents: dict[str, dict] | None = None,
                 settings: ServiceSettings | None = None, meta: dict | None = None):
        self.index = index
        self.encoder = encoder
        self.documents = documents or {}
        self.settings = settings or ServiceSettings()
        self.meta = meta or {}
        self.dim = int(index.dim)
        self.vocab = index.vocab
        self.doc_ids = [str(d) for d in index.doc_ids]
        self.row_of = {d: i for i, d in enumerate(self.doc_ids)}
        self.index_info = index.info()  # fixed for a loaded index
        self.ready = threading.Event()
        self.n_docs = len(self.doc_ids)
        self.knn = self.index_info.get("knn")  # None: the index kind has no k-NN graph option
        # multi-threaded batch searches at a time; single queries (one thread each) never wait here
        self.batch_gate = threading.BoundedSemaphore(self.settings.batch_slots)
        self._doc_cache = _DocCache(DOC_CACHE_BYTES)
        self._doc_bytes: float | None = None  # mean document JSON size (sampled on first use)
        sample = self.doc_ids[:: max(1, self.n_docs // 1000)]
        self._id_bytes = (sum(len(d.encode("utf-8", "replace")) for d in sample) / max(1, len(sample))) + 2
        self.hybrid = None  # the BM25 side of hybrid search (aftershock.service.hybrid), with settings.hybrid
        if self.settings.hybrid:
            from aftershock.service.hybrid import LexicalSide

            self.hybrid = LexicalSide(self.doc_ids, self.documents, self.settings.threads)

    # ------------------------------------------------------------------ lifecycle
    def warmup(self) -> None:
        """Compile the search kernels (and run the encoder once) before reporting ready."""
        one = SparseBatch.from_rows([([0], [1.0])], dim=self.dim, what="queries")
        for n in (1, 2):  # single-query and batch kernels
            self.search_batch(SparseBatch.concat([one] * n), 1, self.params(None, None, None))
        self._mean_doc_bytes()
        if self.encoder is not None:
            self.encode(["warm up"], "query")
        self.ready.set()

    # ------------------------------------------------------------------ parameters
    def params(self, query_cut, heap_factor, n_knn) -> SearchParams:
        """Request knobs (None = the default) over the server's thread setting; the index refuses what it
        cannot do (e.g. n_knn without a k-NN graph) when it searches."""
        if n_knn and self.knn is not None and int(self.knn) == 0:
            raise ApiError(422, "invalid_parameter", f"n_knn={n_knn} but this index has no k-NN graph; search with "
                           "n_knn=0 (or rebuild the index with --knn 10)", "n_knn")
        try:
            return SearchParams(threads=self.settings.threads).with_(query_cut=query_cut, heap_factor=heap_factor,
                                                                      n_knn=n_knn)
        except ConfigError as e:
            raise api_error_from(e) from None

    # ------------------------------------------------------------------ response limits
    def _mean_doc_bytes(self) -> float:
        """Mean JSON size of a stored document (with its text), from 32 documents spread over the index."""
        if self._doc_bytes is None:
            rows = range(0, self.n_docs, max(1, self.n_docs // 32))
            self._doc_bytes = sum(len(self.document_json(r)) for r in rows) / max(1, len(rows))
        return self._doc_bytes

    def check_response(self, nq: int, k: int, with_docs: bool, field: str = "k") -> int:
        """Refuse, before any work, a request whose answer breaks ``max_hits`` or, by estimate,
        ``max_response_bytes``; returns the byte budget of the answer."""
        s = self.settings
        if nq * k > s.max_hits:
            raise ApiError(422, "limit_exceeded", f"{nq} queries x {field}={k} = {nq * k} results exceeds this "
                           f"server's max_hits={s.max_hits} per request; ask for fewer results or split the batch "
                           "(or start the server with a larger --max-hits)", field)
        hits = nq * min(k, self.n_docs)
        est = hits * (HIT_BYTES + self._id_bytes + (self._mean_doc_bytes() if with_docs else 0.0))
        if est > s.max_response_bytes:
            raise self._too_large(f"an estimated {int(est)} bytes ({hits} hits"
                                  + (", with documents)" if with_docs else ")"), field)
        return s.max_response_bytes

    def _too_large(self, what: str, field: str | None = "k") -> ApiError:
        return ApiError(422, "response_too_large", f"the answer would be {what}, over this server's "
                        f"max_response_bytes={self.settings.max_response_bytes}; ask for a smaller k, fewer queries "
                        "or no return_documents (or start the server with a larger --max-response-bytes)", field)

    def check_k(self, k: int, field: str = "k") -> int:
        if k > self.settings.max_k:
            raise ApiError(422, "limit_exceeded", f"{field}={k} exceeds this server's max_k={self.settings.max_k}; "
                           f"ask for at most {self.settings.max_k} results (or start the server with a larger "
                           "--max-k)", field)
        return k

    def check_batch(self, n: int, field: str = "queries") -> None:
        if n > self.settings.max_batch:
            raise ApiError(422, "limit_exceeded", f"{field} has {n} queries; this server accepts at most "
                           f"max_batch={self.settings.max_batch} per request: split the batch (or start the server "
                           "with a larger --max-batch)", field)

    # ------------------------------------------------------------------ queries -> SparseBatch
    def _limit(self, n: int, field: str, what: str) -> None:
        if n > self.settings.max_query_terms:
            raise ApiError(422, "limit_exceeded", f"{field} has {n} {what}; this server accepts at most "
                           f"max_query_terms={self.settings.max_query_terms} per query: keep the heaviest ones",
                           field)
        if n == 0:
            raise ApiError(422, "empty_query", f"{field} is empty; give at least one term with a weight", field)

    def _from_tokens(self, tokens: dict, field: str) -> tuple[np.ndarray, np.ndarray]:
        field = f"{field}.tokens"
        if self.vocab is None:
            raise ApiError(422, "no_vocabulary", f"{field}: this index stores no vocabulary, so tokens cannot be "
                           "mapped to term ids; send 'indices' and 'values' instead (or rebuild with --vocab)", field)
        self._limit(len(tokens), field, "tokens")
        ids = np.empty(len(tokens), np.int64)
        for j, tok in enumerate(tokens):
            tid = self.vocab.token_to_id.get(tok)
            if tid is None:
                shown = tok if len(tok) <= 80 else tok[:80] + "..."
                raise ApiError(422, "unknown_token", f"{field}: token {shown!r} is not in the index's vocabulary of "
                               f"{len(self.vocab)} tokens; use the tokenizer the index was built with (or drop it)",
                               f"{field}.{shown}")
            ids[j] = tid
        return ids, np.fromiter(tokens.values(), np.float64, len(tokens))

    def _from_arrays(self, q: SparseQuery, field: str) -> tuple[np.ndarray, np.ndarray]:
        n, nv = len(q.indices), len(q.values)
        if n != nv:
            raise ApiError(422, "ragged_vector", f"{field}.values has {nv} weights for {n} indices; give exactly one "
                           "weight per term id", f"{field}.values")
        self._limit(n, f"{field}.indices", "term ids")
        ids = np.asarray(q.indices, np.int64)  # pydantic bounded them to [0, 2^31)
        bad = np.flatnonzero(ids >= self.dim)
        if bad.size:
            j = int(bad[0])
            raise ApiError(422, "term_id_out_of_range", f"{field}.indices[{j}] = {int(ids[j])} is >= the index's dim "
                           f"{self.dim}; use term ids of the index's vocabulary (0..{self.dim - 1})",
                           f"{field}.indices[{j}]")
        if len(set(q.indices)) != n:  # pure Python: a numpy sort would release the GIL for nothing
            seen: set[int] = set()
            j = next(j for j, t in enumerate(q.indices) if t in seen or seen.add(t))
            raise ApiError(422, "duplicate_term", f"{field}.indices[{j}] = {int(ids[j])} appears more than once; "
                           "each term id may appear once per query: sum or max its weights", f"{field}.indices[{j}]")
        return ids, np.asarray(q.values, np.float64)

    def encode(self, texts: list[str], field: str) -> SparseBatch:
        if self.encoder is None:
            raise ApiError(422, "no_encoder", f"{field}: this server has no query encoder, so text queries cannot be "
                           "encoded; start it with --model DIR, or send 'tokens' or 'indices'+'values'", field)
        out = self.encoder.encode_queries(texts)
        if out.dim != self.dim:
            raise ApiError(422, "encoder_mismatch", f"the query encoder's dim {out.dim} differs from the index's dim "
                           f"{self.dim}; restart the server with the model the index was built with", field)
        return out

    def to_batch(self, queries: Sequence, field: str, many: bool = False) -> tuple[SparseBatch, float]:
        """Validate request queries (strings or `SparseQuery`) into one batch; returns (batch, encode seconds).

        ``field`` names them in errors: ``"query"`` for one, ``"queries"`` (-> ``queries[3]``) when ``many``."""
        names = [f"{field}[{i}]" if many else field for i in range(len(queries))]
        if many:
            self.check_batch(len(queries), field)
        rows: list = [None] * len(queries)
        texts, text_pos = [], []
        for i, (q, name) in enumerate(zip(queries, names)):
            text = q if isinstance(q, str) else q.text
            if text is not None:
                tfield = name if isinstance(q, str) else f"{name}.text"
                if not text.strip():
                    raise ApiError(422, "empty_query", f"{tfield} is blank; send some words", tfield)
                if len(text) > self.settings.max_text_chars:
                    raise ApiError(422, "limit_exceeded", f"{tfield} has {len(text)} characters; this server accepts "
                                   f"at most max_text_chars={self.settings.max_text_chars}: shorten the query", tfield)
                texts.append(text)
                text_pos.append((i, tfield))
            elif q.tokens is not None:
                rows[i] = self._from_tokens(q.tokens, name)
            else:
                rows[i] = self._from_arrays(q, name)
        t0 = time.perf_counter()
        if texts:
            enc = self.encode(texts, text_pos[0][1])
            for j, (i, tfield) in enumerate(text_pos):
                rows[i] = enc.row(j)  # no term the model knows -> an empty vector, which matches nothing
        encode_s = time.perf_counter() - t0
        try:
            batch = SparseBatch.from_rows(rows, dim=self.dim, what="queries")
        except AftershockError as e:  # a second line of defence: the data layer's own checks
            raise api_error_from(e, field) from None
        return batch, encode_s

    # ------------------------------------------------------------------ search
    def search_batch(self, batch: SparseBatch, k: int, params: SearchParams, deadline: float | None = None
                     ) -> SearchResult:
        """Blocking index search (run it off the event loop). A multi-threaded batch waits for one of the
        ``batch_slots`` (until ``deadline``, time.monotonic()); a single query runs at once on its own thread."""
        if len(batch) < 2 or params.threads == 1:
            return self.index.search(batch, k, params)
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.batch_gate.acquire(timeout=wait):
            raise deadline_exceeded(self.settings.request_timeout)
        try:
            return self.index.search(batch, k, params)
        finally:
            self.batch_gate.release()

    def check_deadline(self, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise deadline_exceeded(self.settings.request_timeout)

    def run(self, queries: Sequence, field: str, many: bool, k: int, params: SearchParams,
            deadline: float | None = None, hybrid=None) -> tuple[SearchResult, float, float]:
        """Validate/encode ``queries``, search them; returns (result, encode seconds, search seconds). A query
        whose weights are all zero matches nothing: its row comes back empty. ``hybrid`` (a request's
        `HybridOptions`): fuse with BM25 (`aftershock.service.hybrid`)."""
        if hybrid is not None:
            from aftershock.service.hybrid import run_hybrid

            return run_hybrid(self, queries, field, many, k, params, hybrid, deadline, ApiError)
        batch, enc_s = self.to_batch(queries, field, many)
        self.check_deadline(deadline)
        t0 = time.perf_counter()
        try:
            res = self.search_batch(batch, k, params, deadline)
        except AftershockError as e:
            raise api_error_from(e) from None
        search_s = time.perf_counter() - t0
        ptr, vals = batch.indptr, np.asarray(batch.values)
        empty = [i for i in range(len(batch)) if not (vals[ptr[i]:ptr[i + 1]] > 0).any()]
        if empty:
            res = SearchResult(np.array(res.scores), np.array(res.ids))
            res.ids[empty], res.scores[empty] = -1, -np.inf
        return res, enc_s, search_s

    def hits_json(self, scores: np.ndarray, rows: np.ndarray, with_docs: bool, budget: list, field: str = "k",
                  deadline: float | None = None) -> bytes:
        """One query's hits as a JSON array (bytes), documents from the cache; ``budget[0]`` (bytes left of
        ``max_response_bytes``) is charged, and running out is a 422 rather than a larger answer."""
        enc = _ID_JSON
        parts = []
        self.check_deadline(deadline)
        for s, r in _hit_pairs(scores, rows):
            part = b'{"id":' + enc(self.doc_ids[r]).encode("utf-8", "replace") + b',"score":' + repr(s).encode()
            part = part + b',"document":' + self.document_json(r) + b"}" if with_docs else part + b"}"
            budget[0] -= len(part) + 1
            if budget[0] < 0:
                raise self._too_large(f"more than {self.settings.max_response_bytes} bytes", field)
            parts.append(part)
        return b"[" + b",".join(parts) + b"]"

    def hits(self, scores: np.ndarray, rows: np.ndarray, with_docs: bool) -> list[dict]:
        out = []
        for s, r in _hit_pairs(scores, rows):
            hit = {"id": self.doc_ids[r], "score": s}
            if with_docs:
                hit["document"] = self.document(r)
            out.append(hit)
        return out

    # ------------------------------------------------------------------ documents
    def document_json(self, row: int) -> bytes:
        b = self._doc_cache.get(row)
        if b is None:
            b = dumps(self.document(row))
            self._doc_cache.put(row, b)
        return b

    def document(self, row: int) -> dict:
        idx, val = self.index.document(row)
        ids, vals = idx.tolist(), val.tolist()
        did = self.doc_ids[row]
        text = self.documents.get(did, {})
        return {"id": did, "vector": {"indices": ids, "values": vals},
                "tokens": dict(zip((self.vocab.tokens[t] for t in ids), vals)) if self.vocab is not None else None,
                "title": text.get("title"), "text": text.get("text")}

    def row(self, doc_id: str) -> int:
        r = self.row_of.get(doc_id)
        if r is None:
            shown = doc_id if len(doc_id) <= 80 else doc_id[:80] + "..."
            raise ApiError(404, "unknown_document", f"document id {shown!r} is not in this index of "
                           f"{len(self.doc_ids)} documents; use an id returned by /search", "doc_id")
        return r

    # ------------------------------------------------------------------ info
    def info(self) -> dict:
        ix = self.index_info
        enc = self.encoder
        return {
            "kind": ix["kind"], "backend": ix.get("backend"), "n_docs": int(ix["n_docs"]), "dim": self.dim,
            "index_bytes": int(ix["index_bytes"]), "vocab_size": ix.get("vocab_size"),
            "format_version": self.meta.get("format_version"), "collection": self.settings.collection,
            "config": dict(ix.get("config") or {}), "build_stats": dict(ix.get("build_stats") or {}),
            "defaults": {"k": 10, **{f: getattr(SearchParams, f) for f in ("query_cut", "heap_factor", "n_knn")}},
            "limits": {f: getattr(self.settings, f) for f in ("max_k", "max_batch", "max_query_terms",
                                                              "max_text_chars", "max_body_bytes", "max_hits",
                                                              "max_response_bytes", "request_timeout",
                                                              "body_timeout", "batch_slots")},
            "encoder": None if enc is None else str(getattr(enc, "name", None) or type(enc).__name__),
            "documents": len(self.documents),
            "hybrid": None if self.hybrid is None else self.hybrid.info(),
        }
