"""Hybrid search: fuse the top lists of several systems (e.g. BM25 and a learned sparse model) per query.

Two methods, both over `SearchResult` arrays whose ids are rows of one shared document order:

* ``convex`` -- the normalised convex combination. Each system's list of a query is min-max normalised
  over its own top-``depth`` hits, ``n(s) = (s - min) / (max - min)`` (a list whose hits all score the
  same normalises to 1), a document missing from a system's list scores 0 there, and the fused score is
  ``sum_i w_i * n_i(d)`` with weights ``w_i >= 0`` summing to 1.
* ``rrf`` -- reciprocal-rank fusion (Cormack et al. 2009): ``sum_i w_i / (rrf_k + rank_i(d))`` with
  ``rank`` the 1-based position in system i's list (missing: no term), ``rrf_k = 60`` and ``w_i = 1`` by
  default.

Fused lists are sorted by score, ties broken by the smaller row id; rows with fewer than ``k`` fused hits
are padded with ``-inf`` / ``-1``. `HybridSearcher` runs text queries through several (encoder, index)
systems (concurrently: the search kernels release the GIL) and fuses them. Pure numpy; the encoders and
indexes are used only through their contracts (``encode_queries`` and ``search``), so this module imports
no other room.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from aftershock.errors import ConfigError, InvalidVectorError
from aftershock.index.config import Config, check, is_int, is_real
from aftershock.index.batch import SparseBatch
from aftershock.index.result import SearchResult

METHODS = ("convex", "rrf")
RRF_K = 60
# weight of the learned system in the convex combination (BM25 gets 1 - weight), chosen on training dev data
# only: the title dev split held out of the shipped model's training (titles as queries over the title-less
# SciFact, Cranfield and CISI documents, 247 queries; benchmarks/hybrid_weight.py --model default --sets
# title-dev: best of 0, 0.05, .., 1), never a test qrel; see benchmarks/RESULTS.md "Hybrid search"
DEFAULT_WEIGHT = 0.45
DEFAULT_DEPTH = 100


@dataclass(frozen=True)
class FusionParams(Config):
    """Query-time knobs of a two-system fusion: ``method`` ("convex" or "rrf"); ``weight`` in [0, 1] is the
    second (learned) system's share in the convex combination, the first (lexical) gets ``1 - weight``
    (RRF is unweighted); ``depth`` hits per system enter the fusion (and define its min-max range);
    ``rrf_k`` is RRF's rank offset."""

    method: str = "convex"
    weight: float = DEFAULT_WEIGHT
    depth: int = DEFAULT_DEPTH
    rrf_k: float = RRF_K

    none_keeps = True

    def __post_init__(self):
        check(self.method in METHODS, f"method={self.method!r}; use one of {list(METHODS)}")
        check(is_real(self.weight, 0, 1), f"weight={self.weight!r} must be a number in [0, 1] (the learned system's "
              f"share of the convex combination; BM25 gets 1 - weight); try {DEFAULT_WEIGHT}")
        check(is_int(self.depth, 1), f"depth={self.depth!r} must be an integer >= 1 (hits per system that enter the "
              f"fusion); try {DEFAULT_DEPTH}")
        check(is_real(self.rrf_k, 0), f"rrf_k={self.rrf_k!r} must be a finite number >= 0; try {RRF_K}")

    def weights(self, n: int = 2) -> tuple[float, ...]:
        """Per-system weights for ``fuse``: convex (1 - weight, weight); RRF all ones."""
        if self.method == "rrf":
            return (1.0,) * n
        check(n == 2, f"FusionParams.weight describes two systems, got {n}; call fuse(..., weights=[...]) directly")
        return (1.0 - self.weight, self.weight)


def _check_weights(weights, n: int, method: str) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n if method == "convex" else 1.0)
    w = list(weights)
    check(len(w) == n, f"weights has {len(w)} values for {n} result lists; give one weight per system")
    for i, x in enumerate(w):
        ok = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
        check(ok and math.isfinite(float(x)) and x >= 0, f"weights[{i}]={x!r} must be a finite number >= 0")
    w = np.asarray(w, np.float64)
    if method == "convex":
        check(abs(w.sum() - 1.0) <= 1e-6, f"weights {tuple(float(x) for x in w)} sum to {w.sum():g}; a convex "
              "combination needs non-negative weights summing to 1, e.g. (0.5, 0.5)")
    else:
        check(w.sum() > 0, "weights are all 0; give at least one positive weight")
    return w


def _arrays(results) -> list[tuple[np.ndarray, np.ndarray]]:
    check(len(results) >= 1, "fuse needs at least one result list")
    out, nq = [], None
    for i, r in enumerate(results):
        scores, ids = np.asarray(r[0], np.float64), np.asarray(r[1])
        if scores.shape != ids.shape or ids.ndim != 2:
            raise ConfigError(f"results[{i}]: scores {scores.shape} and ids {ids.shape} must be one (nq, depth) "
                              "shape; pass SearchResult objects")
        if ids.size and ids.dtype.kind not in "iu":
            raise ConfigError(f"results[{i}]: ids are {ids.dtype}, not row numbers; fuse row ids of one shared "
                              "document order (map external ids to rows first)")
        if nq is not None and len(ids) != nq:
            raise ConfigError(f"results[{i}] has {len(ids)} queries, results[0] has {nq}; fuse lists of the same "
                              "queries")
        nq = len(ids)
        ids = ids.astype(np.int64, copy=False)
        bad = (ids >= 0) & ~np.isfinite(scores)
        if bad.any():
            q, j = map(int, np.argwhere(bad)[0])
            raise InvalidVectorError(f"results[{i}]: query {q} hit {j} has the non-finite score {scores[q, j]}; "
                                     "only finite scores can be fused (scale the query weights down)")
        out.append((scores, ids))
    return out


def _contributions(scores: np.ndarray, ids: np.ndarray, method: str, weight: float, rrf_k: float) -> np.ndarray:
    valid = ids >= 0
    if method == "convex":
        hi = np.where(valid, scores, -np.inf).max(axis=1, initial=-np.inf)[:, None]
        lo = np.where(valid, scores, np.inf).min(axis=1, initial=np.inf)[:, None]
        span = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(span > 0, (scores - lo) / np.where(span > 0, span, 1.0), 1.0)
        return weight * np.where(valid, norm, 0.0)
    rank = np.cumsum(valid, axis=1)  # 1-based position among the list's hits
    return weight / (rrf_k + rank)


def fuse(results: Sequence, method: str = "convex", weights=None, k: int = 10, rrf_k: float = RRF_K
         ) -> SearchResult:
    """Fuse per query the lists ``results`` (`SearchResult`s, or (scores, ids) pairs, of the same queries,
    ids = rows of one shared document order, any depths) into the top ``k``; see the module text for the
    formulas. ``weights``: one per list (default: equal shares for convex, 1 for RRF)."""
    check(method in METHODS, f"method={method!r}; use one of {list(METHODS)}")
    check(is_int(k, 1), f"k={k!r} must be an integer >= 1")
    check(is_real(rrf_k, 0), f"rrf_k={rrf_k!r} must be a finite number >= 0; try {RRF_K}")
    lists = _arrays(results)
    w = _check_weights(weights, len(lists), method)
    nq = len(lists[0][1])
    if nq <= SMALL_BATCH:
        return _fuse_small(lists, method, w.tolist(), k, float(rrf_k))
    n_rows = 1 + max([0] + [int(ids.max()) for _, ids in lists if ids.size])
    keys, contrib = [], []
    for i, ((scores, ids), wi) in enumerate(zip(lists, w)):
        valid = ids >= 0
        srt = np.sort(ids, axis=1)
        if ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any():
            raise ConfigError(f"results[{i}] lists a row twice for one query; each list must hold distinct rows")
        keys.append(np.nonzero(valid)[0] * n_rows + ids[valid])
        contrib.append(_contributions(scores, ids, method, float(wi), float(rrf_k))[valid])
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    all_keys = np.concatenate(keys)
    if all_keys.size == 0:
        return SearchResult(out_s, out_i)
    # group equal (query, row) keys; a stable sort keeps system order, so sums run as in _fuse_small
    order = np.argsort(all_keys, kind="stable")
    sk, sc = all_keys[order], np.concatenate(contrib)[order]
    first = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    uniq, fused = sk[first], np.add.reduceat(sc, first)
    q, rows = uniq // n_rows, uniq % n_rows
    order = np.lexsort((-fused, q))  # by query, then score descending; stable: ties keep rows ascending
    q, rows, fused = q[order], rows[order], fused[order]
    starts = np.zeros(nq + 1, np.int64)
    np.cumsum(np.bincount(q, minlength=nq), out=starts[1:])
    pos = np.arange(q.size) - starts[q]
    keep = pos < k
    out_s[q[keep], pos[keep]] = fused[keep]
    out_i[q[keep], pos[keep]] = rows[keep]
    return SearchResult(out_s, out_i)


SMALL_BATCH = 8  # up to this many queries, plain Python beats numpy's per-call overhead (same sums, same order)


def _fuse_small(lists, method: str, w: list, k: int, rrf_k: float) -> SearchResult:
    """`fuse` for a few queries: contributions computed per list with numpy, summed in one dict per query in
    the same order as the numpy path (system by system), so both give bit-identical scores."""
    import heapq

    nq = len(lists[0][1])
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    for q in range(nq):
        acc: dict[int, float] = {}
        for i, ((scores, ids), wi) in enumerate(zip(lists, w)):
            valid = ids[q] >= 0
            rows = ids[q][valid]
            if not rows.size:
                continue
            rows = rows.tolist()
            if len(set(rows)) != len(rows):
                raise ConfigError(f"results[{i}] lists a row twice for one query; each list must hold distinct rows")
            c = _contributions(scores[q:q + 1], ids[q:q + 1], method, wi, rrf_k)[0][valid]
            get = acc.get
            for r, x in zip(rows, c.tolist()):
                acc[r] = get(r, 0.0) + x
        best = heapq.nsmallest(k, acc.items(), key=lambda kv: (-kv[1], kv[0]))
        if best:
            out_i[q, :len(best)] = [r for r, _ in best]
            out_s[q, :len(best)] = [x for _, x in best]
    return SearchResult(out_s, out_i)


def row_map(reference_ids, other_ids) -> np.ndarray | None:
    """Rows of ``other_ids`` in ``reference_ids``' order (-1 where a document is not in the reference), or
    None when both orders are the same."""
    ref, other = [str(d) for d in reference_ids], [str(d) for d in other_ids]
    if ref == other:
        return None
    where = {d: i for i, d in enumerate(ref)}
    return np.array([where.get(d, -1) for d in other], np.int64)


def remap(result: SearchResult, rows: np.ndarray | None) -> SearchResult:
    """``result``'s rows translated by ``rows`` (from `row_map`); hits outside the reference are dropped."""
    if rows is None:
        return result
    ids = np.asarray(result.ids)
    new = np.where(ids >= 0, rows[np.maximum(ids, 0)], -1)
    scores = np.where(new >= 0, result.scores, -np.inf).astype(np.float32)
    order = np.argsort(new < 0, axis=1, kind="stable")  # keep the order, padding last
    return SearchResult(np.take_along_axis(scores, order, 1), np.take_along_axis(new, order, 1))


class HybridSearcher:
    """Text queries through several (encoder, index) systems, fused per query.

    ``systems``: ``[(encoder, index), ...]``, typically ``[(bm25, bm25_index), (learned, learned_index)]``;
    any encoder with ``encode_queries(texts) -> SparseBatch`` and any index with the search contract. The
    result's ids are rows of the **first** index (``searcher.doc_ids`` maps them to external ids); the other
    indexes' hits are mapped there by their ``doc_ids`` (a document the first index lacks is dropped).
    ``fusion``: `FusionParams` (method, weight, depth, rrf_k). ``concurrent``: encode and search the
    systems on parallel threads (the kernels release the GIL), so a query costs about the slower system,
    not the sum. ``search(texts, k, params=None, **overrides)``: ``params`` go to every index (e.g.
    `SearchParams(threads=1)`), overrides replace `FusionParams` fields. ``last_stats`` holds the encode
    and search seconds of each system of the last search.
    """

    def __init__(self, systems, fusion: FusionParams | None = None, concurrent: bool = True):
        check(len(systems) >= 2, f"a hybrid searcher needs at least two (encoder, index) systems, got {len(systems)}")
        for i, s in enumerate(systems):
            check(isinstance(s, (tuple, list)) and len(s) == 2 and hasattr(s[0], "encode_queries")
                  and hasattr(s[1], "search"), f"systems[{i}] must be an (encoder, index) pair: an object with "
                  "encode_queries(texts) and an index with search(queries, k, params)")
        self.systems = [tuple(s) for s in systems]
        self.fusion = fusion or FusionParams()
        ref = self.systems[0][1].doc_ids
        self.doc_ids = ref
        self._maps = [None] + [row_map(ref, idx.doc_ids) for _, idx in self.systems[1:]]
        self.concurrent = bool(concurrent)
        self._pool = None
        self._lock = threading.Lock()
        self.last_stats: dict = {}

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=len(self.systems) - 1,
                                                thread_name_prefix="aftershock-hybrid")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _one(self, i: int, texts, depth: int, params) -> tuple[SearchResult, float, float]:
        import time

        enc, idx = self.systems[i]
        t0 = time.perf_counter()
        queries = enc.encode_queries(texts)
        t1 = time.perf_counter()
        res = idx.search(queries, min(depth, len(idx.doc_ids)), params)
        t2 = time.perf_counter()
        return remap(res, self._maps[i]), t1 - t0, t2 - t1

    def search_each(self, texts, depth: int | None = None, params=None) -> list[SearchResult]:
        """Each system's top ``depth`` (rows of the first index), in system order; runs them concurrently
        when the searcher is ``concurrent``."""
        texts = list(texts)
        depth = self.fusion.depth if depth is None else depth
        check(is_int(depth, 1), f"depth={depth!r} must be an integer >= 1")
        if self.concurrent:
            pool = self._executor()
            futures = [pool.submit(self._one, i, texts, depth, params) for i in range(1, len(self.systems))]
            outs = [self._one(0, texts, depth, params)] + [f.result() for f in futures]
        else:
            outs = [self._one(i, texts, depth, params) for i in range(len(self.systems))]
        self.last_stats = {"encode_s": [o[1] for o in outs], "search_s": [o[2] for o in outs]}
        return [o[0] for o in outs]

    def search(self, texts, k: int = 10, params=None, **overrides) -> SearchResult:
        """Fused top ``k`` of each text query; ``overrides``: method, weight, depth, rrf_k."""
        fp = self.fusion.with_(**overrides) if overrides else self.fusion
        check(is_int(k, 1), f"k={k!r} must be an integer >= 1")
        depth = max(fp.depth, k)
        lists = self.search_each(texts, depth, params)
        return fuse(lists, fp.method, fp.weights(len(lists)), k, fp.rrf_k)


def stack_columns(batches: Sequence) -> tuple:
    """Batches of the same rows side by side: row r = batches[0][r] | batches[1][r] | ..., each batch's term ids
    shifted by the dims before it. Returns (batch, offsets)."""
    n = len(batches[0])
    check(all(len(b) == n for b in batches), "stack_columns: every batch must hold the same rows")
    offsets = np.cumsum([0] + [b.dim for b in batches])
    lengths = sum(np.diff(b.indptr) for b in batches)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # rows interleaved batch after batch; within a row the shifted ids stay ascending
    part = np.concatenate([np.repeat(np.arange(n), np.diff(b.indptr)) for b in batches])
    which = np.concatenate([np.full(b.nnz, i) for i, b in enumerate(batches)])
    order = np.lexsort((which, part))
    indices = np.concatenate([b.indices.astype(np.int64) + o for b, o in zip(batches, offsets)])[order]
    values = np.concatenate([b.values for b in batches])[order]
    return SparseBatch._trusted(indptr, indices.astype(np.int32), values.astype(np.float32), batches[0].ids,
                                int(offsets[-1])), offsets


class StackedHybridSearcher(HybridSearcher):
    """Hybrid search in one index: the systems' document vectors side by side (term ids of system i shifted
    by the dims of the systems before it), so one search call answers every system at once: query q of
    system i is row ``i * n + q`` of one query batch whose other columns are empty. With an exact index the
    answers are those of separate indexes (each row touches only its own system's columns); the systems
    share one validation, one kernel launch, one result. ``build``: docs -> index (e.g.
    `aftershock.seismic.ExactIndex.build`); ``docs``: one `SparseBatch` per system, the same documents in
    the same order. Same ``search`` / ``search_each`` as `HybridSearcher`."""

    def __init__(self, encoders, docs, build, fusion: FusionParams | None = None):
        check(len(encoders) == len(docs) >= 2, f"give one document batch per encoder, at least two systems (got "
              f"{len(encoders)} encoders, {len(docs)} batches)")
        first = [str(d) for d in docs[0].ids]
        for i, b in enumerate(docs[1:], 1):
            check([str(d) for d in b.ids] == first, f"docs[{i}] holds other documents or another order than docs[0]; "
                  "encode the same documents in the same order for every system")
        stacked, self.offsets = stack_columns(docs)
        self.index = build(stacked)
        self.encoders = list(encoders)
        self.systems = [(e, self.index) for e in self.encoders]
        self.fusion = fusion or FusionParams()
        self.doc_ids = self.index.doc_ids
        self.concurrent, self._pool, self.last_stats = False, None, {}

    def search_each(self, texts, depth: int | None = None, params=None) -> list[SearchResult]:
        import time

        texts = list(texts)
        depth = self.fusion.depth if depth is None else depth
        check(is_int(depth, 1), f"depth={depth!r} must be an integer >= 1")
        t0 = time.perf_counter()
        n, dim = len(texts), int(self.offsets[-1])
        parts = []
        for enc, off in zip(self.encoders, self.offsets):
            q = enc.encode_queries(texts)
            parts.append(SparseBatch._trusted(q.indptr, (q.indices.astype(np.int64) + off).astype(np.int32),
                                              q.values.astype(np.float32, copy=False), q.ids, dim))
        t1 = time.perf_counter()
        res = self.index.search(SparseBatch.concat(parts), min(depth, len(self.doc_ids)), params)
        self.last_stats = {"encode_s": [t1 - t0], "search_s": [time.perf_counter() - t1]}
        return [SearchResult(res.scores[i * n:(i + 1) * n], res.ids[i * n:(i + 1) * n])
                for i in range(len(self.encoders))]


def parse_fusion(spec: str) -> FusionParams:
    """``"convex"``, ``"convex=0.3"``, ``"rrf"`` or ``"rrf=60"`` (RRF's k) -> `FusionParams`."""
    method, _, value = str(spec).partition("=")
    method = method.strip().lower()
    check(method in METHODS, f"fusion {spec!r}: the method is one of {list(METHODS)} (e.g. convex=0.3 or rrf)")
    if not value:
        return FusionParams(method=method)
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if method == "rrf":
        check(math.isfinite(x) and x >= 0, f"fusion {spec!r}: rrf=K needs a number K >= 0 (e.g. rrf=60)")
        return FusionParams(method="rrf", rrf_k=x)
    check(math.isfinite(x) and 0 <= x <= 1, f"fusion {spec!r}: convex=W needs a weight W in [0, 1] (the learned "
          "system's share)")
    return FusionParams(method="convex", weight=x)
