"""Build-time configuration and query-time parameters, with Seismic's parameter names."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aftershock.index.config import Config, check, is_int, is_real


@dataclass(frozen=True)
class SeismicConfig(Config):
    """How a Seismic index is built (names follow pyseismic-lsr so configs port over).

    pruning: ``"global"`` keeps the heaviest ``n_postings`` x (number of non-empty lists) postings overall,
    each list capped at ``max_fraction * n_postings``; ``"fixed"`` keeps the heaviest ``n_postings`` per list.
    clustering: ``"random"`` is Seismic's one-shot assignment to ``centroid_fraction`` random seed docs
    (docs approximated by their ``doc_cut`` heaviest terms), ``"kmeans"`` refines it with
    ``kmeans_iterations`` spherical k-means rounds. Clusters smaller than ``min_cluster_size`` are dissolved;
    with ``max_block_size`` > 0, clusters larger than it are split by the same one-shot clustering
    (0 = no limit, Seismic's behaviour).
    Summaries keep ``summary_energy`` of each block's max-vector L1 mass, 8-bit quantized (rounded up).
    ``knn`` > 0 builds a k-NN graph with the index itself. ``value_dtype`` is the forward index's value type.
    """

    n_postings: int = 3500
    max_fraction: float = 1.5
    pruning: str = "global"
    centroid_fraction: float = 0.1
    min_cluster_size: int = 2
    clustering: str = "random"
    kmeans_iterations: int = 2
    max_block_size: int = 0
    doc_cut: int = 15
    summary_energy: float = 0.4
    knn: int = 0
    value_dtype: str = "float16"
    seed: int = 42
    max_terms_per_doc: int | None = None

    def __post_init__(self):
        check(is_int(self.n_postings, 1),
              f"n_postings={self.n_postings!r} must be an integer >= 1 (Seismic's default is 3500)")
        check(is_real(self.max_fraction, 0, lo_open=True), f"max_fraction={self.max_fraction!r} must be > 0 (default 1.5)")
        check(self.pruning in ("global", "fixed", "none"),
              f"pruning={self.pruning!r}; use 'global', 'fixed' or 'none'")
        check(is_real(self.centroid_fraction, 0, 1, lo_open=True), f"centroid_fraction={self.centroid_fraction!r} must be in (0, 1]")
        check(is_int(self.min_cluster_size, 1),
              f"min_cluster_size={self.min_cluster_size!r} must be an integer >= 1")
        check(self.clustering in ("random", "kmeans"), f"clustering={self.clustering!r}; use 'random' or 'kmeans'")
        check(is_int(self.kmeans_iterations, 0),
              f"kmeans_iterations={self.kmeans_iterations!r} must be an integer >= 0")
        check(is_int(self.max_block_size, 0),
              f"max_block_size={self.max_block_size!r} must be an integer >= 0 (0 = no limit)")
        check(is_int(self.doc_cut, 1), f"doc_cut={self.doc_cut!r} must be an integer >= 1")
        check(is_real(self.summary_energy, 0, 1, lo_open=True), f"summary_energy={self.summary_energy!r} must be in (0, 1]")
        check(is_int(self.knn, 0), f"knn={self.knn!r} must be an integer >= 0")
        check(self.value_dtype in ("float16", "float32"),
              f"value_dtype={self.value_dtype!r}; use 'float16' (compact) or 'float32' (exact)")
        check(is_int(self.seed, 0, 2**63 - 1), f"seed={self.seed!r} must be an integer >= 0")
        check(self.max_terms_per_doc is None or is_int(self.max_terms_per_doc, 1),
              f"max_terms_per_doc={self.max_terms_per_doc!r} must be None (the default limit, 4096) or an integer >= 1")


INT32_MAX = 2**31 - 1  # kernels take query-time counts as machine integers


@dataclass(frozen=True)
class SearchParams(Config):
    """Query-time knobs: ``query_cut`` heaviest query terms pick the posting lists; a block is skipped
    when its summary score < ``heap_factor`` x the current k-th score (lower = fewer skips: higher recall,
    slower); ``n_knn`` graph neighbours of each
    result are rescored; ``threads`` (None = all cores) parallelise a batch over queries."""

    query_cut: int = 10
    heap_factor: float = 0.7
    n_knn: int = 0
    threads: int | None = None

    none_keeps = True  # with_(heap_factor=None) keeps the current value (a CLI flag or request field not given)

    def __post_init__(self):
        check(is_int(self.query_cut, 1, INT32_MAX),
              f"query_cut={self.query_cut!r} must be an integer in [1, {INT32_MAX}] (try 10; a value above the "
              "query's number of terms visits all its lists)")
        check(is_real(self.heap_factor, 0, 1, lo_open=True),
              f"heap_factor={self.heap_factor!r} must be in (0, 1]: a block is skipped when its summary score is "
              "below heap_factor x the k-th best score so far, so a lower value is safer (higher recall, slower); "
              "try 0.7")
        check(is_int(self.n_knn, 0, INT32_MAX),
              f"n_knn={self.n_knn!r} must be an integer in [0, {INT32_MAX}] (at most the index's knn is used)")
        check(self.threads is None or is_int(self.threads, 1),
              f"threads={self.threads!r} must be None (all cores) or an integer >= 1")

    def n_threads(self) -> int:
        import numba

        return min(self.threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------- help
# One-line help of each field (the CLI generates its --flags from the dataclass fields, their defaults and
# these strings), and the allowed values of the string fields.
FIELD_HELP = {
    "n_postings": "postings kept per list (global pruning: on average)",
    "max_fraction": "global pruning caps a list at max_fraction x n_postings",
    "pruning": "how posting lists are pruned",
    "centroid_fraction": "blocks per list = centroid_fraction x list length",
    "min_cluster_size": "smaller clusters are dissolved into others",
    "clustering": "how a list's docs are grouped into blocks",
    "kmeans_iterations": "spherical k-means rounds for clustering=kmeans",
    "max_block_size": "split clusters of more docs than this (0 = no limit)",
    "doc_cut": "clustering sees each doc's doc_cut heaviest terms",
    "summary_energy": "fraction of a block summary's L1 mass kept",
    "knn": "neighbours per doc in a k-NN graph (0 = none)",
    "value_dtype": "forward-index value type",
    "seed": "random seed of the clustering",
    "max_terms_per_doc": "reject a document with more terms than this (default 4096 or $AFTERSHOCK_MAX_TERMS_PER_DOC)",
    "query_cut": "the query's query_cut heaviest terms pick the posting lists",
    "heap_factor": "skip a block when its summary score < heap_factor x the k-th best score (lower = more recall)",
    "n_knn": "k-NN graph neighbours of each result to rescore (needs an index built with knn > 0)",
    "threads": "search threads (default: all cores)",
}
FIELD_CHOICES = {
    "pruning": ("global", "fixed", "none"),
    "clustering": ("random", "kmeans"),
    "value_dtype": ("float16", "float32"),
}
