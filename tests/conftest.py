"""Shared fixtures: small generated data sets (fixed seeds) and a float64 reference scorer.

Everything here is generated in memory; tests write only under pytest's ``tmp_path``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from aftershock import SparseBatch

# No example database (it would write .hypothesis/ into the working directory), no per-example deadline
# (the first call of a Numba kernel compiles it).
settings.register_profile(
    "aftershock",
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("aftershock")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Keep Hypothesis' own cache files (source constants, charmap) under pytest's temporary directory
    instead of ./.hypothesis (they are written while test modules are collected, before any fixture runs)."""
    from hypothesis.configuration import set_hypothesis_home_dir

    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        set_hypothesis_home_dir(factory.mktemp("hypothesis"))


def pytest_unconfigure(config):
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(None)


def make_batch(n: int, dim: int, avg_nnz: float, seed: int, empty_every: int = 0, low: float = 0.05,
               high: float = 2.0, ids=None) -> SparseBatch:
    """Random CSR batch: distinct sorted term ids per row, float weights in [low, high).

    ``empty_every`` > 0 makes every such row (0, k, 2k, ...) an empty vector.
    """
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.poisson(avg_nnz, size=n), 1, dim)
    if empty_every:
        lengths[::empty_every] = 0
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.empty(indptr[-1], np.int64)
    for r in range(n):
        indices[indptr[r]:indptr[r + 1]] = np.sort(rng.choice(dim, size=lengths[r], replace=False))
    values = rng.uniform(low, high, size=indptr[-1]).astype(np.float32)
    if ids is None:
        ids = [f"d{seed}-{r}" for r in range(n)]
    return SparseBatch.from_arrays(indptr, indices, values, ids=ids, dim=dim)


def reference_topk(docs: SparseBatch, queries: SparseBatch, k: int):
    """Exact top-k in float64 with scipy: scores desc, ties by smaller row; only docs sharing a term match."""
    d = docs.to_scipy().astype(np.float64)
    q = queries.to_scipy().astype(np.float64)
    scores = (q @ d.T).toarray()
    overlap = ((q != 0).astype(np.int64) @ (d != 0).astype(np.int64).T).toarray() > 0
    nq = len(queries)
    out_s = np.full((nq, k), -np.inf)
    out_i = np.full((nq, k), -1, np.int64)
    for r in range(nq):
        cand = np.flatnonzero(overlap[r])
        order = cand[np.lexsort((cand, -scores[r, cand]))][:k]
        out_s[r, : order.size] = scores[r, order]
        out_i[r, : order.size] = order
    return out_s, out_i


def dot64(docs: SparseBatch, queries: SparseBatch, ids: np.ndarray) -> np.ndarray:
    """float64 dot product of each query with each of its returned docs (NaN where ids == -1)."""
    d = docs.to_scipy().astype(np.float64)
    q = queries.to_scipy().astype(np.float64)
    out = np.full(ids.shape, np.nan)
    for r in range(ids.shape[0]):
        sel = ids[r][ids[r] >= 0]
        if sel.size:
            out[r, : sel.size] = (d[sel] @ q[r].T).toarray().ravel()
    return out


def recall_at_k(truth, got) -> float:
    """The project's one recall definition (aftershock.eval.metrics.recall_at_k); ``truth`` a SearchResult
    (ties seen) or an id array."""
    from aftershock.eval.metrics import recall_at_k as recall

    return recall(truth, got)


@pytest.fixture(scope="session")
def helpers():
    """The helper functions above, for test modules (tests/ is not a package)."""

    class H:
        pass

    h = H()
    h.make_batch = staticmethod(make_batch)
    h.reference_topk = staticmethod(reference_topk)
    h.dot64 = staticmethod(dot64)
    h.recall_at_k = staticmethod(recall_at_k)
    return h


@pytest.fixture(scope="session")
def small_batch() -> SparseBatch:
    """40 vectors over dim 60, every 7th one empty."""
    return make_batch(40, 60, 6, seed=1, empty_every=7)


@pytest.fixture(scope="session")
def corpus():
    """2000 docs x dim 500 (~30 nnz each) and 60 queries (~12 nnz each, some rows empty)."""
    docs = make_batch(2000, 500, 30, seed=11)
    queries = make_batch(60, 500, 12, seed=12, empty_every=25)
    return docs, queries
