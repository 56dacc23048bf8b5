"""The one search contract, checked on every index class: ``search(queries, k=10, params=None, **overrides)
-> SearchResult`` (padded -inf / -1), overrides replace fields of params (unknown names are a ConfigError),
statistics only in ``last_stats`` (name -> per-query int64 array), the caller's Numba thread count restored;
``document``/``info``; the backend registry (``load_index(backend=)``, ``index.to``) without seismic -> gpu.

The GPU classes' signatures are checked here (no GPU needed); their runtime behaviour runs in Numba's CUDA
simulator in tests/gpu (sim_scenarios.py, ``contract``).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from aftershock import SearchResult, SparseBatch
from aftershock.index.result import SearchIndex
from aftershock.errors import BackendUnavailableError, ConfigError
from aftershock.seismic import ExactIndex, SearchParams, SeismicIndex, load_index

ROOT = Path(__file__).resolve().parents[2]


def _shape(fn):
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()], str(sig.return_annotation)


def test_the_protocol_is_the_spec():
    params, ret = _shape(SearchIndex.search)
    P = inspect.Parameter
    assert params == [("self", P.POSITIONAL_OR_KEYWORD, P.empty), ("queries", P.POSITIONAL_OR_KEYWORD, P.empty),
                      ("k", P.POSITIONAL_OR_KEYWORD, 10), ("params", P.POSITIONAL_OR_KEYWORD, None),
                      ("overrides", P.VAR_KEYWORD, P.empty)] and ret == "SearchResult"


def _all_classes():
    from aftershock.gpu import GpuExactIndex, GpuSeismicIndex
    from aftershock.kv import DenseBlockIndex

    return [ExactIndex, SeismicIndex, GpuExactIndex, GpuSeismicIndex, DenseBlockIndex]


@pytest.mark.parametrize("cls", _all_classes(), ids=lambda c: c.__name__)
def test_search_signature_is_the_contract(cls):
    assert _shape(cls.search) == _shape(SearchIndex.search)


# ---------------------------------------------------------------------------------------------- CPU indexes
@pytest.fixture(scope="module")
def sparse(helpers):
    docs = helpers.make_batch(400, 80, 8, seed=21)
    queries = helpers.make_batch(12, 80, 4, seed=22, empty_every=5)  # rows 0, 5, 10 empty
    return docs, queries


class Case:
    """One index class: the index, queries, its params class, valid overrides and a batch of edge queries."""

    def __init__(self, index, queries, params, override, nothing):
        self.index, self.queries, self.params, self.override, self.nothing = index, queries, params, override, nothing


def _case(name, sparse):
    docs, queries = sparse
    from aftershock import SparseBatch

    nothing = SparseBatch.from_dicts([{}, {79: 1.0}], dim=80)  # an empty query, a one-term query
    if name == "exact":
        return Case(ExactIndex.build(docs), queries, SearchParams, {"threads": 1}, nothing)
    if name == "seismic":
        index = SeismicIndex.build(docs, n_postings=60, centroid_fraction=0.2, knn=3)
        return Case(index, queries, SearchParams, {"query_cut": 2, "heap_factor": 1.0, "n_knn": 2}, nothing)
    torch = pytest.importorskip("torch")
    from aftershock.kv import DenseBlockIndex, DenseConfig, DenseSearchParams

    g = torch.Generator().manual_seed(0)
    keys = torch.randn(30, 8, generator=g)
    index = DenseBlockIndex.build(keys, DenseConfig(block_size=4, knn=4))
    q = torch.randn(5, 8, generator=g).numpy()
    return Case(index, q, DenseSearchParams, {"radius_factor": 0.5, "n_knn": 2}, np.zeros((0, 8), np.float32))


@pytest.fixture(scope="module", params=["exact", "seismic", "dense"])
def case(request, sparse):
    return _case(request.param, sparse)


def test_result_types_and_padding(case):
    ix = case.index
    assert isinstance(ix, SearchIndex)
    big = len(ix) + 5  # more than there are documents/keys: every row padded
    res = ix.search(case.queries, big)
    assert isinstance(res, SearchResult)
    nq = len(case.queries)
    assert res.scores.shape == res.ids.shape == (nq, big)
    assert res.scores.dtype == np.float32 and res.ids.dtype == np.int64
    pad = res.ids < 0
    assert pad.any(axis=1).all() and np.all(res.ids[pad] == -1) and np.all(np.isneginf(res.scores[pad]))
    assert np.all(np.isfinite(res.scores[~pad]))
    assert all(np.all(np.diff(s[i >= 0]) <= 0) for s, i in zip(res.scores, res.ids))  # best first
    # padding after the hits only
    assert np.all(np.diff(pad.astype(int), axis=1) >= 0)
    # default k is 10
    assert ix.search(case.queries).ids.shape == (nq, 10)
    empty = ix.search(case.nothing, 4)
    assert empty.ids.shape == (len(case.nothing), 4)


def test_overrides_replace_params_fields(case):
    ix = case.index
    base = case.params(threads=1)
    a = ix.search(case.queries, 5, base, **case.override)
    b = ix.search(case.queries, 5, base.with_(**case.override))
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    # None keeps the field (a request/flag not given)
    c = ix.search(case.queries, 5, base, threads=None)
    np.testing.assert_array_equal(c.ids, ix.search(case.queries, 5, base).ids)


def test_unknown_override_and_bad_params_are_config_errors(case):
    with pytest.raises(ConfigError, match="unknown .*bogus"):
        case.index.search(case.queries, 5, bogus=1)
    with pytest.raises(ConfigError, match="threads=0"):
        case.index.search(case.queries, 5, threads=0)
    with pytest.raises(ConfigError, match="k=0"):
        case.index.search(case.queries, 0)
    with pytest.raises(ConfigError, match="params must be"):
        case.index.search(case.queries, 5, {"heap_factor": 0.5})


def test_last_stats_is_a_dict_of_per_query_int64_arrays(case):
    ix = case.index
    ix.search(case.queries, 5, threads=1)
    st = ix.last_stats
    assert isinstance(st, dict)
    if isinstance(ix, ExactIndex):
        assert st == {}  # exact search keeps no counters
        return
    assert st, "an approximate index records its work"
    for name, v in st.items():
        assert isinstance(name, str) and isinstance(v, np.ndarray)
        assert v.dtype == np.int64 and v.shape == (len(case.queries),), (name, v.dtype, v.shape)
    means = {k: float(v.mean()) for k, v in st.items()}
    assert all(m >= 0 for m in means.values())
    if isinstance(ix, SeismicIndex):
        assert set(st) == {"blocks_scored", "blocks_visited", "docs_scored"}
        assert (st["blocks_visited"] <= st["blocks_scored"]).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_thread_count_is_restored(case, threads):
    limit = numba.config.NUMBA_NUM_THREADS
    for caller in sorted({1, limit}):
        numba.set_num_threads(caller)
        try:
            case.index.search(case.queries, 5, threads=threads)
            assert numba.get_num_threads() == caller
        finally:
            numba.set_num_threads(limit)


# ---------------------------------------------------------------------------------------------- documents, info
def test_document_and_info(sparse):
    docs, _ = sparse
    ex = ExactIndex.build(docs)
    se = SeismicIndex.build(docs, n_postings=60, value_dtype="float16")
    for row in (0, 7, len(docs) - 1):
        idx, val = docs.row(row)
        for ix, want in ((ex, val), (se, val.astype(np.float16).astype(np.float32))):
            got_i, got_v = ix.document(row)
            assert got_i.dtype == np.int64 and got_v.dtype == np.float32
            np.testing.assert_array_equal(got_i, idx)
            np.testing.assert_array_equal(got_v, want)
    with pytest.raises(ConfigError, match="row="):
        ex.document(len(docs))
    for ix in (ex, se):
        info = ix.info()
        assert info["kind"] == ix.kind and info["backend"] == "numba" and info["n_docs"] == len(docs)
        assert info["dim"] == 80 and info["index_bytes"] == ix.nbytes() > 0
        assert isinstance(info["config"], dict) and isinstance(info["build_stats"], dict)
    assert se.info()["config"]["n_postings"] == 60 and se.info()["n_blocks"] == se.n_blocks


# ---------------------------------------------------------------------------------------------- backends
def test_load_index_backends(sparse, tmp_path):
    from aftershock.gpu import cuda_available

    docs, queries = sparse
    ExactIndex.build(docs).save(tmp_path / "ex")
    ix = load_index(tmp_path / "ex", backend="numba")
    assert isinstance(ix, ExactIndex) and ix.to("cpu") is ix and ix.to("numba") is ix
    with pytest.raises(ConfigError, match=r"backend='tpu' is unknown; choose one of \['auto', 'cuda', 'numba'\]"):
        load_index(tmp_path / "ex", backend="tpu")
    with pytest.raises(ConfigError, match="unknown"):
        ix.to("tpu")
    if cuda_available():
        pytest.skip("a CUDA target is available in this process")
    assert isinstance(load_index(tmp_path / "ex", backend="auto"), ExactIndex)  # no GPU: the CPU
    with pytest.raises(BackendUnavailableError, match=r"pip install 'aftershock\[gpu\]'"):
        load_index(tmp_path / "ex", backend="cuda")
    with pytest.raises(BackendUnavailableError, match="NUMBA_ENABLE_CUDASIM"):
        ix.to("cuda")


def test_register_backend(sparse):
    from aftershock import backends, register_backend
    from aftershock.index import backends as B

    docs, _ = sparse
    ix = ExactIndex.build(docs)
    register_backend("echo", lambda index, **kw: ("echo", index, kw), available=lambda: True)
    try:
        assert "echo" in backends()
        assert ix.to("echo", tile=3) == ("echo", ix, {"tile": 3})
    finally:
        B._REGISTRY.pop("echo")
    with pytest.raises(ConfigError, match="auto"):
        register_backend("auto", lambda index: index)


def test_seismic_does_not_import_gpu():
    """The CPU rooms load (and search, and hand over to the registry) without aftershock.gpu."""
    code = ("import sys, aftershock, aftershock.seismic, aftershock.service.engine; "
            "from aftershock import SparseBatch, ExactIndex; "
            "ix = ExactIndex.build(SparseBatch.from_dicts([{1: 1.0}], dim=4)); ix.search("
            "SparseBatch.from_dicts([{1: 1.0}], dim=4), 1); ix.to('cpu'); "
            "assert not any(m.startswith('aftershock.gpu') for m in sys.modules), sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for f in (ROOT / "aftershock" / "seismic").rglob("*.py"):
        assert "aftershock.gpu" not in f.read_text(encoding="utf-8"), f


@pytest.mark.parametrize("build", [ExactIndex.build, lambda d: SeismicIndex.build(d, n_postings=20)])
def test_documents_sharing_no_weighted_term_are_no_hits(build):
    """An all-zero query matches nothing (not k arbitrary documents at score 0); a query whose term only
    a few documents hold gets those few, then padding."""
    rng = np.random.default_rng(3)
    rows = [(np.sort(rng.choice(np.arange(1, 40), 6, replace=False)), rng.uniform(0.1, 1, 6).astype(np.float32))
            for _ in range(200)]
    rows[7] = (np.array([0, 5]), np.array([0.5, 0.2], np.float32))  # term 0: only documents 7 and 9
    rows[9] = (np.array([0, 8]), np.array([0.9, 0.1], np.float32))
    docs = SparseBatch.from_rows(rows, dim=40)
    queries = SparseBatch.from_rows([(np.array([3, 4]), np.zeros(2, np.float32)),
                                     (np.array([0]), np.array([1.0], np.float32))], dim=40)
    res = build(docs).search(queries, 5)
    assert np.all(res.ids[0] == -1) and np.all(np.isneginf(res.scores[0]))
    assert res.ids[1].tolist() == [9, 7, -1, -1, -1]
    np.testing.assert_allclose(res.scores[1][:2], [0.9, 0.5], rtol=1e-3)
