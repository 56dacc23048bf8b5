"""Hybrid fusion (aftershock.index.fusion): golden values computed by hand, ties, empty lists, different depths,
bad weights, and the HybridSearcher over real encoders and indexes."""

from __future__ import annotations

import numpy as np
import pytest

from aftershock.errors import ConfigError, InvalidVectorError
from aftershock.index import SearchResult
from aftershock.index.fusion import (DEFAULT_WEIGHT, FusionParams, HybridSearcher, StackedHybridSearcher, fuse,
                                     parse_fusion, remap, row_map)

NEG = -np.inf


def R(scores, ids):
    return SearchResult(np.array(scores, np.float32), np.array(ids, np.int64))


# lexical: rows 0, 1, 2 with 3, 2, 1 -> normalised 1, 0.5, 0
LEX = R([[3.0, 2.0, 1.0]], [[0, 1, 2]])
# learned: rows 2, 3 with 10, 5 -> normalised 1, 0
LRN = R([[10.0, 5.0]], [[2, 3]])


def test_convex_golden_values():
    # w = 0.3 on the learned list: row0 0.7*1, row1 0.7*0.5, row2 0.7*0 + 0.3*1, row3 0.3*0
    out = fuse([LEX, LRN], "convex", [0.7, 0.3], k=5)
    assert out.ids.tolist() == [[0, 1, 2, 3, -1]]
    np.testing.assert_allclose(out.scores[0, :4], [0.7, 0.35, 0.3, 0.0], rtol=1e-6)
    assert out.scores[0, 4] == NEG and out.scores.dtype == np.float32 and out.ids.dtype == np.int64


def test_convex_equal_weights_tie_breaks_by_row():
    # row0 = 0.5*1 = 0.5 and row2 = 0.5*0 + 0.5*1 = 0.5: the smaller row comes first
    out = fuse([LRN, LEX], "convex", [0.5, 0.5], k=2)
    assert out.ids.tolist() == [[0, 2]]
    np.testing.assert_allclose(out.scores[0], [0.5, 0.5])


def test_rrf_golden_values():
    # rrf_k=60: row2 = 1/63 + 1/61, row0 = 1/61, row1 = 1/62, row3 = 1/62 (tie -> row 1 first)
    out = fuse([LEX, LRN], "rrf", k=4)
    assert out.ids.tolist() == [[2, 0, 1, 3]]
    np.testing.assert_allclose(out.scores[0], [1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62], rtol=1e-6)


def test_rrf_weights_and_k():
    out = fuse([LEX, LRN], "rrf", weights=[2.0, 1.0], k=2, rrf_k=0)
    # row0 = 2/1, row2 = 2/3 + 1/1, row1 = 2/2
    assert out.ids.tolist() == [[0, 2]]
    np.testing.assert_allclose(out.scores[0], [2.0, 2 / 3 + 1.0], rtol=1e-6)


def test_constant_list_normalises_to_one():
    out = fuse([R([[4.0, 4.0]], [[5, 6]]), R([[1.0]], [[6]])], "convex", [0.5, 0.5], k=3)
    # row6: 0.5*1 + 0.5*1 (a one-hit list normalises to 1 as well); row5: 0.5
    assert out.ids.tolist() == [[6, 5, -1]]
    np.testing.assert_allclose(out.scores[0, :2], [1.0, 0.5])


def test_padding_empty_lists_and_different_depths():
    a = R([[2.0, 1.0, NEG], [NEG, NEG, NEG]], [[1, 0, -1], [-1, -1, -1]])  # depth 3, query 1 has no hits
    b = R([[1.0], [7.0]], [[4], [9]])  # depth 1
    out = fuse([a, b], "convex", [0.5, 0.5], k=4)
    assert out.ids.tolist() == [[1, 4, 0, -1], [9, -1, -1, -1]]
    np.testing.assert_allclose(out.scores[0, :3], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(out.scores[1, :1], [0.5])
    assert np.isneginf(out.scores[1, 1:]).all()
    r = fuse([a, b], "rrf", k=4)
    np.testing.assert_allclose(r.scores[1, :1], [1 / 61])
    # every list empty, and no queries at all
    none = fuse([R([[NEG]], [[-1]]), R(np.zeros((1, 0)), np.zeros((1, 0)))], "rrf", k=2)
    assert none.ids.tolist() == [[-1, -1]] and np.isneginf(none.scores).all()
    zero = fuse([R(np.zeros((0, 3)), np.zeros((0, 3))), R(np.zeros((0, 1)), np.zeros((0, 1)))], k=5)
    assert zero.ids.shape == (0, 5) and zero.scores.shape == (0, 5)


def test_k_truncates_and_weight_zero_keeps_order_of_the_other():
    out = fuse([LEX, LRN], "convex", [1.0, 0.0], k=2)
    assert out.ids.tolist() == [[0, 1]]
    out = fuse([LEX, LRN], "convex", [0.0, 1.0], k=1)
    assert out.ids.tolist() == [[2]]


def test_accepts_pairs_and_numpy_weights():
    out = fuse([(LEX.scores, LEX.ids), (LRN.scores, LRN.ids)], "convex", np.array([0.7, 0.3], np.float32), k=1)
    assert out.ids.tolist() == [[0]]


@pytest.mark.parametrize("weights, match", [
    ([0.5, 0.6], "sum to 1.1"), ([0.5], "one weight per system"), ([-0.1, 1.1], r"weights\[0\]"),
    ([float("nan"), 1.0], r"weights\[0\]"), ([True, 0], r"weights\[0\]"), (["0.5", 0.5], r"weights\[0\]")])
def test_bad_weights(weights, match):
    with pytest.raises(ConfigError, match=match):
        fuse([LEX, LRN], "convex", weights)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="method='sum'"):
        fuse([LEX, LRN], "sum")
    with pytest.raises(ConfigError, match="k=0"):
        fuse([LEX, LRN], k=0)
    with pytest.raises(ConfigError, match="rrf_k=-1"):
        fuse([LEX, LRN], "rrf", rrf_k=-1)
    with pytest.raises(ConfigError, match="at least one"):
        fuse([])
    with pytest.raises(ConfigError, match="same queries"):
        fuse([LEX, R([[1.0], [2.0]], [[0], [1]])])
    with pytest.raises(ConfigError, match="twice"):
        fuse([R([[2.0, 1.0]], [[3, 3]]), LRN])
    with pytest.raises(ConfigError, match="not row numbers"):
        fuse([(np.array([[1.0]]), np.array([["d1"]], dtype=object)), LRN])
    with pytest.raises(InvalidVectorError, match="non-finite"):
        fuse([R([[np.inf]], [[0]]), LRN])
    with pytest.raises(ConfigError, match="all 0"):
        fuse([LEX, LRN], "rrf", [0, 0])


def test_fusion_params_and_parse():
    assert FusionParams().weights() == (1 - DEFAULT_WEIGHT, DEFAULT_WEIGHT)
    assert FusionParams(weight=0.3).weights() == (0.7, 0.3)
    assert FusionParams(method="rrf").weights(3) == (1.0, 1.0, 1.0)
    assert parse_fusion("convex=0.25") == FusionParams(weight=0.25)
    assert parse_fusion("RRF") == FusionParams(method="rrf")
    assert parse_fusion("rrf=10").rrf_k == 10
    for bad in ("convex=1.5", "convex=x", "max", "rrf=-2"):
        with pytest.raises(ConfigError):
            parse_fusion(bad)
    with pytest.raises(ConfigError, match="weight=2"):
        FusionParams(weight=2)
    with pytest.raises(ConfigError, match="depth=0"):
        FusionParams(depth=0)
    with pytest.raises(ConfigError, match="two systems"):
        FusionParams().weights(3)


def test_row_map_and_remap():
    assert row_map(["a", "b"], ["a", "b"]) is None
    rows = row_map(["a", "b", "c"], ["c", "x", "a"])
    assert rows.tolist() == [2, -1, 0]
    out = remap(R([[3.0, 2.0, 1.0]], [[1, 0, 2]]), rows)  # x is dropped, order kept, padding last
    assert out.ids.tolist() == [[2, 0, -1]]
    np.testing.assert_allclose(out.scores[0, :2], [2.0, 1.0])
    assert np.isneginf(out.scores[0, 2])


DOCS = ["the cat sat on the mat", "dogs chase cats in the garden", "a treatise on supersonic wing flow",
        "wing flow and boundary layers", "gardening with cats and dogs"]


def _systems(order=None):
    from aftershock.lsr import BM25
    from aftershock.seismic import ExactIndex

    ids = [f"d{i}" for i in range(len(DOCS))]
    bm25 = BM25().fit(DOCS)
    lex = ExactIndex.build(bm25.encode_documents(DOCS, ids=ids))
    order = order or list(range(len(DOCS)))
    bm25b = BM25(k1=0.9, b=0.4).fit(DOCS)  # a second "system" with another order of the same documents
    other = ExactIndex.build(bm25b.encode_documents([DOCS[i] for i in order], ids=[ids[i] for i in order]))
    return [(bm25, lex), (bm25b, other)], ids


@pytest.mark.parametrize("concurrent", [True, False])
def test_hybrid_searcher_equals_fusing_the_two_searches(concurrent):
    pytest.importorskip("Stemmer")
    systems, ids = _systems(order=[4, 2, 0, 3, 1])
    hs = HybridSearcher(systems, FusionParams(weight=0.4, depth=3), concurrent=concurrent)
    queries = ["wing flow", "cats", "nothing matches zzz"]
    out = hs.search(queries, k=4)
    a = systems[0][1].search(systems[0][0].encode_queries(queries), 3)
    b = remap(systems[1][1].search(systems[1][0].encode_queries(queries), 3), row_map(ids, systems[1][1].doc_ids))
    want = fuse([a, b], "convex", [0.6, 0.4], 4)
    np.testing.assert_array_equal(out.ids, want.ids)
    np.testing.assert_allclose(out.scores, want.scores)
    assert [hs.doc_ids[r] for r in out.ids[0][:2]] in (["d2", "d3"], ["d3", "d2"])
    assert out.ids[2].tolist() == [-1] * 4
    rrf = hs.search(queries, k=2, method="rrf")
    assert rrf.ids.shape == (3, 2) and len(hs.last_stats["search_s"]) == 2
    hs.close()


def test_hybrid_searcher_refuses_bad_systems():
    with pytest.raises(ConfigError, match="at least two"):
        HybridSearcher([("x", "y")])
    with pytest.raises(ConfigError, match=r"systems\[1\]"):
        HybridSearcher([_systems()[0][0], ("not an encoder", None)])


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_batch_path_equals_the_small_path(method):
    """Batches above SMALL_BATCH take the vectorised path; one query at a time takes the Python one: the same
    answers, bit for bit (random lists with padding, ties and a constant list)."""
    from aftershock.index import fusion

    rng = np.random.default_rng(7)
    nq = fusion.SMALL_BATCH + 12
    lists = []
    for depth in (7, 3):
        ids = np.stack([rng.permutation(30)[:depth] for _ in range(nq)]).astype(np.int64)
        scores = -np.sort(-rng.integers(0, 4, size=(nq, depth)).astype(np.float32), axis=1)
        ids[2, depth - 1:], scores[2, depth - 1:] = -1, NEG  # padding
        ids[3], scores[3] = -1, NEG  # an empty list
        lists.append(R(scores, ids))
    big = fuse(lists, method, None, k=6)
    for q in range(nq):
        one = fuse([R(r.scores[q:q + 1], r.ids[q:q + 1]) for r in lists], method, None, k=6)
        np.testing.assert_array_equal(one.ids[0], big.ids[q])
        np.testing.assert_array_equal(one.scores[0], big.scores[q])


def test_stacked_searcher_equals_separate_indexes():
    pytest.importorskip("Stemmer")
    from aftershock.lsr import BM25
    from aftershock.seismic import ExactIndex

    ids = [f"d{i}" for i in range(len(DOCS))]
    encs = [BM25().fit(DOCS), BM25(k1=0.9, b=0.4, stemmer=None).fit(DOCS)]
    docs = [e.encode_documents(DOCS, ids=ids) for e in encs]
    sep = HybridSearcher([(e, ExactIndex.build(d)) for e, d in zip(encs, docs)], FusionParams(depth=4),
                         concurrent=False)
    st = StackedHybridSearcher(encs, docs, ExactIndex.build, FusionParams(depth=4))
    assert st.index.dim == docs[0].dim + docs[1].dim and list(st.doc_ids) == ids
    queries = ["wing flow cats", "garden", "zzz"]
    for a, b in zip(sep.search_each(queries, 4), st.search_each(queries, 4)):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    for method in ("convex", "rrf"):
        np.testing.assert_array_equal(sep.search(queries, 3, method=method).ids,
                                      st.search(queries, 3, method=method).ids)
    with pytest.raises(ConfigError, match="same documents"):
        StackedHybridSearcher(encs, [docs[0], docs[1][[1, 0, 2, 3, 4]]], ExactIndex.build)
