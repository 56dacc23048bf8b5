"""Index classes: `ExactIndex` (ground truth) and `SeismicIndex` (blocked, summarized, approximate).

Both answer ``search(queries, k, params) -> SearchResult(scores, ids)`` with shape (nq, k), best first,
padded with -inf / -1, rows in the order of the queries. ``ids`` are row numbers in the index;
``index.doc_ids[row]`` gives the external id.
"""

from __future__ import annotations

import json
import threading
from contextlib import nullcontext
from pathlib import Path

import numba
import numpy as np

from aftershock.errors import ConfigError, FormatError, IndexCorruptError, IndexFormatError
from aftershock.index import SearchResult, SparseBatch, Vocabulary, save_dir
from aftershock.index.backends import resolve_backend, to_backend
from aftershock.index.checks import check_build_input
from aftershock.index.checks import check_search_input
from aftershock.index.limits import check_k, check_memory
from aftershock.index.store import open_dir
from aftershock.seismic import kernels as K
from aftershock.seismic.build import build_seismic
from aftershock.seismic.checks import check_exact, check_seismic
from aftershock.seismic.config import SearchParams, SeismicConfig


_WORKQUEUE_LOCK = threading.Lock()
_NO_FILTER = np.zeros(0, np.uint8)  # the kernels' "every row allowed"


def _parallel_guard():
    """Concurrent parallel kernel launches are safe on the OpenMP and TBB threading layers; Numba's fallback
    "workqueue" layer aborts on them, so there (or before the layer is known) launches take turns."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return _WORKQUEUE_LOCK
    return _WORKQUEUE_LOCK if layer == "workqueue" else nullcontext()


def _threads(threads: int | None) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return limit
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(f"threads={threads!r} must be an integer >= 1 (or None for all {limit} cores)")
    return min(int(threads), limit)


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
        queries = check_search_input(queries, k, self.dim)
        check_k(k, len(queries), self.n_docs)
        return queries

    @staticmethod
    def _empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)

    @staticmethod
    def _matched(out_s: np.ndarray, out_i: np.ndarray) -> SearchResult:
        """The result without score-0 entries: a document that shares no weighted term with the query is no
        hit (an all-zero query matches nothing, instead of k arbitrary documents). Scores are >= 0, so the
        zeros are the tail of each row, which becomes padding."""
        unmatched = (out_s <= 0) & (out_i >= 0)
        if unmatched.any():
            out_s[unmatched] = -np.inf
            out_i[unmatched] = -1
        return SearchResult(out_s, out_i)

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
        return {"kind": self.kind, "n_docs": self.n_docs, "dim": self.dim,
                "vocab_size": len(self.vocab) if self.vocab is not None else None}

    def _common_arrays(self) -> dict:
        return {"doc_ids": np.asarray(self.doc_ids.astype(str))}

    def _extra_files(self) -> dict:
        return {"vocab.json": json.dumps(self.vocab.tokens, ensure_ascii=False).encode()} if self.vocab else {}

    @staticmethod
    def _load_vocab(raw: bytes | None, dim: int, where) -> Vocabulary | None:
        """The stored vocabulary (the bytes the loader verified), a JSON list of ``dim`` distinct strings."""
        if raw is None:
            return None
        try:
            tokens = json.loads(raw.decode("utf-8"))
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens) or len(tokens) != dim:
                raise ValueError(f"not a list of {dim} strings")
            return Vocabulary(tokens)
        except (ValueError, RecursionError, FormatError) as e:
            raise IndexCorruptError(f"{where}: vocab.json is not a vocabulary of dim={dim} tokens ({e}); the index is "
                                    "damaged: rebuild it") from None

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

    def save(self, path, overwrite: bool = False, protect=(), lock_timeout: float = 0.0) -> Path:
        """Write the index to directory ``path`` as a new generation (readers see the old or the new one, never
        a mix, also across a crash). An existing path is replaced only when it is an Aftershock index (or
        empty); a folder of other files or a plain file needs ``overwrite=True``; the paths in ``protect``
        (the inputs) are never replaced. Concurrent writers of one path: the second gets `IndexBusyError`
        (or waits up to ``lock_timeout`` seconds). See `aftershock.index.store`."""
        return save_dir(path, {**self._arrays(), **self._common_arrays()}, self._meta(), self._extra_files(),
                        overwrite=overwrite, protect=protect, lock_timeout=lock_timeout)


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
    def build(cls, docs: SparseBatch, max_terms_per_doc: int | None = None) -> "ExactIndex":
        """The inverted index of ``docs``; ids must be unique and printable, and no document may hold more than
        ``max_terms_per_doc`` terms (default 4096, see `aftershock.index.limits`)."""
        check_build_input(docs, max_terms_per_doc)
        check_memory(16.0 * docs.nnz + 8.0 * docs.dim, f"an exact index over {docs.nnz} non-zeros",
                     "build from fewer documents")
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
            check_memory(min(nt, len(queries)) * 13.0 * self._n, f"exact search scratch for {nt} threads over "
                         f"{self._n} docs", "search with fewer threads")
            with _parallel_guard(), K.numba_threads(nt):
                K.exact_search_batch(self.inv_ptr, self.inv_docs, self.inv_vals, self._n, queries.indptr,
                                     queries.indices, queries.values, k, nt, out_s, out_i)
        return self._matched(out_s, out_i)

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

    check_structure = staticmethod(check_exact)


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
    ARRAYS = tuple(name for name in K.SeismicArrays._fields if name != "lut")  # what save/load write and read

    def __init__(self, arrays: dict, dim: int, doc_ids, config: SeismicConfig, vocab=None, build_stats=None):
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])
        self.dim = int(dim)
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self.config = config
        self.vocab = vocab
        self.build_stats = build_stats or {}
        self.max_blocks = int(np.diff(self.term_blk_ptr).max()) if self.term_blk_ptr.shape[0] > 1 else 0
        self._pool_lock = threading.Lock()  # guards only the free list of scratch sets, never a search
        self._free_scratch: list = []

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
        check_build_input(docs, config.max_terms_per_doc)

        def knn_graph(arrays):
            return cls(arrays, docs.dim, docs.ids, config)._knn_graph(config.knn, None, nt)

        arrays, stats = build_seismic(docs, config, nt, progress, knn_graph)
        return cls(arrays, docs.dim, docs.ids, config, docs.vocab, stats)

    def build_knn(self, knn: int, params: SearchParams | None = None, threads: int | None = None) -> None:
        """k-NN graph over the documents, found with this index itself (each doc is a query)."""
        self.knn = self._knn_graph(knn, params, _threads(threads))
        self.config = self.config.with_(knn=knn)

    def _knn_graph(self, knn: int, params: SearchParams | None, nt: int) -> np.ndarray:
        if knn < 1:
            raise ConfigError(f"knn={knn} must be >= 1")
        docs = SparseBatch(self.fwd_ptr, self.fwd_idx.astype(np.int32),
                           self._decoded_values(), self.doc_ids, self.dim)
        params = params or SearchParams(query_cut=10, heap_factor=0.7)
        res = self._search_arrays(docs, knn + 1, params, nt, knn_graph=np.zeros((len(docs), 0), np.int32))
        graph = np.full((self.n_docs, knn), -1, np.int32)
        self_row = np.arange(self.n_docs)[:, None]
        for r in range(self.n_docs):  # drop the document itself, keep the order
            row = res.ids[r][(res.ids[r] >= 0) & (res.ids[r] != self_row[r, 0])][:knn]
            graph[r, : row.shape[0]] = row
        return graph

    def _decoded_values(self) -> np.ndarray:
        return K.decode_values(self.fwd_val)

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int = 10, params: SearchParams | None = None, **overrides) -> SearchResult:
        """Top-k per query. ``params`` (or keyword overrides: query_cut, heap_factor, n_knn, threads)."""
        return self._search_allowed(queries, k, self._params(params, overrides), None)

    def _search_allowed(self, queries, k: int, params: SearchParams, allowed: np.ndarray | None) -> SearchResult:
        """`search` keeping only rows with ``allowed[row]`` true in the heap (None: all; else a bool/uint8 mask
        of n_docs rows, what a collection's filters and deletions pass). Excluded rows are never scored; blocks
        are still chosen by their summaries, so a query whose allowed documents lie outside the visited blocks
        gets fewer than k hits (the collection completes those exactly)."""
        queries = self._check_queries(queries, k)
        if params.n_knn and self.knn.shape[1] == 0:
            raise ConfigError(f"n_knn={params.n_knn} but this index has no k-NN graph; build it with knn>0 "
                              "(aftershock build --knn 10) or search with n_knn=0")
        if allowed is not None:
            if np.shape(allowed) != (self.n_docs,):
                raise ConfigError(f"allowed has shape {np.shape(allowed)}; pass one bool per row ({self.n_docs},)")
            allowed = np.ascontiguousarray(allowed, dtype=np.uint8)
        if len(queries) == 0:
            self._last_stats = np.zeros((0, len(self.STATS)), np.int64)
        return self._search_arrays(queries, k, params, _threads(params.threads), allowed=allowed)

    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Forward row ``row`` decoded: (term ids int64, weights float32 as stored, float16 ones widened)."""
        row = self._check_row(row)
        a, b = int(self.fwd_ptr[row]), int(self.fwd_ptr[row + 1])
        vals = np.asarray(self.fwd_val[a:b])
        vals = K.decode_values(vals)
        return np.asarray(self.fwd_idx[a:b]).astype(np.int64), vals

    def info(self) -> dict:
        return {**super().info(), "config": self.config.to_dict(), "build_stats": dict(self.build_stats),
                "n_blocks": self.n_blocks, "knn": int(self.knn.shape[1])}

    MAX_FREE_SCRATCH = 4  # scratch sets kept for reuse; more concurrent searches allocate their own

    def _take_scratch(self, n_chunks: int):
        """A scratch set (dense query, visited bitset with the list of docs it marked, two block accumulators,
        each ``n_chunks`` rows) owned by this call alone, so concurrent searches never share one and need no
        lock. Kernels leave every buffer zeroed, so a reused set is not cleared. Give it back with
        `_give_scratch`."""
        with self._pool_lock:
            for j, sc in enumerate(self._free_scratch):
                if sc[0].shape[0] >= n_chunks:
                    return self._free_scratch.pop(j)
        nb = max(self.max_blocks, 1)
        check_memory(n_chunks * (4.0 * self.dim + 4.125 * self.n_docs + 8.0 * nb),
                     f"search scratch for {n_chunks} threads (dim={self.dim}, {self.n_docs} docs)",
                     "search with fewer threads")
        return (np.zeros((n_chunks, self.dim), np.float32), np.zeros((n_chunks, (self.n_docs + 63) // 64), np.uint64),
                np.zeros((n_chunks, max(self.n_docs, 1)), np.int32), np.zeros((n_chunks, nb), np.float32),
                np.zeros((n_chunks, nb), np.float32))

    def _give_scratch(self, sc) -> None:
        with self._pool_lock:
            if len(self._free_scratch) < self.MAX_FREE_SCRATCH:
                self._free_scratch.append(sc)

    def kernel_arrays(self) -> K.SeismicArrays:
        """The arrays the search kernels read, by name (one `SeismicArrays`, so kernels take one argument)."""
        return K.SeismicArrays(lut=K.F16_LUT, **{name: getattr(self, name) for name in self.ARRAYS})

    def block_summaries(self):
        """Every block's summary decoded to block-major CSR ``(ptr, terms int32, values float32)``: the
        dequantized values the kernels score with (an upper bound of the block's kept maxima)."""
        dec = K.decode_summaries(self.kernel_arrays())
        return dec.sum_ptr, dec.sum_idx, dec.sum_val

    def _search_arrays(self, queries: SparseBatch, k, params, nt, knn_graph=None, allowed=None) -> SearchResult:
        nq = len(queries)
        out_s, out_i = self._empty_result(nq, k)
        if nq == 0:
            return SearchResult(out_s, out_i)
        n_chunks = min(nt, nq)
        stats = np.zeros((nq, 3), np.int64)
        ix = self.kernel_arrays()
        if knn_graph is not None:
            ix = ix._replace(knn=knn_graph)
        args = (ix, queries.indptr, queries.indices, queries.values, k, params.query_cut,
                np.float32(params.heap_factor), params.n_knn, _NO_FILTER if allowed is None else allowed)
        scratch = self._take_scratch(n_chunks)  # this call's own: concurrent searches run in parallel
        if n_chunks == 1:
            K.seismic_search_serial(*args, out_s, out_i, stats, *scratch)
        else:
            with _parallel_guard(), K.numba_threads(nt):
                K.seismic_search_batch(*args, n_chunks, out_s, out_i, stats, *scratch)
        self._give_scratch(scratch)  # not reached when a kernel raises: possibly dirty buffers are dropped
        self._last_stats = stats
        return self._matched(out_s, out_i)

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
        config, stats = meta.get("config", {}), meta.get("build_stats") or {}
        try:
            if not isinstance(config, dict) or not isinstance(stats, dict):
                raise TypeError("config and build_stats must be objects")
            config = SeismicConfig.from_dict(config)
        except (TypeError, ValueError) as e:
            raise IndexCorruptError(f"meta.json has an invalid Seismic config ({e}); the index is damaged: rebuild "
                                    "it") from None
        return cls(arrays, meta["dim"], arrays["doc_ids"], config, vocab, stats)

    check_structure = staticmethod(check_seismic)


INDEX_KINDS = {"exact": ExactIndex, "seismic": SeismicIndex}


def load_index(path, backend: str = "numba", mmap: bool = True, verify: bool = True):
    """Open an index directory written by ``index.save`` (memory-mapped by default, checksums verified) on
    ``backend``: "numba" (the CPU), "cuda" (copied to the GPU once) or "auto" (cuda when available)."""
    backend = resolve_backend(backend)  # an unknown name fails before any file is read
    path = Path(path)
    arrays, meta, extras = open_dir(path, mmap=mmap, verify=verify)
    kind = meta.get("kind")
    if not isinstance(kind, str) or kind not in INDEX_KINDS:
        raise IndexFormatError(f"{path}: unknown index kind {kind!r}; this Aftershock knows {sorted(INDEX_KINDS)}")
    cls = INDEX_KINDS[kind]
    cls.check_structure(arrays, meta, path)  # always: verify=False skips only the hashes
    vocab = BaseIndex._load_vocab(extras.get("vocab.json"), meta["dim"], path)
    return to_backend(cls._from_arrays(arrays, meta, vocab), backend)
