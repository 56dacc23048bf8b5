"""Building a Seismic index's arrays: forward index -> pruned posting lists -> blocks (clustered) ->
quantized summaries (stored component-major) -> optional kNN graph. `SeismicIndex.build` calls
`build_seismic`; the kernels are in `aftershock.seismic.kernels`."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from aftershock.errors import ConfigError
from aftershock.index import SparseBatch
from aftershock.index.limits import check_memory
from aftershock.seismic import kernels as K
from aftershock.seismic.config import SeismicConfig


def term_dtype(dim: int):
    """Term ids as uint16 when they fit, else uint32."""
    return np.uint16 if dim <= 65536 else np.uint32


def drop_zeros(docs: SparseBatch) -> SparseBatch:
    """The batch without its explicit zero weights."""
    keep = docs.values > 0
    counts = np.add.reduceat(keep.astype(np.int64), docs.indptr[:-1]) if len(docs) else np.zeros(0, np.int64)
    counts[np.diff(docs.indptr) == 0] = 0
    return SparseBatch(K.offsets(counts), docs.indices[keep], docs.values[keep], docs.ids, docs.dim, docs.vocab)


class _Steps:
    """Times the build steps into ``stats`` (``<step>_s``); with ``progress``, one bar per step, named after the
    step while it runs (``build 3/4: blocking``), advanced by the chunked steps as they go."""

    def __init__(self, names: list, progress: bool):
        self.stats: dict = {}
        self.names, self.progress, self.bar = names, progress, None
        self.t0 = self.t = time.perf_counter()

    def start(self, name: str, total: int = 1, unit: str = "step") -> None:
        self.t = time.perf_counter()
        if self.progress:
            from tqdm.auto import tqdm

            i = self.names.index(name) + 1 if name in self.names else 0
            self.bar = tqdm(total=max(int(total), 1), desc=f"build {i}/{len(self.names)}: {name}", unit=unit,
                            unit_scale=unit != "step", leave=True)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.stats[f"{name.replace(' ', '_')}_s"] = round(now - self.t, 3)
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
            self.bar = None
        self.t = time.perf_counter()

    def close(self) -> None:
        self.stats["build_s"] = round(time.perf_counter() - self.t0, 3)
        if self.bar is not None:
            self.bar.close()


# Long parallel kernels run in chunks so that Python regains control every CHUNK_S seconds or so: Ctrl-C
# (KeyboardInterrupt) is honoured between chunks and the progress bar moves.
CHUNK_S = 0.25
SUMMARY_RUN = 1 << 22  # summary slots per run of blocks (K.summarize): a run takes a fraction of a second


def _forward(docs: SparseBatch, config: SeismicConfig):
    tdt = term_dtype(docs.dim)
    fwd_ptr = docs.indptr.astype(np.int64)
    fwd_idx = docs.indices.astype(tdt)
    if config.value_dtype == "float16":
        if docs.nnz and float(docs.values.max()) > K.F16_MAX:
            raise ConfigError(f"a weight of {float(docs.values.max())} overflows float16 (max 65504); "
                              "build with value_dtype='float32'")
        fwd_val = K.f16_bits(docs.values)
    else:
        fwd_val = docs.values.astype(np.float32)
    return fwd_ptr, fwd_idx, fwd_val


def _prune(docs: SparseBatch, fwd_ptr, fwd_val, config: SeismicConfig):
    """Posting lists (term -> docs ascending) kept by the pruning policy; weights as stored (so pruning sees
    the forward values). Returns (post_ptr, post_docs int32)."""
    import scipy.sparse as sp

    n, dim = len(docs), docs.dim
    csc = sp.csc_matrix(sp.csr_matrix((K.decode_values(fwd_val), docs.indices, fwd_ptr), shape=(n, dim)))
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
    post_ptr = K.offsets(counts)
    post_docs = np.empty(post_ptr[-1], np.int32)
    post_vals = np.empty(post_ptr[-1], np.float32)
    K.prune_fill(inv_ptr, inv_docs, inv_vals, np.float32(threshold), post_ptr, post_docs, post_vals)
    return post_ptr, post_docs


def _blocks(post_ptr, post_docs, fwd_ptr, fwd_idx, fwd_val, dim: int, config: SeismicConfig, nt: int,
            on_chunk=None):
    """Each posting list clustered into blocks, longest lists first for load balance.
    Returns (term_blk_ptr, blk_doc_ptr, blk_docs)."""
    lut = K.F16_LUT
    cut_ptr = K.offsets(np.minimum(np.diff(fwd_ptr), config.doc_cut))
    cut_idx = np.empty(cut_ptr[-1], np.int32)
    cut_val = np.empty(cut_ptr[-1], np.float32)
    K.doc_cut_arrays(fwd_ptr, fwd_idx, fwd_val, lut, config.doc_cut, cut_ptr, cut_idx, cut_val)
    lens = np.diff(post_ptr)
    order = np.argsort(-lens, kind="stable").astype(np.int64)
    blk_docs = np.empty(post_ptr[-1], np.uint32)
    blk_sizes = np.zeros(post_ptr[-1], np.int64)
    n_blocks = np.zeros(dim, np.int64)
    kmeans = config.kmeans_iterations if config.clustering == "kmeans" else 0
    # longest lists first, in chunks of about CHUNK_S seconds: the cost of a list grows ~ quadratically with
    # its length, and the chunk's cost budget adapts to the measured speed
    cost = np.cumsum(lens[order].astype(np.float64) ** 2)
    n_live = int(np.count_nonzero(lens))
    budget, lo = cost[min(n_live, 4 * nt) - 1] if n_live else 0.0, 0
    while lo < n_live:
        base = cost[lo - 1] if lo else 0.0
        hi = max(int(np.searchsorted(cost, base + budget, side="right")), lo + min(4 * nt, n_live - lo))
        hi = min(hi, n_live)
        t0 = time.perf_counter()
        K.block_lists(post_ptr, post_docs, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val, dim,
                      config.centroid_fraction, config.min_cluster_size, kmeans, config.max_block_size, config.seed,
                      order[lo:hi], nt, blk_docs, blk_sizes, n_blocks)
        took = time.perf_counter() - t0
        if on_chunk is not None:
            on_chunk(int(post_ptr[order[lo:hi] + 1].sum() - post_ptr[order[lo:hi]].sum()))
        done = cost[hi - 1] - base
        budget = done * min(4.0, CHUNK_S / took) if took > 0 else budget * 4.0
        lo = hi
    term_blk_ptr = K.offsets(n_blocks)
    starts = np.repeat(post_ptr[:-1], n_blocks)
    sizes = blk_sizes[starts + (np.arange(term_blk_ptr[-1]) - np.repeat(term_blk_ptr[:-1], n_blocks))]
    blk_doc_ptr = K.offsets(sizes)
    blk_doc_ptr = blk_doc_ptr.astype(np.uint32 if blk_doc_ptr[-1] < 2**32 else np.int64)
    return term_blk_ptr, blk_doc_ptr, blk_docs


def build_seismic(docs: SparseBatch, config: SeismicConfig, nt: int, progress: bool = False,
                  knn_graph: Callable[[dict], np.ndarray] | None = None) -> tuple[dict, dict]:
    """The arrays of a Seismic index over ``docs`` (see ``SeismicIndex``) and the build statistics (seconds
    per step, postings kept, blocks), on ``nt`` Numba threads. With ``config.knn``, ``knn_graph(arrays)``
    returns the kNN graph (it searches the index being built, so the caller supplies it)."""
    names = ["forward index", "pruning", "blocking", "summaries"] + (["knn graph"] if config.knn else [])
    steps = _Steps(names, progress)
    stats = steps.stats
    # per-thread dense scratch (blocking, summaries: about 24 bytes per term id) + the arrays built per non-zero
    check_memory(nt * 24.0 * docs.dim + 48.0 * docs.nnz + 16.0 * len(docs),
                 f"building a Seismic index ({len(docs)} docs, {docs.nnz} non-zeros, dim={docs.dim}, {nt} threads)",
                 "build with fewer threads (--threads) or from fewer documents")
    with K.numba_threads(nt):
        steps.start("forward index")
        if docs.nnz and not np.all(docs.values > 0):
            docs = drop_zeros(docs)  # explicit zeros add nothing to a score; kernels treat 0 as "absent"
        dim, tdt = docs.dim, term_dtype(docs.dim)
        fwd_ptr, fwd_idx, fwd_val = _forward(docs, config)
        steps.done("forward index")
        steps.start("pruning")
        post_ptr, post_docs = _prune(docs, fwd_ptr, fwd_val, config)
        stats["postings"] = int(post_ptr[-1])
        steps.done("pruning")
        steps.start("blocking", int(post_ptr[-1]), "posting")
        term_blk_ptr, blk_doc_ptr, blk_docs = _blocks(post_ptr, post_docs, fwd_ptr, fwd_idx, fwd_val, dim, config,
                                                      nt, on_chunk=steps.advance)
        del post_docs
        steps.done("blocking")
        n_blk = int(blk_doc_ptr.shape[0] - 1)
        steps.start("summaries", n_blk, "block")
        seen = [0]

        def on_run(b_hi):
            steps.advance(b_hi - seen[0])
            seen[0] = b_hi

        sums = K.summarize(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, dim, config.summary_energy, nt, tdt,
                           slot_budget=SUMMARY_RUN, on_run=on_run)
        sums = K.transpose_summaries(term_blk_ptr, sums, dim, nt, tdt)
        steps.done("summaries")
        arrays = dict(fwd_ptr=fwd_ptr, fwd_idx=fwd_idx, fwd_val=fwd_val, term_blk_ptr=term_blk_ptr,
                      blk_doc_ptr=blk_doc_ptr, blk_docs=blk_docs, **sums, knn=np.zeros((len(docs), 0), np.int32))
        if config.knn:
            steps.start("knn graph")
            arrays["knn"] = knn_graph(arrays)
            steps.done("knn graph")
    stats["blocks"] = int(blk_doc_ptr.shape[0] - 1)
    steps.close()
    return arrays, stats
