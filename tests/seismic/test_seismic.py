"""SeismicIndex, tested only through the public API (build / search / save / load_index)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
import sys
import textwrap

import numpy as np
import pytest

from aftershock import ExactIndex, SearchParams, SearchResult, SeismicConfig, SeismicIndex, SparseBatch, Vocabulary
from aftershock import load_index
from aftershock.errors import ConfigError, IndexCorruptError, TermIdOutOfRangeError

K = 10
# settings under which Seismic must be exact: no pruning, full summaries, no early stop, all query terms
EXACT_BUILD = dict(pruning="none", summary_energy=1.0, value_dtype="float32")
# an approximate configuration that really skips work on the test corpus
APPROX_BUILD = dict(n_postings=60, centroid_fraction=0.1, summary_energy=0.4, value_dtype="float32")
APPROX_SEARCH = dict(query_cut=4, heap_factor=0.6)


def exact_search(queries):
    return dict(heap_factor=1.0, query_cut=max(1, int(queries.nnz_per_row().max())))


def assert_same_result(a: SearchResult, b: SearchResult):
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.ids, b.ids)


def assert_well_formed(res: SearchResult, nq: int, k: int, n_docs: int):
    assert isinstance(res, SearchResult)
    assert res.scores.shape == res.ids.shape == (nq, k)
    assert res.scores.dtype == np.float32 and res.ids.dtype == np.int64
    pad = res.ids == -1
    np.testing.assert_array_equal(pad, np.isneginf(res.scores))
    assert np.all((res.ids >= -1) & (res.ids < n_docs))
    for r in range(nq):
        got = res.ids[r][~pad[r]]
        assert len(set(got.tolist())) == got.size  # no doc twice
        assert np.all(pad[r][got.size:])  # padding only at the end
        assert np.all(np.diff(res.scores[r][~pad[r]]) <= 0)  # best first


@pytest.fixture(scope="module")
def truth(corpus):
    docs, queries = corpus
    return ExactIndex.build(docs).search(queries, K)


@pytest.fixture(scope="module")
def approx_index(corpus):
    return SeismicIndex.build(corpus[0], **APPROX_BUILD)


@pytest.fixture(scope="module")
def knn_index(corpus):
    return SeismicIndex.build(corpus[0], knn=5, **APPROX_BUILD)


# ---------------------------------------------------------------------------------------------- (a) scores
def test_scores_are_exact_dot_products(helpers, corpus, approx_index):
    docs, queries = corpus
    res = approx_index.search(queries, K, **APPROX_SEARCH)
    assert_well_formed(res, len(queries), K, len(docs))
    ref = helpers.dot64(docs, queries, res.ids)
    found = res.ids >= 0
    assert found.sum() > 0.9 * (queries.nnz_per_row() > 0).sum() * K
    np.testing.assert_allclose(res.scores[found], ref[found], rtol=1e-5)


def test_scores_are_exact_dot_products_float16(helpers, corpus):
    docs, queries = corpus
    index = SeismicIndex.build(docs, **{**APPROX_BUILD, "value_dtype": "float16"})
    res = index.search(queries, K, **APPROX_SEARCH)
    assert_well_formed(res, len(queries), K, len(docs))
    # the forward index holds float16 weights: compare against the float16-rounded documents
    docs16 = SparseBatch.from_arrays(docs.indptr, docs.indices, docs.values.astype(np.float16).astype(np.float32),
                                     ids=docs.ids, dim=docs.dim)
    ref = helpers.dot64(docs16, queries, res.ids)
    found = res.ids >= 0
    np.testing.assert_allclose(res.scores[found], ref[found], rtol=1e-5)


def test_approximate_recall_is_reasonable(helpers, corpus, truth, approx_index):
    res = approx_index.search(corpus[1], K, **APPROX_SEARCH)
    # measured 0.956 (tie-aware recall@10 of aftershock.eval.metrics); a regression in blocking, summaries or the
    # best-first visit shows up as a drop below 0.93
    assert helpers.recall_at_k(truth, res.ids) >= 0.93


# ---------------------------------------------------------------------------------------------- (b) exactness
@pytest.mark.parametrize(
    "overrides",
    [
        dict(clustering="random"),
        dict(clustering="kmeans", kmeans_iterations=2),
        dict(clustering="random", pruning="global", n_postings=2000),  # n_postings >= n_docs
        dict(clustering="kmeans", pruning="fixed", n_postings=2000),
    ],
    ids=["none-random", "none-kmeans", "global-big-random", "fixed-big-kmeans"],
)
def test_exact_settings_give_recall_one(helpers, corpus, truth, overrides):
    docs, queries = corpus
    index = SeismicIndex.build(docs, **{**EXACT_BUILD, **overrides})
    res = index.search(queries, K, **exact_search(queries))
    assert_well_formed(res, len(queries), K, len(docs))
    assert helpers.recall_at_k(truth.ids, res.ids) == 1.0
    np.testing.assert_array_equal(res.ids == -1, truth.ids == -1)
    f = truth.ids >= 0
    np.testing.assert_allclose(res.scores[f], truth.scores[f], rtol=1e-5)


def test_exact_settings_with_empty_docs(helpers):
    docs = helpers.make_batch(300, 80, 8, seed=31, empty_every=9)
    queries = helpers.make_batch(30, 80, 5, seed=32, empty_every=7)
    ref_s, ref_i = helpers.reference_topk(docs, queries, 8)
    index = SeismicIndex.build(docs, **EXACT_BUILD)
    res = index.search(queries, 8, **exact_search(queries))
    assert helpers.recall_at_k(ref_i, res.ids) == 1.0
    f = ref_i >= 0
    np.testing.assert_array_equal(res.ids >= 0, f)
    np.testing.assert_allclose(res.scores[f], ref_s[f], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- (c) determinism
def test_batch_equals_single_queries(corpus, approx_index):
    queries = corpus[1]
    batch = approx_index.search(queries, K, **APPROX_SEARCH)
    for i in range(len(queries)):
        one = approx_index.search(queries[i:i + 1], K, **APPROX_SEARCH)
        np.testing.assert_array_equal(one.scores[0], batch.scores[i], err_msg=f"query {i}")
        np.testing.assert_array_equal(one.ids[0], batch.ids[i], err_msg=f"query {i}")
    # reversed order: rows follow the queries
    rev = approx_index.search(queries[::-1], K, **APPROX_SEARCH)
    assert_same_result(SearchResult(rev.scores[::-1], rev.ids[::-1]), batch)


def test_threads_give_identical_output(corpus, approx_index):
    queries = corpus[1]
    one = approx_index.search(queries, K, threads=1, **APPROX_SEARCH)
    two = approx_index.search(queries, K, threads=2, **APPROX_SEARCH)
    again = approx_index.search(queries, K, threads=2, **APPROX_SEARCH)
    assert_same_result(one, two)
    assert_same_result(two, again)


def test_build_threads_give_identical_index(corpus):
    docs, queries = corpus
    sub = docs[:600]
    a = SeismicIndex.build(sub, threads=1, **APPROX_BUILD)
    b = SeismicIndex.build(sub, threads=2, **APPROX_BUILD)
    assert a.n_blocks == b.n_blocks
    assert_same_result(a.search(queries, K, **APPROX_SEARCH), b.search(queries, K, **APPROX_SEARCH))


def test_params_object_equals_keywords(corpus, approx_index):
    queries = corpus[1]
    a = approx_index.search(queries, K, params=SearchParams(query_cut=4, heap_factor=0.6))
    b = approx_index.search(queries, K, **APPROX_SEARCH)
    c = approx_index.search(queries, K, params=SearchParams(query_cut=9, heap_factor=0.6), query_cut=4)
    assert_same_result(a, b)
    assert_same_result(a, c)
    cfg = SeismicIndex.build(corpus[0][:300], config=SeismicConfig(**APPROX_BUILD))
    kw = SeismicIndex.build(corpus[0][:300], **APPROX_BUILD)
    assert cfg.config == kw.config
    assert_same_result(cfg.search(queries, K), kw.search(queries, K))


# ---------------------------------------------------------------------------------------------- (d) persistence
def test_save_load_mmap_identical(tmp_path, corpus, approx_index):
    queries = corpus[1]
    approx_index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", mmap=True)
    assert isinstance(loaded, SeismicIndex)
    assert len(loaded) == len(approx_index) and loaded.dim == approx_index.dim
    assert loaded.config == approx_index.config
    assert list(loaded.doc_ids) == list(approx_index.doc_ids)
    a = approx_index.search(queries, K, **APPROX_SEARCH)
    b = loaded.search(queries, K, **APPROX_SEARCH)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.ids, b.ids)
    c = load_index(tmp_path / "idx", mmap=False, verify=False).search(queries, K, **APPROX_SEARCH)
    assert_same_result(a, c)


def test_save_load_with_knn_and_vocab(tmp_path):
    rng = np.random.default_rng(41)
    vocab = Vocabulary([f"tok{i}" for i in range(40)])
    rows = [{f"tok{t}": float(rng.uniform(0.1, 1)) for t in rng.choice(40, 5, replace=False)} for _ in range(120)]
    docs = SparseBatch.from_dicts(rows, vocab=vocab)
    index = SeismicIndex.build(docs, knn=3, value_dtype="float32", n_postings=20)
    index.save(tmp_path / "k")
    loaded = load_index(tmp_path / "k")
    assert loaded.vocab == vocab
    q = docs[:10]
    assert_same_result(index.search(q, 5, n_knn=3), loaded.search(q, 5, n_knn=3))


def test_corrupted_saved_index_is_detected(tmp_path, approx_index):
    def big_files():  # the current generation's larger arrays (each save writes a new generation)
        return sorted(p for p in (tmp_path / "idx").glob("*.npy") if p.stat().st_size > 256)

    approx_index.save(tmp_path / "idx")
    assert big_files()
    for i in range(3):
        approx_index.save(tmp_path / "idx")  # fresh copy each round
        f = big_files()[i]
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2 + 100] ^= 0x10
        f.write_bytes(bytes(raw))
        with pytest.raises(IndexCorruptError):
            load_index(tmp_path / "idx", mmap=True)
    approx_index.save(tmp_path / "idx")
    big_files()[0].unlink()
    with pytest.raises(IndexCorruptError):
        load_index(tmp_path / "idx")


def test_save_over_existing_index(tmp_path, corpus, approx_index):
    small = SeismicIndex.build(corpus[0][:100], **APPROX_BUILD)
    small.save(tmp_path / "idx")
    approx_index.save(tmp_path / "idx")
    assert len(load_index(tmp_path / "idx")) == len(approx_index)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


# ---------------------------------------------------------------------------------------------- (e) knn
def test_knn_refinement_never_hurts(helpers, corpus, truth, knn_index):
    queries = corpus[1]
    plain = knn_index.search(queries, K, **APPROX_SEARCH)
    refined = knn_index.search(queries, K, n_knn=5, **APPROX_SEARCH)
    assert_well_formed(refined, len(queries), K, len(corpus[0]))
    # the refined candidates are a superset: every rank's score can only go up
    assert np.all(refined.scores >= plain.scores)
    assert helpers.recall_at_k(truth.ids, refined.ids) >= helpers.recall_at_k(truth.ids, plain.ids)
    ref = helpers.dot64(corpus[0], queries, refined.ids)
    f = refined.ids >= 0
    np.testing.assert_allclose(refined.scores[f], ref[f], rtol=1e-5)
    assert knn_index.config.knn == 5


def test_knn_search_without_graph(corpus, approx_index):
    with pytest.raises(ConfigError) as ei:
        approx_index.search(corpus[1], K, n_knn=5)
    assert "n_knn=5" in str(ei.value)


# ---------------------------------------------------------------------------------------------- (f) bad params
@pytest.mark.parametrize("kw", [dict(k=0), dict(k=-3), dict(k=1.5), dict(heap_factor=0), dict(heap_factor=1.5),
                                dict(heap_factor=-0.1), dict(query_cut=0), dict(n_knn=-1), dict(threads=0),
                                dict(query_cut=2**63), dict(n_knn=2**31)])
def test_bad_search_params(corpus, approx_index, kw):
    kw = dict(kw)
    k = kw.pop("k", K)
    with pytest.raises(ConfigError):
        approx_index.search(corpus[1], k, **kw)


@pytest.mark.parametrize("kw", [dict(centroid_fraction=0), dict(centroid_fraction=1.5), dict(summary_energy=0),
                                dict(summary_energy=1.1), dict(n_postings=0), dict(pruning="nope"),
                                dict(clustering="spectral"), dict(value_dtype="int8"), dict(doc_cut=0),
                                dict(knn=-1), dict(max_fraction=0)])
def test_bad_build_params(corpus, kw):
    with pytest.raises(ConfigError):
        SeismicIndex.build(corpus[0][:50], **kw)
    with pytest.raises(ConfigError):
        SeismicConfig(**kw)


def test_float16_overflow_needs_float32():
    docs = SparseBatch.from_rows([([0], [70000.0])], dim=2)
    with pytest.raises(ConfigError):
        SeismicIndex.build(docs)
    SeismicIndex.build(docs, value_dtype="float32")


def test_query_term_outside_index_dim(approx_index):
    q = SparseBatch.from_rows([([3, 600], [1.0, 1.0])], dim=700)
    with pytest.raises(TermIdOutOfRangeError) as ei:
        approx_index.search(q, K)
    assert "600" in str(ei.value) and "500" in str(ei.value)


# ---------------------------------------------------------------------------------------------- (g) golden
@pytest.mark.parametrize("value_dtype", ["float32", "float16"])
@pytest.mark.parametrize("clustering", ["random", "kmeans"])
def test_golden_hand_computed(value_dtype, clustering):
    docs = SparseBatch.from_dicts(
        [{0: 1.0, 1: 2.0}, {1: 1.0, 2: 3.0, 5: 0.5}, {0: 0.5, 3: 4.0}, {4: 2.0, 5: 1.5}],
        ids=["d0", "d1", "d2", "d3"], dim=6)
    queries = SparseBatch.from_dicts([{0: 2.0, 1: 1.0, 5: 2.0}, {2: 1.0, 3: 0.5}, {4: 0.25}, {}], dim=6)
    # q0: d0 = 2*1 + 1*2 = 4, d3 = 2*1.5 = 3, d1 = 1*1 + 2*0.5 = 2, d2 = 2*0.5 = 1
    # q1: d1 = 1*3 = 3, d2 = 0.5*4 = 2;  q2: d3 = 0.25*2 = 0.5;  q3: empty
    index = SeismicIndex.build(docs, pruning="none", summary_energy=1.0, value_dtype=value_dtype,
                               clustering=clustering)
    res = index.search(queries, 3, heap_factor=1.0, query_cut=3)
    np.testing.assert_array_equal(res.ids, [[0, 3, 1], [1, 2, -1], [3, -1, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(res.scores, np.float32([[4.0, 3.0, 2.0], [3.0, 2.0, -np.inf],
                                                          [0.5, -np.inf, -np.inf], [-np.inf] * 3]))
    assert res.doc_ids(index.doc_ids) == [["d0", "d3", "d1"], ["d1", "d2"], ["d3"], []]
    full = index.search(queries[:1], 4, heap_factor=1.0, query_cut=3)
    np.testing.assert_array_equal(full.ids, [[0, 3, 1, 2]])
    np.testing.assert_array_equal(full.scores, np.float32([[4.0, 3.0, 2.0, 1.0]]))


# ---------------------------------------------------------------------------------------------- (h) empty queries
def test_empty_query_rows(corpus, approx_index):
    queries = corpus[1]
    empty = queries.nnz_per_row() == 0
    assert empty.any() and (~empty).any()
    res = approx_index.search(queries, K, **APPROX_SEARCH)
    assert np.all(res.ids[empty] == -1) and np.all(np.isneginf(res.scores[empty]))
    assert np.all(res.ids[~empty][:, 0] >= 0)
    only_empty = SparseBatch.from_rows([([], []), ([], [])], dim=500)
    r2 = approx_index.search(only_empty, 4)
    np.testing.assert_array_equal(r2.ids, np.full((2, 4), -1))
    assert np.all(np.isneginf(r2.scores))
    r0 = approx_index.search(SparseBatch.from_rows([], dim=500), 4)
    assert r0.scores.shape == r0.ids.shape == (0, 4)


def test_padding_when_fewer_than_k_match(corpus, approx_index):
    # a query on a single term matches at most that term's posting list
    docs = corpus[0]
    term = int(np.argmin(np.bincount(docs.indices, minlength=docs.dim)))
    n_match = int(np.count_nonzero(docs.indices == term))
    q = SparseBatch.from_rows([([term], [1.0])], dim=docs.dim)
    exact = SeismicIndex.build(docs, **EXACT_BUILD)
    res = exact.search(q, n_match + 5, heap_factor=1.0, query_cut=1)
    assert np.all(res.ids[0, :n_match] >= 0) and np.all(res.ids[0, n_match:] == -1)
    assert np.all(np.isneginf(res.scores[0, n_match:]))


# ---------------------------------------------------------------------------------------------- large dim
def test_vocabulary_over_65535_terms(helpers):
    dim = 100_000
    vocab = Vocabulary([f"t{i}" for i in range(dim)])
    rng = np.random.default_rng(51)
    hot = np.array([0, 12, 65_535, 65_536, 70_000, 99_999])
    rows = []
    for _ in range(300):
        terms = np.unique(np.r_[rng.choice(hot, 3, replace=False), rng.integers(0, dim, 5)])
        rows.append({f"t{t}": float(rng.uniform(0.1, 1.0)) for t in terms})
    docs = SparseBatch.from_dicts(rows, vocab=vocab)
    assert docs.dim == dim and int(docs.indices.max()) >= 65_536
    queries = SparseBatch.from_dicts([{"t99999": 1.0, "t65536": 0.5}, {"t70000": 0.3, "t12": 1.0, "t5": 0.2},
                                      {"t65535": 2.0}], vocab=vocab)
    ref_s, ref_i = helpers.reference_topk(docs, queries, 10)
    exact = ExactIndex.build(docs).search(queries, 10)
    np.testing.assert_array_equal(exact.ids, ref_i)
    for clustering in ("random", "kmeans"):
        index = SeismicIndex.build(docs, clustering=clustering, **EXACT_BUILD)
        res = index.search(queries, 10, **exact_search(queries))
        assert helpers.recall_at_k(ref_i, res.ids) == 1.0
        f = ref_i >= 0
        np.testing.assert_allclose(res.scores[f], ref_s[f], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- zero weights
def test_explicit_zero_weights(tmp_path):
    """Weights of exactly 0 are valid input (>= 0). Run in a child process: a memory bug must fail the test,
    not crash the test session."""
    code = textwrap.dedent("""
        import numpy as np
        from aftershock import SparseBatch, SeismicIndex
        rows = [(np.arange(6), np.zeros(6)) for _ in range(50)] + [([0, 1], [1.0, 2.0])]
        docs = SparseBatch.from_rows(rows, dim=6)
        index = SeismicIndex.build(docs, pruning="none", summary_energy=1.0, value_dtype="float32",
                                   centroid_fraction=0.01, min_cluster_size=1)
        res = index.search(SparseBatch.from_rows([([0, 1], [1.0, 1.0])], dim=6), 1, heap_factor=1.0)
        assert res.ids[0, 0] == 50 and res.scores[0, 0] == 3.0, res
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's package
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=170, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, (
        f"exit code {proc.returncode}; stderr tail:\n{proc.stderr[-1500:]}")


# ---------------------------------------------------------------------------------------------- summary layout
def test_summaries_bound_blocks_across_long_gaps():
    """A list of > 255 blocks where a term appears only in its first and last block (a block gap > 255,
    stored with skip markers) and a term in > 255 blocks (entry count stored in the overflow array):
    the decoded summaries are exactly each block's coordinate maxima, rounded up by < one quantization step."""
    rng = np.random.default_rng(7)
    n = 700
    rows = []
    for d in range(n):
        terms = {0: 1.0 + rng.random(), 1 + d: 0.5 + rng.random()}  # term 0 in every doc, one private term
        if d in (0, n - 1):
            terms[5000] = 2.0  # rare term at both ends of list 0
        rows.append((np.array(sorted(terms)), np.array([terms[t] for t in sorted(terms)], np.float32)))
    docs = SparseBatch.from_rows(rows, dim=6000)
    index = SeismicIndex.build(docs, pruning="none", summary_energy=1.0, value_dtype="float32",
                               centroid_fraction=1.0, min_cluster_size=1)
    nb0 = int(index.term_blk_ptr[1] - index.term_blk_ptr[0])
    assert nb0 > 300, nb0
    assert index.ovf_cnt.shape[0] >= 1 and (index.ent_delta == 0).any()  # both escape paths were used
    ptr, terms, vals = index.block_summaries()
    fwd = SparseBatch(index.fwd_ptr, index.fwd_idx.astype(np.int32), index._decoded_values(), index.doc_ids, 6000)
    for b in range(index.n_blocks):
        mx = {}
        for d in index.blk_docs[index.blk_doc_ptr[b]:index.blk_doc_ptr[b + 1]]:
            for t, v in zip(*fwd.row(int(d))):
                mx[int(t)] = max(mx.get(int(t), 0.0), float(v))
        got = dict(zip(terms[ptr[b]:ptr[b + 1]].tolist(), vals[ptr[b]:ptr[b + 1]].tolist()))
        assert sorted(got) == sorted(mx), b
        step = float(index.sum_step[b])
        for t, v in mx.items():
            assert v <= got[t] + 1e-6 and got[t] - v <= step + 1e-6
    q = SparseBatch.from_rows([([0, 5000], [1.0, 1.0])], dim=6000)
    exact = ExactIndex.build(docs).search(q, 2)
    res = index.search(q, 2, query_cut=2, heap_factor=1.0)
    assert sorted(res.ids[0].tolist()) == sorted(exact.ids[0].tolist())


@pytest.mark.parametrize("max_block", [3, 8])
def test_max_block_size_bounds_blocks_and_keeps_exactness(helpers, corpus, truth, max_block):
    """Split clusters never exceed max_block_size, every posting is still in exactly one block of its list,
    and exact settings still give recall 1.0."""
    docs, queries = corpus
    plain = SeismicIndex.build(docs, **EXACT_BUILD)
    index = SeismicIndex.build(docs, max_block_size=max_block, **EXACT_BUILD)
    assert int(np.diff(index.blk_doc_ptr.astype(np.int64)).max()) <= max_block
    assert index.n_blocks > plain.n_blocks
    for t in range(docs.dim):  # same postings per list, only regrouped
        def postings(ix):
            a, b = ix.blk_doc_ptr[ix.term_blk_ptr[t]], ix.blk_doc_ptr[ix.term_blk_ptr[t + 1]]
            return sorted(ix.blk_docs[a:b].tolist())
        assert postings(index) == postings(plain)
    res = index.search(queries, K, **exact_search(queries))
    assert helpers.recall_at_k(truth.ids, res.ids) == 1.0
