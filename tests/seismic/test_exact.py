"""ExactIndex: the ground truth, checked against a float64 scipy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from aftershock import ExactIndex, SearchParams, SearchResult, SparseBatch, Vocabulary, load_index
from aftershock.errors import ConfigError, IndexCorruptError, TermIdOutOfRangeError


@pytest.fixture(scope="module")
def data(helpers):
    docs = helpers.make_batch(400, 150, 12, seed=21, empty_every=50)
    queries = helpers.make_batch(40, 150, 6, seed=22, empty_every=13)
    return docs, queries


@pytest.fixture(scope="module")
def index(data):
    return ExactIndex.build(data[0])


@pytest.mark.parametrize("k", [1, 10, 37])
def test_matches_float64_reference(helpers, data, index, k):
    docs, queries = data
    res = index.search(queries, k)
    ref_s, ref_i = helpers.reference_topk(docs, queries, k)
    np.testing.assert_array_equal(res.ids, ref_i)
    finite = np.isfinite(ref_s)
    np.testing.assert_array_equal(np.isfinite(res.scores), finite)
    np.testing.assert_allclose(res.scores[finite], ref_s[finite], rtol=1e-5)


def test_result_type_and_shape(data, index):
    res = index.search(data[1], 10)
    assert isinstance(res, SearchResult) and isinstance(res, tuple)
    scores, ids = res
    assert scores is res.scores and ids is res.ids
    assert scores.shape == ids.shape == (len(data[1]), 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    # best first
    s = np.where(np.isfinite(scores), scores, -1.0)
    assert np.all(np.diff(s, axis=1) <= 0)


def test_padding_when_fewer_than_k_match():
    docs = SparseBatch.from_rows([([0, 1], [1.0, 1.0]), ([2], [2.0]), ([1, 3], [0.5, 3.0])], dim=5)
    q = SparseBatch.from_rows([([1], [1.0]), ([4], [1.0])], dim=5)
    res = ExactIndex.build(docs).search(q, 5)
    np.testing.assert_array_equal(res.ids, [[0, 2, -1, -1, -1], [-1] * 5])
    np.testing.assert_array_equal(res.scores[0, :2], np.float32([1.0, 0.5]))
    assert np.all(np.isneginf(res.scores[0, 2:])) and np.all(np.isneginf(res.scores[1]))


def test_empty_query_rows(data, index):
    queries = data[1]
    res = index.search(queries, 10)
    empty = queries.nnz_per_row() == 0
    assert empty.any()
    assert np.all(res.ids[empty] == -1) and np.all(np.isneginf(res.scores[empty]))
    assert np.all(res.ids[~empty][:, 0] >= 0)
    none = index.search(SparseBatch.from_arrays([0], [], [], dim=150), 3)
    assert none.scores.shape == (0, 3) and none.ids.shape == (0, 3)


def test_threads_give_identical_output(data, index):
    a = index.search(data[1], 10, threads=1)
    b = index.search(data[1], 10, threads=2)
    c = index.search(data[1], 10, params=SearchParams(threads=2))
    for other in (b, c):
        np.testing.assert_array_equal(a.scores, other.scores)
        np.testing.assert_array_equal(a.ids, other.ids)


def test_batch_equals_single_queries(data, index):
    queries = data[1]
    batch = index.search(queries, 7)
    for i in range(len(queries)):
        one = index.search(queries[i:i + 1], 7)
        np.testing.assert_array_equal(one.scores[0], batch.scores[i])
        np.testing.assert_array_equal(one.ids[0], batch.ids[i])


def test_scipy_queries_and_doc_ids(data, index):
    docs, queries = data
    a = index.search(queries, 5)
    b = index.search(queries.to_scipy(), 5)
    np.testing.assert_array_equal(a.ids, b.ids)
    names = a.doc_ids(index.doc_ids)
    assert len(names) == len(queries)
    for row, got in zip(a.ids, names):
        assert got == [docs.ids[j] for j in row if j >= 0]


def test_bad_arguments(data, index):
    q = data[1]
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            index.search(q, k)
    with pytest.raises(ConfigError):
        index.search([[1.0, 2.0]], 3)
    with pytest.raises(ConfigError):
        index.search(q, 3, threads=0)
    with pytest.raises(TermIdOutOfRangeError) as ei:
        index.search(SparseBatch.from_rows([([160], [1.0])], dim=200), 3)
    assert "160" in str(ei.value) and "150" in str(ei.value)


def test_golden_hand_computed():
    # 4 docs over 6 terms, every weight exact in float16/float32
    docs = SparseBatch.from_dicts(
        [{0: 1.0, 1: 2.0}, {1: 1.0, 2: 3.0, 5: 0.5}, {0: 0.5, 3: 4.0}, {4: 2.0, 5: 1.5}],
        ids=["d0", "d1", "d2", "d3"], dim=6)
    queries = SparseBatch.from_dicts([{0: 2.0, 1: 1.0, 5: 2.0}, {2: 1.0, 3: 0.5}, {4: 0.25}], dim=6)
    # q0: d0 = 2*1 + 1*2 = 4, d1 = 1*1 + 2*0.5 = 2, d2 = 2*0.5 = 1, d3 = 2*1.5 = 3
    # q1: d1 = 1*3 = 3, d2 = 0.5*4 = 2
    # q2: d3 = 0.25*2 = 0.5
    res = ExactIndex.build(docs).search(queries, 3)
    np.testing.assert_array_equal(res.ids, [[0, 3, 1], [1, 2, -1], [3, -1, -1]])
    np.testing.assert_array_equal(res.scores, np.float32([[4.0, 3.0, 2.0], [3.0, 2.0, -np.inf],
                                                          [0.5, -np.inf, -np.inf]]))
    assert res.doc_ids(docs.ids) == [["d0", "d3", "d1"], ["d1", "d2"], ["d3"]]


def test_large_dim(helpers):
    dim = 100_000
    rng = np.random.default_rng(9)
    rows = []
    for _ in range(150):
        ids = rng.choice(np.r_[rng.integers(0, dim, 30), 65535, 65536, 99_999], 8, replace=False)
        rows.append((np.unique(ids), rng.uniform(0.1, 1.0, np.unique(ids).size)))
    docs = SparseBatch.from_rows(rows, dim=dim)
    queries = SparseBatch.from_rows([([65535, 99_999], [1.0, 0.5]), ([65536, 12], [0.7, 0.3])], dim=dim)
    res = ExactIndex.build(docs).search(queries, 10)
    ref_s, ref_i = helpers.reference_topk(docs, queries, 10)
    np.testing.assert_array_equal(res.ids, ref_i)
    f = np.isfinite(ref_s)
    np.testing.assert_allclose(res.scores[f], ref_s[f], rtol=1e-5)


def test_save_load_round_trip(tmp_path, data, index):
    index.save(tmp_path / "ex")
    loaded = load_index(tmp_path / "ex", mmap=True)
    assert isinstance(loaded, ExactIndex)
    assert len(loaded) == len(index) and loaded.dim == index.dim
    assert list(loaded.doc_ids) == list(index.doc_ids)
    a, b = index.search(data[1], 10), loaded.search(data[1], 10)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.ids, b.ids)
    npy = sorted((tmp_path / "ex").glob("*.npy"))[-1]
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError):
        load_index(tmp_path / "ex")


def test_vocab_survives_save(tmp_path):
    vocab = Vocabulary(["a", "b", "c"])
    docs = SparseBatch.from_dicts([{"a": 1.0}, {"b": 2.0, "c": 1.0}], vocab=vocab)
    ExactIndex.build(docs).save(tmp_path / "v")
    assert load_index(tmp_path / "v").vocab == vocab
    assert sp.issparse(docs.to_scipy())
