"""Index classes: `ExactIndex` (ground truth) and `SeismicIndex` (blocked, summarized, approximate).

Both answer ``search(queries, k, params) -> SearchResult(scores, ids)`` with shape (nq, k), best first,
padded with -inf / -1, rows in the order of the queries. ``ids`` are row numbers in the index;
``index.doc_ids[row]`` gives the external id.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np

from aftershock.errors import ConfigError, IndexFormatError, TermIdOutOfRangeError
from aftershock.index import SearchResult, SparseBatch, Vocabulary, load_dir, save_dir
from aftershock.index.backends import resolve_backend, to_backend
from aftershock.seismic import kernels as K
from aftershock.seismic.config import SearchParams, SeismicConfig


def _threads(threads: int | None) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return limit
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(f"threads={threads!r} must be an integer >= 1 (or None for all {limit} cores)")
    return min(int(threads), limit)


@contextmanager
def _numba_threads(n: int | None = None):
    """Run the block with ``n`` Numba threads (None: as the block sets them), then restore the caller's count."""
    prev = numba.get_num_threads()
    if n is not None and n != prev:
        numba.set_num_threads(n)
    try:
        yield
    finally:
        if numba.get_num_threads() != prev:
            numba.set_num_threads(prev)


def _term_dtype(dim: int):
    return np.uint16 if dim <= 65536 else np.uint32


def _drop_zeros(docs: SparseBatch) -> SparseBatch:
    keep = docs.values > 0
    counts = np.add.reduceat(keep.astype(np.int64), docs.indptr[:-1]) if len(docs) else np.zeros(0, np.int64)
    counts[np.diff(docs.indptr) == 0] = 0
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SparseBatch(indptr, docs.indices[keep], docs.values[keep], docs.ids, docs.dim, docs.vocab)


def _summaries(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, dim, energy, nt, tdt,
               slot_budget: int = 1 << 25) -> dict:
    """Quantized summary per block, in one parallel pass over runs of blocks: a block's summary has at most
    as many entries as its documents have non-zeros, so each run is written into slots of that size
    (about ``slot_budget`` entries per run), then compacted."""
    nb = blk_doc_ptr.shape[0] - 1
    e = np.float32(energy)
    bound = np.diff(fwd_ptr)[blk_docs].astype(np.int64)
    bound = np.add.reduceat(bound, blk_doc_ptr[:-1].astype(np.int64)) if nb else np.zeros(0, np.int64)
    counts = np.zeros(nb, np.int64)
    sum_min = np.empty(nb, np.float32)
    sum_step = np.empty(nb, np.float32)
    parts_idx, parts_codes = [], []
    b_lo = 0
    cum = np.cumsum(bound)
    while b_lo < nb:
        base = cum[b_lo - 1] if b_lo else 0
        b_hi = max(b_lo + 1, int(np.searchsorted(cum, base + slot_budget, side="right")))
        slot_ptr = np.concatenate([[0], np.cumsum(bound[b_lo:b_hi])]).astype(np.int64)
        tmp_idx = np.empty(slot_ptr[-1], tdt)
        tmp_codes = np.empty(slot_ptr[-1], np.uint8)
        K.summary_fill(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, K.F16_LUT, dim, e, nt, b_lo, b_hi,
                       slot_ptr, tmp_idx, tmp_codes, counts, sum_min, sum_step)
        n = int(counts[b_lo:b_hi].sum())
        out_idx, out_codes = np.empty(n, tdt), np.empty(n, np.uint8)
        K.compact_slots(slot_ptr, counts[b_lo:b_hi], tmp_idx, tmp_codes, out_idx, out_codes)
        parts_idx.append(out_idx)
        parts_codes.append(out_codes)
        b_lo = b_hi
    sum_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return dict(sum_ptr=sum_ptr, sum_idx=np.concatenate(parts_idx) if parts_idx else np.zeros(0, tdt),
                sum_codes=np.concatenate(parts_codes) if parts_codes else np.zeros(0, np.uint8),
                sum_min=sum_min, sum_step=sum_step)


def _transpose_summaries(term_blk_ptr, sums: dict, dim, nt, tdt) -> dict:
    """Store each list's summaries component-major, so a query touches only the entries of its own terms."""
    sum_ptr = sums["sum_ptr"]
    ncomp, nent, novf = K.summary_layout_counts(term_blk_ptr, sum_ptr, sums["sum_idx"], dim, nt)

    def offsets(counts):
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    out = dict(comp_list_ptr=offsets(ncomp), ovf_list_ptr=offsets(novf), ent_list_ptr=offsets(nent))
    n_comp, n_ovf, n_ent = (int(out[f"{x}_list_ptr"][-1]) for x in ("comp", "ovf", "ent"))
    out.update(comp_ids=np.empty(n_comp, tdt), comp_cnt=np.empty(n_comp, np.uint8), ovf_cnt=np.empty(n_ovf, np.uint32),
               ent_delta=np.empty(n_ent, np.uint8), ent_code=np.empty(n_ent, np.uint8), sum_min=sums["sum_min"],
               sum_step=sums["sum_step"])
    K.summary_transpose(term_blk_ptr, sum_ptr, sums["sum_idx"], sums["sum_codes"], dim, nt, out["comp_list_ptr"],
                        out["ovf_list_ptr"], out["ent_list_ptr"], out["comp_ids"], out["comp_cnt"], out["ovf_cnt"],
                        out["ent_delta"], out["ent_code"])
    return out


class BaseIndex:
    """What every CPU index offers: the one search contract
    ``search(queries, k=10, params=None, **overrides) -> SearchResult`` (ids are row numbers, padded -inf / -1),
    ``last_stats`` (name -> per-query int64 array of the last search; empty when the index keeps none), the
    documents through ``document(row)``, a summary through ``info()``, ``vocab``, ``doc_ids``, ``dim``,
    ``n_docs``, persistence (``save`` / `load_index`) and ``to(backend)``."""

    kind = "base"
    backend = "numba"

    doc_ids: np.ndarray
    dim: int
    vocab: Vocabulary | None

    def __len__(self) -> int:
        return self.n_docs

    @property
    def n_docs(self) -> int:
        raise NotImplementedError

    def search(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        raise NotImplementedError

    @property
    def last_stats(self) -> dict:
        """Work counters of the last search: name -> per-query int64 array (empty: this index keeps none)."""
        return {}

    @staticmethod
    def _params(params: SearchParams | None, overrides: dict) -> SearchParams:
        """``params`` (default `SearchParams()`) with ``overrides`` applied (unknown names -> ConfigError)."""
        if params is not None and not isinstance(params, SearchParams):
            raise ConfigError(f"params must be a SearchParams, got {type(params).__name__}; pass "
                              "SearchParams(query_cut=..., heap_factor=...) or keyword overrides")
        params = params if params is not None else SearchParams()
        return params.with_(**overrides) if overrides else params

    def _check_queries(self, queries, k) -> SparseBatch:
        if not isinstance(queries, SparseBatch):
            import scipy.sparse as sp

            if sp.issparse(queries):
                queries = SparseBatch.from_scipy(queries, what="queries")
            else:
                raise ConfigError(f"queries must be a SparseBatch or a scipy sparse matrix, got {type(queries).__name__};"
                                  " build one with SparseBatch.from_rows/from_dicts")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1")
        if queries.nnz and int(queries.indices.max()) >= self.dim:
            bad = int(queries.indices.max())
            raise TermIdOutOfRangeError(
                f"a query has term id {bad} >= the index's dim {self.dim}; encode queries with the vocabulary "
                "the index was built with"
            )
        return queries

    @staticmethod
    def _empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)

    # ------------------------------------------------------------------ what other rooms may read
    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored vector of document ``row``: (term ids int64 ascending, weights float32 as stored)."""
        raise NotImplementedError

    def _check_row(self, row) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.n_docs:
            raise ConfigError(f"row={row!r} must be an integer in [0, {self.n_docs}); map an external id with "
                              "list(index.doc_ids).index(id)")
        return int(row)

    def info(self) -> dict:
        """A JSON-ready summary: kind, backend, n_docs, dim, vocab_size, index_bytes, config, build_stats."""
        return {"kind": self.kind, "backend": self.backend, "n_docs": int(self.n_docs), "dim": int(self.dim),
                "vocab_size": len(self.vocab) if self.vocab is not None else None, "index_bytes": self.nbytes(),
                "config": {}, "build_stats": {}}

    # ------------------------------------------------------------------ persistence
    def _meta_common(self) -> dict:
        return {"kind": self.kind, "n_docs": self.n_docs, "dim": self.dim}

    def _common_arrays(self) -> dict:
        return {"doc_ids": np.asarray(self.doc_ids.astype(str))}

    def _extra_files(self) -> dict:
        return {"vocab.json": json.dumps(self.vocab.tokens, ensure_ascii=False).encode()} if self.vocab else {}

    @staticmethod
    def _load_vocab(path: Path) -> Vocabulary | None:
        f = path / "vocab.json"
        return Vocabulary(json.loads(f.read_text(encoding="utf-8"))) if f.exists() else None

    def nbytes(self) -> int:
        """Bytes of all the index's arrays (what `save` writes, ids included)."""
        return int(sum(np.asarray(a).nbytes for a in self._arrays().values()))

    def _arrays(self) -> dict:
        raise NotImplementedError

    def to(self, device: str = "cuda", **kw):
        """This index on backend ``device``: "cpu"/"numba" returns it as is; "cuda" copies its arrays to the GPU
        once and returns an index with the same ``search`` contract (see `aftershock.index.backends`)."""
        return to_backend(self, device, **kw)

    def to_host(self):
        """The CPU index (itself)."""
        return self

    def save(self, path) -> Path:
        """Write the index atomically to directory ``path`` (replacing any index there)."""
        return save_dir(path, {**self._arrays(), **self._common_arrays()}, self._meta(), self._extra_files())


class ExactIndex(BaseIndex):
    """Exhaustive inner-product search over an inverted index (multi-threaded Numba): the ground truth.

    ``search`` takes `SearchParams` for the common contract; only ``threads`` matters (no approximation)."""

    kind = "exact"

    def __init__(self, inv_ptr, inv_docs, inv_vals, n_docs: int, dim: int, doc_ids, vocab=None):
        self.inv_ptr, self.inv_docs, self.inv_vals = inv_ptr, inv_docs, inv_vals
        self._n = int(n_docs)
        self.dim = int(dim)
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self.vocab = vocab
        self._fwd = None
        self._fwd_lock = threading.Lock()

    @property
    def n_docs(self) -> int:
        return self._n

    @classmethod
    def build(cls, docs: SparseBatch) -> "ExactIndex":
        csc = docs.to_scipy().tocsc()
        csc.sort_indices()
        return cls(csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data.astype(np.float32),
                   len(docs), docs.dim, docs.ids, docs.vocab)

    def search(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        """Exact top-k per query; ``params`` / overrides: only ``threads`` (None = all cores) applies."""
        params = self._params(params, overrides)
        queries = self._check_queries(queries, k)
        nt = _threads(params.threads)
        out_s, out_i = self._empty_result(len(queries), k)
        if len(queries):
            with _numba_threads(nt):
                K.exact_search_batch(self.inv_ptr, self.inv_docs, self.inv_vals, self._n, queries.indptr,
                                     queries.indices, queries.values, k, nt, out_s, out_i)
        return SearchResult(out_s, out_i)

    def _forward(self):
        """The document-major copy of the inverted index (built on first use, then kept)."""
        if self._fwd is None:
            with self._fwd_lock:
                if self._fwd is None:
                    import scipy.sparse as sp

                    csr = sp.csc_matrix((np.asarray(self.inv_vals), np.asarray(self.inv_docs),
                                         np.asarray(self.inv_ptr)), shape=(self._n, self.dim)).tocsr()
                    csr.sort_indices()
                    self._fwd = (csr.indptr.astype(np.int64), csr.indices.astype(np.int64),
                                 csr.data.astype(np.float32))
        return self._fwd

    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        row = self._check_row(row)
        ptr, idx, val = self._forward()
        a, b = ptr[row], ptr[row + 1]
        return idx[a:b].copy(), val[a:b].copy()

    def _arrays(self):
        return {"inv_ptr": self.inv_ptr, "inv_docs": self.inv_docs, "inv_vals": self.inv_vals}

    def _meta(self):
        return self._meta_common()

    @classmethod
    def _from_arrays(cls, arrays, meta, vocab):
        return cls(arrays["inv_ptr"], arrays["inv_docs"], arrays["inv_vals"], meta["n_docs"], meta["dim"],
                   arrays["doc_ids"], vocab)


class SeismicIndex(BaseIndex):
    """Seismic (Bruch et al., SIGIR 2024): pruned posting lists split into clustered blocks, each with a
    quantized summary; a query visits blocks best-first, skipping those whose summary score is below
    ``heap_factor`` x the k-th best score so far, and rescoring documents from the forward index.

    Arrays (all flat, memory-mappable): forward index ``fwd_ptr/fwd_idx/fwd_val`` (term ids uint16 when
    dim <= 65536 else uint32; values float16 bits or float32); blocks ``term_blk_ptr`` (term -> blocks),
    ``blk_doc_ptr/blk_docs`` (block -> doc rows); summaries stored component-major per posting list:
    ``comp_list_ptr`` (term -> its list's summary terms), ``comp_ids`` (those terms, ascending),
    ``comp_cnt`` (uint8 entries per summary term; 255 means "read the list's next ``ovf_cnt``", located by
    ``ovf_list_ptr``), ``ent_list_ptr`` (term -> its list's entries), ``ent_delta`` (uint8 gap to the previous
    block holding that term; 0 = skip 255 blocks, no entry), ``ent_code`` (uint8 code); value =
    ``sum_min[b] + code * sum_step[b]``. A query scans each selected list's summary terms against its dense
    vector, so it touches only the summary entries of its own terms. ``knn`` is the (n_docs, knn)
    neighbour graph, -1 padded.
    """

    kind = "seismic"
    ARRAYS = ("fwd_ptr", "fwd_idx", "fwd_val", "term_blk_ptr", "blk_doc_ptr", "blk_docs", "comp_list_ptr",
              "comp_ids", "comp_cnt", "ovf_list_ptr", "ovf_cnt", "ent_list_ptr", "ent_delta", "ent_code",
              "sum_min", "sum_step", "knn")

    def __init__(self, arrays: dict, dim: int, doc_ids, config: SeismicConfig, vocab=None, build_stats=None):
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])
        self.dim = int(dim)
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self.config = config
        self.vocab = vocab
        self.build_stats = build_stats or {}
        self.max_blocks = int(np.diff(self.term_blk_ptr).max()) if self.term_blk_ptr.shape[0] > 1 else 0
        self._lock = threading.Lock()

    @property
    def n_docs(self) -> int:
        return self.fwd_ptr.shape[0] - 1

    @property
    def n_blocks(self) -> int:
        return self.blk_doc_ptr.shape[0] - 1

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, docs: SparseBatch, config: SeismicConfig | None = None, threads: int | None = None,
              progress: bool = False, **overrides) -> "SeismicIndex":
        """Build from a `SparseBatch`; ``overrides`` replace fields of ``config`` (e.g. ``n_postings=2000``)."""
        config = (config or SeismicConfig()).with_(**overrides) if overrides else (config or SeismicConfig())
        nt = _threads(threads)
        numba.set_num_threads(nt)
        stats: dict = {}
        steps = ["forward index", "pruning", "blocking", "summaries"] + (["knn graph"] if config.knn else [])
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(steps), desc="build", unit="step")

        def step(name, t0):
            stats[f"{name.replace(' ', '_')}_s"] = round(time.perf_counter() - t0, 3)
            if bar is not None:
                bar.set_postfix_str(name)
                bar.update(1)
            return time.perf_counter()

        t_all = t = time.perf_counter()
        if docs.nnz and not np.all(docs.values > 0):
            docs = _drop_zeros(docs)  # explicit zeros add nothing to a score; kernels treat 0 as "absent"
        n, dim = len(docs), docs.dim
        tdt = _term_dtype(dim)
        fwd_ptr = docs.indptr.astype(np.int64)
        fwd_idx = docs.indices.astype(tdt)
        if config.value_dtype == "float16":
            if docs.nnz and float(docs.values.max()) > 65504.0:
                raise ConfigError(f"a weight of {float(docs.values.max())} overflows float16 (max 65504); "
                                  "build with value_dtype='float32'")
            fwd_val = docs.values.astype(np.float16).view(np.uint16)
        else:
            fwd_val = docs.values.astype(np.float32)
        lut = K.F16_LUT
        t = step("forward index", t)

        # posting lists (term -> docs, weights); weights as stored (so pruning sees the forward values)
        import scipy.sparse as sp

        stored = fwd_val.view(np.float16).astype(np.float32) if config.value_dtype == "float16" else fwd_val
        csc = sp.csc_matrix(sp.csr_matrix((stored, docs.indices, fwd_ptr), shape=(n, dim)))
        csc.sort_indices()
        inv_ptr, inv_docs, inv_vals = csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data
        lens = np.diff(inv_ptr)
        if config.pruning == "none":
            threshold, cap = -np.inf, np.iinfo(np.int64).max
        elif config.pruning == "fixed":
            threshold, cap = -np.inf, config.n_postings
        else:
            budget = config.n_postings * int(np.count_nonzero(lens))
            cap = max(1, int(config.max_fraction * config.n_postings))
            if budget >= inv_vals.shape[0]:
                threshold = -np.inf
            else:
                threshold = float(np.partition(inv_vals, inv_vals.shape[0] - budget)[inv_vals.shape[0] - budget])
        counts = K.prune_count(inv_ptr, inv_vals, np.float32(threshold), np.int64(min(cap, 2**62)))
        post_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        post_docs = np.empty(post_ptr[-1], np.int32)
        post_vals = np.empty(post_ptr[-1], np.float32)
        K.prune_fill(inv_ptr, inv_docs, inv_vals, np.float32(threshold), post_ptr, post_docs, post_vals)
        del csc, inv_docs, inv_vals, post_vals
        stats["postings"] = int(post_ptr[-1])
        t = step("pruning", t)

        # blocking by clustering, longest lists first for load balance
        cut_len = np.minimum(np.diff(fwd_ptr), config.doc_cut)
        cut_ptr = np.concatenate([[0], np.cumsum(cut_len)]).astype(np.int64)
        cut_idx = np.empty(cut_ptr[-1], np.int32)
        cut_val = np.empty(cut_ptr[-1], np.float32)
        K.doc_cut_arrays(fwd_ptr, fwd_idx, fwd_val, lut, config.doc_cut, cut_ptr, cut_idx, cut_val)
        order = np.argsort(-np.diff(post_ptr), kind="stable").astype(np.int64)
        blk_docs = np.empty(post_ptr[-1], np.uint32)
        blk_sizes = np.zeros(post_ptr[-1], np.int64)
        n_blocks = np.zeros(dim, np.int64)
        kmeans = config.kmeans_iterations if config.clustering == "kmeans" else 0
        K.block_lists(post_ptr, post_docs, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val, dim,
                      config.centroid_fraction, config.min_cluster_size, kmeans, config.max_block_size, config.seed,
                      order, nt, blk_docs, blk_sizes, n_blocks)
        term_blk_ptr = np.concatenate([[0], np.cumsum(n_blocks)]).astype(np.int64)
        starts = np.repeat(post_ptr[:-1], n_blocks)
        sizes = blk_sizes[starts + (np.arange(term_blk_ptr[-1]) - np.repeat(term_blk_ptr[:-1], n_blocks))]
        blk_doc_ptr = np.concatenate([[0], np.cumsum(sizes)])
        blk_doc_ptr = blk_doc_ptr.astype(np.uint32 if blk_doc_ptr[-1] < 2**32 else np.int64)
        del blk_sizes, post_docs, cut_idx, cut_val
        t = step("blocking", t)

        sums = _summaries(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, dim, config.summary_energy, nt, tdt)
        sums = _transpose_summaries(term_blk_ptr, sums, dim, nt, tdt)
        t = step("summaries", t)

        arrays = dict(fwd_ptr=fwd_ptr, fwd_idx=fwd_idx, fwd_val=fwd_val, term_blk_ptr=term_blk_ptr,
                      blk_doc_ptr=blk_doc_ptr, blk_docs=blk_docs, **sums, knn=np.zeros((n, 0), np.int32))
        index = cls(arrays, dim, docs.ids, config, docs.vocab, stats)
        if config.knn:
            index.build_knn(config.knn, threads=nt)
            t = step("knn graph", t)
        stats["blocks"] = index.n_blocks
        stats["build_s"] = round(time.perf_counter() - t_all, 3)
        if bar is not None:
            bar.close()
        return index

    def build_knn(self, knn: int, params: SearchParams | None = None, threads: int | None = None) -> None:
        """k-NN graph over the documents, found with this index itself (each doc is a query)."""
        if knn < 1:
            raise ConfigError(f"knn={knn} must be >= 1")
        docs = SparseBatch(self.fwd_ptr, self.fwd_idx.astype(np.int32),
                           self._decoded_values(), self.doc_ids, self.dim)
        params = params or SearchParams(query_cut=10, heap_factor=0.7)
        res = self._search_arrays(docs, knn + 1, params, _threads(threads), knn_graph=np.zeros((len(docs), 0), np.int32))
        graph = np.full((self.n_docs, knn), -1, np.int32)
        self_row = np.arange(self.n_docs)[:, None]
        for r in range(self.n_docs):  # drop the document itself, keep the order
            row = res.ids[r][(res.ids[r] >= 0) & (res.ids[r] != self_row[r, 0])][:knn]
            graph[r, : row.shape[0]] = row
        self.knn = graph
        self.config = self.config.with_(knn=knn)

    def _decoded_values(self) -> np.ndarray:
        v = np.asarray(self.fwd_val)
        return v.view(np.float16).astype(np.float32) if v.dtype == np.uint16 else v.astype(np.float32)

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        """Top-k per query. ``params`` (or keyword overrides: query_cut, heap_factor, n_knn, threads)."""
        params = self._params(params, overrides)
        queries = self._check_queries(queries, k)
        if params.n_knn and self.knn.shape[1] == 0:
            raise ConfigError(f"n_knn={params.n_knn} but this index has no k-NN graph; build it with knn>0 "
                              "(aftershock build --knn 10) or search with n_knn=0")
        nq, nt = len(queries), _threads(params.threads)
        if nq == 0:
            self._last_stats = np.zeros((0, len(self.STATS)), np.int64)
        if min(nq, nt) <= 1:  # the serial kernel leaves Numba's thread count alone
            return self._search_arrays(queries, k, params, nt)
        with _numba_threads():  # the batch kernel sets its own count; the caller's is restored
            return self._search_arrays(queries, k, params, nt)

    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Forward row ``row`` decoded: (term ids int64, weights float32 as stored, float16 ones widened)."""
        row = self._check_row(row)
        a, b = int(self.fwd_ptr[row]), int(self.fwd_ptr[row + 1])
        vals = np.asarray(self.fwd_val[a:b])
        vals = vals.view(np.float16).astype(np.float32) if vals.dtype == np.uint16 else vals.astype(np.float32)
        return np.asarray(self.fwd_idx[a:b]).astype(np.int64), vals

    def info(self) -> dict:
        return {**super().info(), "config": self.config.to_dict(), "build_stats": dict(self.build_stats),
                "n_blocks": self.n_blocks, "knn": int(self.knn.shape[1])}

    def _scratch(self, n_chunks: int):
        """Per-thread scratch reused across calls: a dense query, a visited bitset with the list of docs it
        marked, two block accumulators. Kernels leave every buffer zeroed, so nothing is cleared per call.
        Callers hold ``self._lock``."""
        sc = getattr(self, "_scratch_arrays", None)
        if sc is None or sc[0].shape[0] < n_chunks:
            nb = max(self.max_blocks, 1)
            sc = (np.zeros((n_chunks, self.dim), np.float32), np.zeros((n_chunks, (self.n_docs + 63) // 64), np.uint64),
                  np.zeros((n_chunks, max(self.n_docs, 1)), np.int32), np.zeros((n_chunks, nb), np.float32),
                  np.zeros((n_chunks, nb), np.float32))
            self._scratch_arrays = sc
        return sc

    def kernel_arrays(self) -> tuple:
        """The arrays the search kernels read, in their order (one tuple, so kernels take one argument)."""
        return (self.fwd_ptr, self.fwd_idx, self.fwd_val, K.F16_LUT, self.term_blk_ptr, self.blk_doc_ptr,
                self.blk_docs, self.comp_list_ptr, self.comp_ids, self.comp_cnt, self.ovf_list_ptr, self.ovf_cnt,
                self.ent_list_ptr, self.ent_delta, self.ent_code, self.sum_min, self.sum_step, self.knn)

    def block_summaries(self):
        """Every block's summary decoded to block-major CSR ``(ptr, terms int32, values float32)``: the
        dequantized values the kernels score with (an upper bound of the block's kept maxima)."""
        return K.decode_summaries(self.kernel_arrays(), self.n_blocks)

    def _search_arrays(self, queries: SparseBatch, k, params, nt, knn_graph=None) -> SearchResult:
        nq = len(queries)
        out_s, out_i = self._empty_result(nq, k)
        if nq == 0:
            return SearchResult(out_s, out_i)
        n_chunks = min(nt, nq)
        stats = np.zeros((nq, 3), np.int64)
        ix = self.kernel_arrays()
        if knn_graph is not None:
            ix = ix[:-1] + (knn_graph,)
        args = (ix, queries.indptr, queries.indices, queries.values, k, params.query_cut,
                np.float32(params.heap_factor), params.n_knn)
        with self._lock:
            scratch = self._scratch(n_chunks)
            if n_chunks == 1:
                K.seismic_search_serial(*args, out_s, out_i, stats, *scratch)
            else:
                numba.set_num_threads(nt)
                K.seismic_search_batch(*args, n_chunks, out_s, out_i, stats, *scratch)
        self._last_stats = stats
        return SearchResult(out_s, out_i)

    STATS = ("blocks_scored", "blocks_visited", "docs_scored")

    @property
    def last_stats(self) -> dict:
        """The last search's work counters, name -> per-query int64 array: summaries scored ("blocks_scored"),
        blocks visited, documents scored. Means: ``{k: float(v.mean()) for k, v in st.items()}``."""
        st = getattr(self, "_last_stats", None)
        if st is None:
            return {}
        return {name: np.ascontiguousarray(st[:, j], dtype=np.int64) for j, name in enumerate(self.STATS)}

    # ------------------------------------------------------------------ persistence
    def _arrays(self):
        return {name: getattr(self, name) for name in self.ARRAYS}

    def _meta(self):
        return {**self._meta_common(), "n_blocks": self.n_blocks, "config": self.config.to_dict(),
                "build_stats": self.build_stats}

    @classmethod
    def _from_arrays(cls, arrays, meta, vocab):
        missing = [a for a in cls.ARRAYS if a not in arrays]
        if missing:
            raise IndexFormatError(f"index is missing arrays {missing}; rebuild it")
        return cls(arrays, meta["dim"], arrays["doc_ids"], SeismicConfig.from_dict(meta.get("config", {})), vocab,
                   meta.get("build_stats"))


INDEX_KINDS = {"exact": ExactIndex, "seismic": SeismicIndex}


def load_index(path, backend: str = "numba", mmap: bool = True, verify: bool = True):
    """Open an index directory written by ``index.save`` (memory-mapped by default, checksums verified) on
    ``backend``: "numba" (the CPU), "cuda" (copied to the GPU once) or "auto" (cuda when available)."""
    backend = resolve_backend(backend)  # an unknown name fails before any file is read
    path = Path(path)
    arrays, meta = load_dir(path, mmap=mmap, verify=verify)
    kind = meta.get("kind")
    if kind not in INDEX_KINDS:
        raise IndexFormatError(f"{path}: unknown index kind {kind!r}; this Aftershock knows {sorted(INDEX_KINDS)}")
    return to_backend(INDEX_KINDS[kind]._from_arrays(arrays, meta, BaseIndex._load_vocab(path)), backend)
