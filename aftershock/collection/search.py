"""Search over one consistent generation: every segment and the buffer with the same k, deleted and
filtered rows dropped, the per-segment top-k merged by score (ties by external id, for determinism).

Per segment (`search_segment`): a filter whose allowed set is small (`exact_limit`) is scored exactly over
those rows; otherwise a Seismic segment searches with the allowed-and-live rows as a mask *inside* the heap
(excluded rows are never scored, so the k-th score that drives the block cut is the k-th allowed one), and
an exact segment over-fetches k + excluded rows. A query still short of k hits (its allowed documents lie
outside the blocks the search visits) is completed exactly over the allowed rows, so a filtered search
returns k hits whenever k allowed documents match the query.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from aftershock.collection.filters import filter_mask
from aftershock.collection.segment import score_exact
from aftershock.index import SparseBatch
from aftershock.index.checks import check_search_input


class CollectionResult(NamedTuple):
    """Top-k per query of a collection: ``scores`` float32 (nq, k) best first, ``ids`` an object array (nq, k)
    of **external string ids**, padded with ``-inf`` / ``None`` when fewer than k documents match.

    It unpacks like every `SearchResult`: ``scores, ids = collection.search(...)``; the difference is only
    what ``ids`` hold (a collection has no stable row numbers: rows move at every flush and merge).
    ``doc_ids()`` gives the ids per query without padding (as ``SearchResult.doc_ids(names)`` does)."""

    scores: np.ndarray
    ids: np.ndarray

    def doc_ids(self, names=None) -> list[list[str]]:
        return [[x for x in row if x is not None] for row in self.ids]


def check_queries(queries, k, dim: int) -> SparseBatch:
    return check_search_input(queries, k, dim, "collection", "the collection's vocabulary")


def as_scipy(queries: SparseBatch, dim: int):
    import scipy.sparse as sp

    return sp.csr_matrix((queries.values, queries.indices, queries.indptr), shape=(len(queries), dim))


def merge(parts: list[tuple[np.ndarray, np.ndarray]], nq: int, k: int) -> CollectionResult:
    """Merge per-source (scores (nq, k_i), external ids (nq, k_i) object, None = padding) into the top-k."""
    if not parts:
        return CollectionResult(np.full((nq, k), -np.inf, np.float32), np.full((nq, k), None, dtype=object))
    S = np.concatenate([p[0] for p in parts], axis=1).astype(np.float32)
    ID = np.concatenate([p[1] for p in parts], axis=1)
    valid = ID != None  # noqa: E711 - elementwise
    S = np.where(valid, S, -np.inf)
    names = np.where(valid, ID, "").astype(str)
    _, rank = np.unique(names, return_inverse=True)
    rank = rank.reshape(S.shape)
    order = np.lexsort((rank, -S), axis=1)[:, :k]
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), None, dtype=object)
    m = order.shape[1]
    out_s[:, :m] = np.take_along_axis(S, order, 1)
    ids = np.take_along_axis(ID, order, 1)
    out_i[:, :m] = np.where(out_s[:, :m] > -np.inf, ids, None)
    return CollectionResult(out_s, out_i)


COPY_BATCH = 8  # queries from which copying the rows once (scipy, inverted) beats dot products per row
BATCH_ROWS = 12  # a batch scores ~12x more rows exactly in the time of one blocked search (lexicon, RESULTS)


def exact_limit(config, n: int, nq: int = 1) -> int:
    """The largest allowed set of an n-row segment that ``nq`` queries score exactly rather than search:
    ``max(filter_exact_rows, filter_exact_fraction x n)``, times `BATCH_ROWS` for a batch (which copies the
    rows once and scores them through their postings: about 12x cheaper per row than one query's dot
    products; measured crossovers on lexicon ~3,200 rows for one query, ~53,000 for a batch)."""
    rows = max(config.filter_exact_rows, config.filter_exact_fraction * n)
    return int(rows * (BATCH_ROWS if nq >= COPY_BATCH else 1))


def search_segment(seg, deleted: np.ndarray, allowed: np.ndarray | None, queries: SparseBatch, Q, k: int, params,
                   config) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of segment ``seg`` per query among rows neither ``deleted`` nor outside ``allowed`` (None:
    no filter); padded -inf / -1. See the module docstring for the three paths."""
    ok = ~deleted if allowed is None else (allowed & ~deleted)
    n_ok, nq, n = int(ok.sum()), len(queries), seg.n
    if n_ok == 0 or nq == 0:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
    if allowed is not None and n_ok <= exact_limit(config, n, nq):
        return score_rows(seg, np.flatnonzero(ok), queries, Q, k, params)
    if n_ok == n:
        res = seg.index.search(queries, k, params)
        return np.array(res.scores), np.array(res.ids)
    if seg.kind == "seismic":
        res = seg.index._search_allowed(queries, k, widened(params, n_ok / n), ok)
        out_s, out_i = np.array(res.scores), np.array(res.ids)
    else:  # exact: the k best allowed rows are among the k + excluded best rows
        res = seg.index.search(queries, min(k + n - n_ok, n), params)
        out_s, out_i = _keep(res.scores, res.ids, ok, k)
    short = np.flatnonzero((out_i >= 0).sum(axis=1) < min(k, n_ok))
    if short.size and seg.kind == "seismic":
        out_s[short], out_i[short] = score_rows(seg, np.flatnonzero(ok), queries[short], Q[short], k, params)
    return out_s, out_i


def score_rows(seg, rows: np.ndarray, queries: SparseBatch, Q, k: int, params) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries`` over segment ``rows``. A few queries on a Seismic segment: one dot product
    per row, read from the forward index in place (`rows_exact_*` kernels: no set-up, what a single service
    query needs); a batch (or an exact segment, small by construction): the rows copied once and transposed,
    then one sparse product over the query terms' postings (`score_exact`)."""
    if seg.kind != "seismic" or len(queries) >= COPY_BATCH:
        return score_exact(seg.forward(), rows, Q, k)
    from aftershock.seismic import kernels as K
    from aftershock.seismic.index import _parallel_guard
    from aftershock.seismic.kernels.search import rows_exact_batch, rows_exact_serial

    ix, nq = seg.index, len(queries)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    nt = min(params.n_threads(), nq)
    args = (ix.fwd_ptr, ix.fwd_idx, ix.fwd_val, K.F16_LUT, rows.astype(np.int64), queries.indptr, queries.indices,
            queries.values, k)
    qdense = np.zeros((max(nt, 1), ix.dim), np.float32)
    if nt <= 1:
        rows_exact_serial(*args, out_s, out_i, qdense)
    else:
        with _parallel_guard(), K.numba_threads(nt):
            rows_exact_batch(*args, nt, out_s, out_i, qdense)
    return out_s, out_i


WIDEN_BELOW = 0.5  # allowed fraction under which a filtered Seismic search widens (measured on lexicon)
WIDEN_MAX = 2.5


def widened(params, fraction: float):
    """The knobs of a filtered Seismic search when a ``fraction`` of the segment is allowed: the filtered top-k
    lies deeper in the unfiltered ranking (about k / fraction), so below `WIDEN_BELOW` the search visits more
    posting lists and cuts fewer blocks: ``query_cut`` x f and ``heap_factor`` / sqrt(f), with
    f = min(`WIDEN_MAX`, sqrt(WIDEN_BELOW / fraction)). It stays cheap: excluded documents are never scored."""
    if fraction >= WIDEN_BELOW:
        return params
    f = min(WIDEN_MAX, (WIDEN_BELOW / fraction) ** 0.5)
    return params.with_(query_cut=int(np.ceil(params.query_cut * f)), heap_factor=params.heap_factor / f ** 0.5)


def _keep(scores: np.ndarray, ids: np.ndarray, ok: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k (score, id) whose id is ``ok`` (order kept), padded -inf / -1."""
    keep = (ids >= 0) & ok[np.maximum(ids, 0)]
    pos = np.cumsum(keep, axis=1) - 1
    sel = keep & (pos < k)
    out_s = np.full((ids.shape[0], k), -np.inf, np.float32)
    out_i = np.full((ids.shape[0], k), -1, np.int64)
    r, c = np.nonzero(sel)
    out_s[r, pos[r, c]] = scores[r, c]
    out_i[r, pos[r, c]] = ids[r, c]
    return out_s, out_i


def search_generation(gen, queries: SparseBatch, k: int, params, filt, config) -> CollectionResult:
    """Search snapshot ``gen`` (a `collection.Generation`): segments with their deletion masks, the buffer."""
    nq = len(queries)
    Q = as_scipy(queries, gen.dim)
    parts = []
    for seg, deleted in gen.segments:
        allowed = filter_mask(filt, gen.schema, seg.table, seg.doc_ids) if filt else None
        s, rows = search_segment(seg, deleted, allowed, queries, Q, k, params, config)
        ids = np.where(rows >= 0, seg.doc_ids[np.maximum(rows, 0)], None) if seg.n else np.full(rows.shape, None)
        parts.append((s, ids))
    buf = gen.buffer
    if buf.n:
        rows = np.arange(buf.n)
        if filt:
            rows = np.flatnonzero(filter_mask(filt, gen.schema, buf.table, buf.ids))
        s, r = score_exact(buf.matrix, rows, Q, k)
        parts.append((s, np.where(r >= 0, buf.ids[np.maximum(r, 0)], None)))
    return merge(parts, nq, k)
