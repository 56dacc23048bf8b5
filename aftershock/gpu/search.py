"""The ``cuda`` backend: index arrays copied to the GPU once, batched search on the same contract as the CPU:
``search(queries, k=10, params=None, **overrides) -> SearchResult(scores, ids)``, shape (nq, k), padded
-inf / -1; statistics in ``last_stats`` (name -> per-query int64 array).

``GpuExactIndex``: exact top-k (tiled inverted-index scatter-add), from an ExactIndex or a SeismicIndex.
``GpuSeismicIndex``: batch-first blocked approximate search over a SeismicIndex's blocks and summaries.
Get them with ``load_index(path, backend="cuda")``, ``index.to("cuda")`` or ``aftershock.gpu.to_device(index)``.
Benchmark-only knobs are constructor arguments (``chunk``, ``stats``) or the private ``_search(..., stages=)``.
"""

from __future__ import annotations

import threading

import numpy as np

from aftershock.errors import BackendUnavailableError, ConfigError
from aftershock.gpu import kernels as GK
from aftershock.gpu import layout
from aftershock.index import SearchResult
from aftershock.index.backends import to_backend
from aftershock.seismic.config import SearchParams
from aftershock.seismic.index import BaseIndex


def cuda_available() -> bool:
    """True when Numba can run CUDA kernels here (a GPU with a driver, or the simulator)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure to load the driver means "not available"
        return False


def _require_cuda():
    if not hasattr(np, "row_stack"):  # numba-cuda <= 0.30 registers np.row_stack, which numpy 2.5 removed
        np.row_stack = np.vstack
    from numba import cuda

    if not cuda_available():
        raise BackendUnavailableError(
            "backend 'cuda' needs an NVIDIA GPU with a working driver and Numba's CUDA target "
            "(pip install 'aftershock[gpu]'); none was found. Search on the CPU (backend 'numba', the default), "
            "or set NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's (slow) simulator"
        )
    return cuda


class _GpuBase:
    """Shared query handling: validation (as the CPU index), upload, result download; the host index's
    vocabulary, ids, documents and info."""

    kind = "gpu"
    backend = "cuda"

    def __init__(self, host, tpb: int):
        self.cuda = _require_cuda()
        if tpb < 32 or tpb & (tpb - 1):
            raise ConfigError(f"tpb={tpb} threads per block must be a power of 2 >= 32")
        self.host = host
        self.dim = host.dim
        self.doc_ids = host.doc_ids
        self.vocab = host.vocab
        self.tpb = tpb
        self._scratch_cache: dict = {}
        self._lock = threading.Lock()
        self._qbuf = self._obuf = None
        self.last_stats: dict = {}
        self._device_bytes = 0

    def __len__(self) -> int:
        return self.n_docs

    def _check(self, queries, k):
        return BaseIndex._check_queries(self, queries, k)

    @staticmethod
    def _base_params(params, overrides: dict) -> SearchParams:
        return BaseIndex._params(params, overrides)

    def document(self, row: int):
        """The stored vector of document ``row`` (from the host index): (term ids int64, weights float32)."""
        return self.host.document(row)

    def nbytes(self) -> int:
        """Bytes of the index's arrays on the device."""
        return self._device_bytes

    def info(self) -> dict:
        return {**self.host.info(), "kind": self.kind, "backend": self.backend, "index_bytes": self.nbytes(),
                "host_kind": self.host.kind}

    def to(self, device: str = "cuda", **kw):
        """On "cuda": this index; on "cpu"/"numba": the host index it was copied from."""
        if device == "cuda" and not kw:
            return self
        return to_backend(self.host, device, **kw)

    def to_host(self):
        return self.host

    def _upload(self, queries):
        """One host-to-device copy from a pinned staging buffer into a persistent device buffer:
        [indptr | indices | values as int32 bits] -> three device views (no allocation per call)."""
        nq, nnz = len(queries), queries.nnz
        n = nq + 1 + 2 * nnz
        if self._qbuf is None or self._qbuf[0].shape[0] < n:
            cap = max(n, 1 << 16)
            self._qbuf = (self.cuda.pinned_array(cap, np.int32), self.cuda.device_array(cap, np.int32))
        host, dev = self._qbuf
        host[: nq + 1] = queries.indptr
        host[nq + 1: nq + 1 + nnz] = queries.indices
        host[nq + 1 + nnz: n] = np.ascontiguousarray(queries.values, np.float32).view(np.int32)
        d = dev[:n]
        d.copy_to_device(host[:n])
        return d[: nq + 1], d[nq + 1: nq + 1 + nnz], d[nq + 1 + nnz:].view(np.float32)

    def _scratch(self, key, make):
        arr = self._scratch_cache.get(key)
        if arr is None:
            if len(self._scratch_cache) > 8:
                self._scratch_cache.clear()
            arr = self._scratch_cache[key] = make()
        return arr

    def _outputs(self, nq, k):
        """Scores and ids share one device buffer (one copy back), reused across calls of the same shape."""
        buf = self._scratch(("out", nq, k), lambda: self.cuda.device_array((2, nq, k), np.int32))
        return buf, buf[1].view(np.float32), buf[0]

    def _result(self, buf) -> SearchResult:
        """Copy scores and ids back in one transfer (into pinned memory)."""
        n = buf.size
        if self._obuf is None or self._obuf.size < n:
            self._obuf = self.cuda.pinned_array(max(n, 1 << 14), np.int32)
        h = self._obuf[:n].reshape(buf.shape)
        buf.copy_to_host(h)
        return SearchResult(h[1].view(np.float32).copy(), h[0].astype(np.int64))


class GpuExactIndex(_GpuBase):
    """Exact top-k on the GPU: postings split into tiles of ``tile`` documents; one block per (query, tile)
    adds the query's postings of that tile into a shared-memory accumulator and keeps the tile's top k; the
    last block of a query merges the tiles. Documents scoring exactly 0 are not returned (weights are > 0,
    so they share no term with the query)."""

    kind = "exact-cuda"

    def __init__(self, host, tpb: int = 256, tile: int = 8192, chunk: int = 16384):
        super().__init__(host, tpb)
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ConfigError(f"chunk={chunk!r} queries per launch must be an integer >= 1 (default 16384)")
        inv_ptr, inv_docs, inv_vals, n_docs = layout.exact_source(host)
        arrays = layout.exact_layout(inv_ptr, inv_docs, inv_vals, n_docs, tile)
        self.n_docs = int(n_docs)
        self.tile = tile
        self.chunk = int(chunk)
        self.n_tiles = arrays.pop("n_tiles")
        self.postings_per_term = np.diff(np.asarray(inv_ptr))
        self.value_bytes = arrays["post_val"].dtype.itemsize
        self._device_bytes = int(sum(a.nbytes for a in arrays.values()))
        self.d = {name: self.cuda.to_device(a) for name, a in arrays.items()}
        self.kernel = GK.exact_kernel(tpb, tile)

    def bytes_per_query(self, queries) -> np.ndarray:
        """Bytes each query must read at least: its terms' postings (doc offset + value) and tile offsets."""
        per = self.postings_per_term[queries.indices] * (2 + self.value_bytes) + 16 * self.n_tiles
        return np.add.reduceat(per, queries.indptr[:-1]) * (np.diff(queries.indptr) > 0) if len(queries) else per

    def search(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        """Exact top-k per query (``params`` / overrides are validated for the common contract; exact search
        has no knobs)."""
        return self._search(queries, k, params, **overrides)

    def _search(self, queries, k: int = 10, params: SearchParams | None = None, stages: int = 3,
                **overrides) -> SearchResult:
        """``search`` with the benchmark knob ``stages`` (1: accumulate only, 2: + tile top-k, 3: full)."""
        self._base_params(params, overrides)
        queries = self._check(queries, k)
        nq = len(queries)
        if nq == 0:
            return SearchResult(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
        with self._lock:
            return self._result(self._launch(self._upload(queries), nq, k, self.chunk, stages))

    def _launch(self, dq, nq, k, chunk=16384, stages=3):
        """Queue the kernel over uploaded queries ``dq``; returns the output buffer (not yet copied back)."""
        q_ptr, q_idx, q_val = dq
        nc = min(nq, chunk)
        part_s, part_i, counter = self._scratch(("exact", nc, k), lambda: (
            self.cuda.device_array((nc, self.n_tiles * k), np.float32),
            self.cuda.device_array((nc, self.n_tiles * k), np.int32),
            self.cuda.to_device(np.zeros(nc, np.int32))))
        buf, d_s, d_i = self._outputs(nq, k)
        d = self.d
        for q0 in range(0, nq, nc):
            n = min(nc, nq - q0)
            self.kernel[(self.n_tiles, n), self.tpb](d["tile_ptr"], d["post_doc"], d["post_val"], self.n_tiles, q_ptr,
                                                     q_idx, q_val, q0, k, part_s, part_i, counter, d_s, d_i, stages)
        return buf


class GpuSeismicIndex(_GpuBase):
    """Blocked approximate search on the GPU (batch-first; see ``kernels.seismic_kernel``).

    Knobs: ``query_cut`` and ``heap_factor`` as on the CPU (lists of the heaviest query terms; blocks whose
    summary score is below heap_factor x the running k-th score are skipped), and ``first_blocks``: how many
    best-scoring blocks are rescored first to set that k-th score (the CPU refines it block by block; the
    GPU fixes it after this first round, then visits all remaining qualifying blocks in parallel).
    ``first_blocks`` is set here or passed to ``search`` as an override. ``stats=False`` skips copying the
    per-query work counters back (``last_stats`` stays empty; one device-to-host copy less per search).
    """

    kind = "seismic-cuda"
    MAX_Q = 1024
    MAX_CUT = 64
    MAX_BL = 1024

    STATS = ("blocks_scored", "summary_entries", "blocks_visited", "docs_scored", "fwd_entries", "postings_visited")

    def __init__(self, host, tpb: int = 256, group: int = 8, first_blocks: int = 16, memory_budget: int = 4 << 30,
                 stats: bool = True):
        super().__init__(host, tpb)
        self.keep_stats = bool(stats)
        if host.dim > 65536:
            raise ConfigError(f"the cuda backend handles dim <= 65536 (uint16 term ids); this index has dim {host.dim}")
        if tpb % group:
            raise ConfigError(f"group={group} must divide tpb={tpb}")
        arrays = layout.seismic_layout(host)
        self.n_docs = host.n_docs
        self.group = group
        self.first_blocks = first_blocks
        self.memory_budget = memory_budget
        self.dim_words = max(1, -(-host.dim // 32))
        tbp = arrays["term_blk_ptr"]
        self._blocks_desc = np.sort(np.diff(tbp))[::-1].astype(np.int64)
        self._docs_desc = np.sort(np.diff(arrays["blk_doc_ptr"][tbp]))[::-1].astype(np.int64)
        if self._blocks_desc.size and self._blocks_desc[0] > self.MAX_BL:
            raise ConfigError(f"a posting list has {self._blocks_desc[0]} blocks > {self.MAX_BL}, the cuda backend's "
                              "limit; build with a smaller centroid_fraction or n_postings")
        self.host_arrays = arrays
        dev = {name: arrays[name] for name in layout.SEISMIC_DEVICE_ARRAYS}
        self._device_bytes = int(sum(a.nbytes for a in dev.values()))
        self.d = {name: self.cuda.to_device(a) for name, a in dev.items()}
        self.kernel = GK.seismic_kernel(tpb, group, self.MAX_Q, self.dim_words, self.MAX_CUT, self.MAX_BL)

    def exact(self, **kw) -> GpuExactIndex:
        """Exact GPU search over the same documents (from the forward index)."""
        return GpuExactIndex(self.host, **kw)

    def _params(self, params, overrides):
        first_blocks = overrides.pop("first_blocks", None)
        params = self._base_params(params, overrides)
        fb = self.first_blocks if first_blocks is None else first_blocks
        if not isinstance(fb, (int, np.integer)) or fb < 1:
            raise ConfigError(f"first_blocks={fb!r} must be an integer >= 1 (try 16)")
        if params.query_cut > self.MAX_CUT:
            raise ConfigError(f"query_cut={params.query_cut} exceeds the cuda backend's limit {self.MAX_CUT}")
        if params.n_knn:
            raise ConfigError(f"n_knn={params.n_knn}: the cuda backend has no k-NN refinement; search with n_knn=0")
        return params, int(fb)

    def search(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        """Top-k per query; ``params`` or overrides: query_cut, heap_factor, first_blocks (n_knn must be 0).
        The per-query work counters land in ``last_stats`` (unless built with ``stats=False``)."""
        return self._search(queries, k, params, **overrides)

    def _search(self, queries, k: int = 10, params: SearchParams | None = None, stages: int = 3,
                stats: bool | None = None, **overrides) -> SearchResult:
        """``search`` with the benchmark knobs ``stages`` (1: summary scores only, 2: + phase A, 3: full) and
        ``stats`` (None: as constructed)."""
        params, first_blocks = self._params(params, dict(overrides))
        queries = self._check(queries, k)
        keep = self.keep_stats if stats is None else stats
        nq = len(queries)
        if nq == 0:
            self.last_stats = {name: np.zeros(0, np.int64) for name in self.STATS} if keep else {}
            return SearchResult(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
        longest = int(np.diff(queries.indptr).max())
        if longest > self.MAX_Q:
            raise ConfigError(f"a query has {longest} terms > {self.MAX_Q}, the cuda backend's limit; "
                              "keep each query's heaviest terms (SPLADE queries rarely exceed a few hundred)")
        cut = params.query_cut
        cap_b = max(1, int(self._blocks_desc[:cut].sum()))
        cap_d = max(1, int(self._docs_desc[:cut].sum()))
        words = GK.n_words(self.n_docs)
        per_query = cap_b * 8 + words * 4 + cap_d * 12
        nc = int(max(1, min(nq, self.memory_budget // per_query, 65535)))
        c = self.cuda
        blk_score, blk_id, visited, todo, cand_s, cand_i = self._scratch(("seismic", nc, cap_b, cap_d), lambda: (
            c.device_array((nc, cap_b), np.float32), c.device_array((nc, cap_b), np.int32),
            c.device_array((nc, words), np.uint32), c.device_array((nc, cap_d), np.int32),
            c.device_array((nc, cap_d), np.float32), c.device_array((nc, cap_d), np.int32)))
        with self._lock:
            buf, d_s, d_i = self._outputs(nq, k)
            st = self._scratch(("stats", nq), lambda: c.device_array((nq, 6), np.int64))
            q_ptr, q_idx, q_val = self._upload(queries)
            d = self.d
            for q0 in range(0, nq, nc):
                n = min(nc, nq - q0)
                self.kernel[n, self.tpb](q_ptr, q_idx, q_val, q0, d["term_blk_ptr"], d["blk_doc_ptr"], d["blk_docs"],
                                         d["fwd_ptr"], d["fwd_idx"], d["fwd_val"], d["comp_list_ptr"], d["comp_ids"],
                                         d["comp_ent_ptr"], d["ent_blk"], d["ent_code"], d["sum_min"],
                                         d["sum_step"], k, cut,
                                         np.float32(params.heap_factor), first_blocks, blk_score, blk_id, visited, todo,
                                         cand_s, cand_i, d_s, d_i, st, stages)
            res = self._result(buf)
            self.last_stats = self._stats_dict(st.copy_to_host()) if keep else {}
        return res

    def _stats_dict(self, st: np.ndarray) -> dict:
        return {name: np.ascontiguousarray(st[:, j], dtype=np.int64) for j, name in enumerate(self.STATS)}

    def bytes_touched(self) -> np.ndarray:
        """Per query of the last search: bytes its kernel had to read (summaries, block lists, forward rows)."""
        st = self.last_stats
        if not st:
            raise ConfigError("bytes_touched needs the last search's statistics; search with an index built "
                              "with stats=True (the default)")
        sb = self.host_arrays["ent_blk"].dtype.itemsize + 1
        vb = self.host_arrays["fwd_val"].dtype.itemsize + self.host_arrays["fwd_idx"].dtype.itemsize
        return (st["blocks_scored"] * (8 + 8 + 16) + st["summary_entries"] * sb + st["blocks_visited"] * 16
                + st["postings_visited"] * 4 + st["fwd_entries"] * vb + st["docs_scored"] * 16)

    def reference(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        """The same algorithm on the CPU (``aftershock.gpu.reference``, one thread), on the same arrays;
        its work counters land in ``last_stats`` as a search's do."""
        from aftershock.gpu.reference import blocked_search

        params, first_blocks = self._params(params, dict(overrides))
        queries = self._check(queries, k)
        a = self.host_arrays
        nq = len(queries)
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        stats = np.zeros((nq, 6), np.int64)
        if nq:
            blocked_search(queries.indptr, queries.indices, queries.values, a["term_blk_ptr"], a["blk_doc_ptr"],
                           a["blk_docs"], a["fwd_ptr"], a["fwd_idx"], a["fwd_val"].astype(np.float32), a["sum_ptr"],
                           a["sum_idx"], a["sum_code"], a["sum_min"], a["sum_step"], self.dim, self.n_docs, k,
                           params.query_cut, np.float32(params.heap_factor), first_blocks, self.group, 1, out_s,
                           out_i, stats)
        self.last_stats = self._stats_dict(stats)
        return SearchResult(out_s, out_i)


def to_device(index, device: str = "cuda", **kw):
    """The GPU counterpart of a CPU index: ExactIndex -> GpuExactIndex, SeismicIndex -> GpuSeismicIndex."""
    if device != "cuda":
        raise ConfigError(f"device={device!r}; the GPU backend knows 'cuda'")
    if isinstance(index, _GpuBase):
        return index if not kw else to_device(index.host, device, **kw)
    if getattr(index, "kind", None) == "exact":
        return GpuExactIndex(index, **kw)
    if getattr(index, "kind", None) == "seismic":
        return GpuSeismicIndex(index, **kw)
    raise ConfigError(f"cannot move a {type(index).__name__} to cuda; build an ExactIndex or SeismicIndex")
