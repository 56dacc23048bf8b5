"""`DenseBlockIndex`: the Seismic skeleton (blocks -> summaries -> best-first visiting with radius_factor ->
kNN-graph refinement) over dense keys, for maximum-inner-product search of attention queries.

Build:
  * blocks: k-means (torch, CPU or GPU) on the keys in *summary space*, ``n_keys / block_size`` clusters;
    clusters larger than ``2 * block_size`` are split so no block dominates a scan;
  * summaries: per block the centroid ``c`` and radius ``r`` in summary space, so for every key of the
    block ``q.k = qs.ks <= qs.c + |qs| r`` (a valid upper bound);
  * summary space: the identity, or with query-aware construction (``query_aware=True`` and prefill
    queries given) the space whitened by the prefill queries' second moment ``S = E[q q^T] = L L^T``:
    keys map to ``k L``, queries to ``q L^-T``, inner products are unchanged, and the clusters are tight
    along the directions in which the queries actually vary (the query/key distribution gap);
  * graph: key-kNN (each key's ``knn`` nearest keys in summary space, searched among the keys of its
    ``knn_probe`` nearest blocks) or, query-aware, a RoarGraph-style projection: for each prefill query
    its exact top-``roar_topk`` keys are linked to the query's best key and to their neighbours in its
    ranking (both ways), neighbours ranked by how many queries link them; keys with too few links are
    topped up from the key-kNN graph.

Search (`search(q, k, params, **overrides)`, statistics in ``last_stats``): see
``kernels.dense_search_one``. ``radius_factor`` (0, 1] shrinks the radius term of the block estimate (1 = exact upper bound: with ``n_knn=0`` and ``radius_factor=1`` the
result is the exact top-k). ``n_knn`` graph neighbours of each result are rescored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from aftershock.errors import ConfigError, InvalidVectorError
from aftershock.index import SearchResult
from aftershock.index.config import Config, check, is_int
from aftershock.kv import kernels as K
from aftershock.seismic.kernels.memory import numba_threads


@dataclass(frozen=True)
class DenseConfig(Config):
    """How a `DenseBlockIndex` is built (Seismic's names where they carry over)."""

    block_size: int = 64
    kmeans_iterations: int = 8
    knn: int = 32
    knn_probe: int = 4
    query_aware: bool = False
    roar_topk: int = 64
    max_build_queries: int = 8192
    whiten_eps: float = 1e-3
    seed: int = 42

    def __post_init__(self):
        check(is_int(self.block_size, 1),
              f"block_size={self.block_size!r} must be an integer >= 1 (try 64)")
        check(is_int(self.kmeans_iterations, 0),
              f"kmeans_iterations={self.kmeans_iterations!r} must be an integer >= 0")
        check(is_int(self.knn, 0), f"knn={self.knn!r} must be an integer >= 0")
        check(is_int(self.knn_probe, 1),
              f"knn_probe={self.knn_probe!r} must be an integer >= 1")
        check(is_int(self.roar_topk, 2),
              f"roar_topk={self.roar_topk!r} must be an integer >= 2")
        check(is_int(self.max_build_queries, 1),
              f"max_build_queries={self.max_build_queries!r} must be an integer >= 1")
        check(self.whiten_eps > 0, f"whiten_eps={self.whiten_eps!r} must be > 0")


@dataclass(frozen=True)
class DenseSearchParams(Config):
    """Query-time knobs: a block is skipped once its estimate ``qs.c + radius_factor |qs| r`` is below the
    k-th best score. ``radius_factor`` is not the sparse index's ``heap_factor``: it runs the other way (1 =
    the exact upper bound, the safest; lower = more blocks skipped = faster, lower recall); ``n_knn`` graph neighbours of each result
    are scored, for up to ``refine_rounds`` rounds (each expands the results not yet expanded);
    ``threads`` (None = all cores) parallelise a batch over queries."""

    radius_factor: float = 0.2
    n_knn: int = 32
    refine_rounds: int = 16
    threads: int | None = None

    none_keeps = True  # with_(n_knn=None) keeps the current value

    def __post_init__(self):
        check(0 < self.radius_factor <= 1, f"radius_factor={self.radius_factor!r} must be in (0, 1] (1 = exact bound)")
        check(is_int(self.n_knn, 0), f"n_knn={self.n_knn!r} must be an integer >= 0")
        check(is_int(self.refine_rounds, 1),
              f"refine_rounds={self.refine_rounds!r} must be an integer >= 1")
        check(self.threads is None or is_int(self.threads, 1),
              f"threads={self.threads!r} must be None (all cores) or an integer >= 1")


def _as_matrix(x, what: str, dim: int | None = None) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InvalidVectorError(f"{what} must be a 2-d array (n, dim), got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise InvalidVectorError(f"{what} have dim {a.shape[1]} but the index holds keys of dim {dim}; "
                                 "pass vectors of the head dimension the index was built with")
    if not np.isfinite(a).all():
        raise InvalidVectorError(f"{what} contain NaN or infinite values; check the model's activations")
    return np.ascontiguousarray(a)


def kmeans(x, n_clusters: int, iterations: int, seed: int = 0):
    """Lloyd's k-means in torch (runs where ``x`` lives: CPU or GPU); returns (centroids, assignment)."""
    import torch

    n = x.shape[0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    cents = x[torch.randperm(n, generator=g)[:n_clusters].to(x.device)].clone()
    assign = _nearest(x, cents)
    for _ in range(iterations):
        sums = torch.zeros_like(cents).index_add_(0, assign, x)
        cnt = torch.bincount(assign, minlength=n_clusters).to(x.dtype)
        empty = cnt == 0
        cents = torch.where(empty[:, None], cents, sums / cnt.clamp(min=1)[:, None])
        assign = _nearest(x, cents)
    return cents, assign


def _nearest(x, cents, chunk: int = 16384):
    import torch

    c2 = (cents * cents).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for a in range(0, x.shape[0], chunk):
        out[a:a + chunk] = (c2[None, :] - 2.0 * x[a:a + chunk] @ cents.T).argmin(1)
    return out


def exact_topk(queries, keys, k: int, chunk: int = 4096):
    """Exact maximum-inner-product top-k (torch, wherever the tensors live): (scores, ids) best first."""
    import torch

    k = min(k, keys.shape[0])
    ss, ii = [], []
    for a in range(0, queries.shape[0], chunk):
        s, i = torch.topk(queries[a:a + chunk] @ keys.T, k, dim=1)
        ss.append(s)
        ii.append(i)
    return torch.cat(ss), torch.cat(ii)


def _split_large(assign: np.ndarray, n_clusters: int, cap: int) -> np.ndarray:
    """Block id per key: clusters larger than ``cap`` are cut into consecutive pieces of <= cap."""
    order = np.argsort(assign, kind="stable")
    sizes = np.bincount(assign, minlength=n_clusters)
    pieces = np.maximum(1, -(-sizes // cap))
    base = np.concatenate([[0], np.cumsum(pieces)])
    start = np.concatenate([[0], np.cumsum(sizes)])
    a_sorted = assign[order]
    rank = np.arange(order.shape[0]) - start[a_sorted]
    piece_size = -(-sizes // pieces)
    blk = np.empty_like(assign)
    blk[order] = base[a_sorted] + rank // np.maximum(piece_size[a_sorted], 1)
    return blk


class DenseBlockIndex:
    """Blocked, summarized, graph-refined index over dense keys (rows = positions given at build)."""

    kind = "dense"
    ARRAYS = ("keys", "blk_ptr", "key_blk", "cents", "radii", "knn", "row_ids", "transform")

    def __init__(self, arrays: dict, config: DenseConfig, build_stats: dict | None = None):
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])
        self.config = config
        self.build_stats = build_stats or {}
        self._lock = threading.Lock()
        self.last_stats: dict = {}

    @property
    def n_keys(self) -> int:
        return self.keys.shape[0]

    def __len__(self) -> int:
        return self.n_keys

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    @property
    def n_blocks(self) -> int:
        return self.cents.shape[0]

    def nbytes(self) -> int:
        return int(sum(getattr(self, n).nbytes for n in self.ARRAYS))

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, keys, config: DenseConfig | None = None, queries=None, ids=None, device=None,
              **overrides) -> "DenseBlockIndex":
        """Index ``keys`` (n, dim) (numpy or torch). ``queries`` (m, dim): prefill queries for the query-aware
        construction (used when ``config.query_aware``). ``ids``: what `search` returns for each key row
        (default 0..n-1, e.g. cache positions). ``device``: torch device for the build's dense work
        (default: the keys' device when they are a torch tensor, else CPU)."""
        import torch

        config = (config or DenseConfig()).with_(**overrides) if overrides else (config or DenseConfig())
        if device is None:
            device = keys.device if isinstance(keys, torch.Tensor) else "cpu"
        x = torch.as_tensor(_as_matrix(keys, "keys")).to(device)
        n, dim = x.shape
        if n == 0:
            raise InvalidVectorError("keys are empty (0 rows); index at least one key")
        row_ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64).reshape(-1)
        if row_ids.shape[0] != n:
            raise InvalidVectorError(f"ids has {row_ids.shape[0]} entries for {n} keys; pass one id per key")
        qa = config.query_aware and queries is not None
        qx = None
        if queries is not None:
            qx = torch.as_tensor(_as_matrix(queries, "queries", dim)).to(device)
            if qx.shape[0] > config.max_build_queries:
                g = torch.Generator(device="cpu").manual_seed(config.seed)
                qx = qx[torch.randperm(qx.shape[0], generator=g)[:config.max_build_queries].to(device)]
        # summary space
        if qa:
            s = (qx.T.double() @ qx.double()) / qx.shape[0]
            s = s + config.whiten_eps * torch.trace(s) / dim * torch.eye(dim, dtype=s.dtype, device=device)
            chol = torch.linalg.cholesky(s)
            transform = chol.float()  # keys -> keys @ L ; queries -> queries @ L^-T
        else:
            transform = torch.eye(dim, device=device)
        xs = x @ transform
        # blocks
        n_clusters = max(1, min(n, round(n / config.block_size)))
        cents, assign = kmeans(xs, n_clusters, config.kmeans_iterations, config.seed)
        blk = _split_large(assign.cpu().numpy(), n_clusters, 2 * config.block_size)
        nb = int(blk.max()) + 1
        order = np.argsort(blk, kind="stable")
        blk_sorted = blk[order]
        blk_ptr = np.searchsorted(blk_sorted, np.arange(nb + 1)).astype(np.int64)
        order_t = torch.as_tensor(order, device=device)
        xs_p = xs[order_t]
        bt = torch.as_tensor(blk_sorted, device=device)
        cnt = torch.bincount(bt, minlength=nb).to(xs.dtype)
        cents = torch.zeros(nb, dim, device=device, dtype=xs.dtype).index_add_(0, bt, xs_p) / cnt.clamp(min=1)[:, None]
        dist = (xs_p - cents[bt]).norm(dim=1)
        radii = torch.zeros(nb, device=device, dtype=xs.dtype).scatter_reduce_(0, bt, dist, "amax")
        radii = radii * (1 + 1e-5) + 1e-6  # float32 rounding must not turn the bound into an underestimate
        # graph (rows in block order)
        knn = np.full((n, 0), -1, np.int32)
        if config.knn > 0:
            knn = _key_knn(xs_p, cents, blk_ptr, config.knn, config.knn_probe)
            if qa:
                inv = np.empty(n, np.int64)
                inv[order] = np.arange(n)
                _, top = exact_topk(qx, x, config.roar_topk)
                knn = _roar_graph(inv[top.cpu().numpy()], knn, config.knn)
        arrays = {
            "keys": np.ascontiguousarray(x[order_t].cpu().numpy()),
            "blk_ptr": blk_ptr,
            "key_blk": blk_sorted.astype(np.int32),
            "cents": np.ascontiguousarray(cents.cpu().numpy()),
            "radii": radii.cpu().numpy().astype(np.float32),
            "knn": np.ascontiguousarray(knn),
            "row_ids": row_ids[order],
            "transform": np.ascontiguousarray(torch.linalg.inv(transform.double()).T.float().cpu().numpy()),
        }
        stats = {"n_keys": n, "n_blocks": nb, "query_aware": bool(qa),
                 "n_build_queries": 0 if qx is None else int(qx.shape[0])}
        return cls(arrays, config, stats)

    # ------------------------------------------------------------------ search
    def _scratch(self, rows: int, nq: int):
        """Per-thread stamp arrays reused across calls (callers hold ``self._lock``): each query gets a fresh
        stamp, and the arrays are re-zeroed before the int32 stamp could wrap."""
        sc = getattr(self, "_scratch_arrays", None)
        if sc is None or sc[0].shape[0] < rows:
            sc = (np.zeros((rows, self.n_blocks), np.int32), np.zeros((rows, self.n_keys), np.int32),
                  np.zeros((rows, self.n_keys), np.int32))
            self._scratch_arrays, self._stamp = sc, 0
        if self._stamp + nq + 2 >= np.iinfo(np.int32).max:
            for a in sc:
                a[:] = 0
            self._stamp = 0
        return sc

    STATS = ("blocks_estimated", "blocks_visited", "keys_scored")

    def search(self, queries, k: int = 10, params: DenseSearchParams | None = None, **overrides) -> SearchResult:
        """Top-``k`` keys by inner product for each query row: `SearchResult` (nq, k), best first, padded with
        -inf / -1; ids are the build's ``ids`` (default: key rows). ``params`` (or keyword overrides:
        radius_factor, n_knn, refine_rounds, threads). ``last_stats`` then holds per-query counts of blocks
        estimated, blocks visited and keys scored."""
        if params is not None and not isinstance(params, DenseSearchParams):
            raise ConfigError(f"params must be a DenseSearchParams, got {type(params).__name__}")
        params = params if params is not None else DenseSearchParams()
        params = params.with_(**overrides) if overrides else params
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1")
        q = _as_matrix(queries, "queries", self.dim)
        nq = q.shape[0]
        qs = np.ascontiguousarray(q @ self.transform)
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        stats = np.zeros((nq, 3), np.int64)
        limit = numba.config.NUMBA_NUM_THREADS
        nt = min(params.threads or limit, limit, max(nq, 1))
        with self._lock:
            blk_seen, visited, expanded = self._scratch(nt, nq)
            stamp0 = np.int32(self._stamp)
            self._stamp += nq + 1
            args = (self.keys, self.blk_ptr, self.key_blk, self.cents, self.radii, self.knn, qs, q, k,
                    np.float32(params.radius_factor), params.n_knn, params.refine_rounds)
            if nt == 1:
                K.dense_search_serial(*args, blk_seen, visited, expanded, stamp0, out_s, out_i, stats)
            else:
                with numba_threads(nt):
                    K.dense_search_batch(*args, nt, blk_seen, visited, expanded, stamp0, out_s, out_i, stats)
            self.last_stats = {name: stats[:, j].copy() for j, name in enumerate(self.STATS)}
        ids = np.where(out_i >= 0, self.row_ids[np.maximum(out_i, 0)], -1)
        return SearchResult(out_s, ids)

    def info(self) -> dict:
        """A JSON-ready summary: kind, n_keys, dim, n_blocks, index_bytes, config, build_stats."""
        return {"kind": self.kind, "backend": "numba", "n_keys": self.n_keys, "dim": self.dim,
                "n_blocks": self.n_blocks, "index_bytes": self.nbytes(), "config": self.config.to_dict(),
                "build_stats": dict(self.build_stats)}


def _key_knn(xs_p, cents, blk_ptr, m: int, probe: int) -> np.ndarray:
    """Each key's ``m`` nearest keys (L2 in summary space, itself excluded) among the keys of the ``probe``
    blocks whose centroids are nearest to its own block's centroid. Rows in block order."""
    import torch

    n = xs_p.shape[0]
    nb = cents.shape[0]
    probe = min(probe, nb)
    near = torch.cdist(cents, cents).topk(probe, largest=False).indices.cpu().numpy()
    ptr = blk_ptr
    out = np.full((n, m), -1, np.int32)
    sq = (xs_p * xs_p).sum(1)
    for b in range(nb):
        a0, a1 = ptr[b], ptr[b + 1]
        if a1 == a0:
            continue
        cand = np.concatenate([np.arange(ptr[c], ptr[c + 1]) for c in near[b]])
        ct = torch.as_tensor(cand, device=xs_p.device)
        d = sq[ct][None, :] - 2.0 * xs_p[a0:a1] @ xs_p[ct].T
        own = torch.arange(a0, a1, device=xs_p.device)
        d[(ct[None, :] == own[:, None])] = float("inf")
        kk = min(m, cand.shape[0] - 1)
        if kk <= 0:
            continue
        nn = d.topk(kk, largest=False).indices.cpu().numpy()
        out[a0:a1, :kk] = cand[nn]
    return out


def _roar_graph(top: np.ndarray, key_knn: np.ndarray, m: int) -> np.ndarray:
    """RoarGraph-style projection of the query->key bipartite graph onto the keys: for each query, its best
    key <-> each of its other top keys, and each top key <-> the next one in the ranking. Neighbours ranked by the number of queries linking them; the free
    slots are filled from ``key_knn``. ``top`` (nq, t) holds key rows."""
    n = key_knn.shape[0]
    head = np.repeat(top[:, :1], top.shape[1] - 1, axis=1).ravel()
    rest = top[:, 1:].ravel()
    a, b = top[:, :-1].ravel(), top[:, 1:].ravel()  # consecutive ranks: a path through each query's list
    src = np.concatenate([head, rest, a, b])
    dst = np.concatenate([rest, head, b, a])
    keep = src != dst
    pair, cnt = np.unique(src[keep].astype(np.int64) * n + dst[keep], return_counts=True)
    s, d = pair // n, pair % n
    order = np.lexsort((-cnt, s))
    s, d = s[order], d[order]
    first = np.searchsorted(s, s, side="left")
    rank = np.arange(s.shape[0]) - first
    sel = rank < m
    out = np.full((n, m), -1, np.int32)
    out[s[sel], rank[sel]] = d[sel]
    # top up from the key graph: drop -1, self-links and repeats, keep the first m in order
    cand = np.concatenate([out, key_knn[:, :m]], axis=1).astype(np.int64)
    srt = np.argsort(cand, axis=1, kind="stable")
    sv = np.take_along_axis(cand, srt, axis=1)
    dup_s = np.zeros_like(sv, dtype=bool)
    dup_s[:, 1:] = sv[:, 1:] == sv[:, :-1]
    dup = np.empty_like(dup_s)
    np.put_along_axis(dup, srt, dup_s, axis=1)
    bad = dup | (cand < 0) | (cand == np.arange(n)[:, None])
    pos = np.where(bad, cand.shape[1], np.arange(cand.shape[1])[None, :])
    keep = np.argsort(pos, axis=1, kind="stable")[:, :m]
    res = np.take_along_axis(cand, keep, axis=1)
    res[np.take_along_axis(bad, keep, axis=1)] = -1
    return res.astype(np.int32)
