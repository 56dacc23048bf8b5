"""Filtering inside the Seismic heap (`SeismicIndex._search_allowed`, the kernels' ``allowed`` mask) against
brute force, and the collection's guarantee that a filtered search returns k hits whenever k allowed
documents match (the exact completion of queries the blocked search leaves short)."""

from __future__ import annotations

import numpy as np
import pytest
from collection_helpers import brute_scores, check_topk, queries, random_docs

from aftershock import Collection, CollectionConfig, ExactIndex, SearchParams, SeismicConfig, SeismicIndex
from aftershock.errors import ConfigError

EXACT_BUILD = dict(pruning="none", summary_energy=1.0, value_dtype="float32")
N = 400


@pytest.fixture(scope="module")
def docs():
    return random_docs(np.random.default_rng(5), [f"d{i}" for i in range(N)])


@pytest.fixture(scope="module")
def exact_seismic(docs):
    return SeismicIndex.build(docs, SeismicConfig(**EXACT_BUILD, knn=5), threads=1)


def _model(docs):
    return {str(docs.ids[i]): docs.row(i) for i in range(len(docs))}


def _as_ids(res, docs):
    return res.scores, np.where(res.ids >= 0, docs.ids[np.maximum(res.ids, 0)], None)


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("n_knn", [0, 5])
def test_masked_search_equals_brute_force(docs, exact_seismic, frac, n_knn):
    """Exact settings (no pruning, full summaries, no early stop): the masked search is the filtered top-k."""
    rng = np.random.default_rng(int(frac * 100) + n_knn)
    allowed = rng.random(N) < frac
    qs = queries(n=12)
    params = SearchParams(query_cut=100, heap_factor=1.0, n_knn=n_knn)
    res = exact_seismic._search_allowed(qs, 10, params, allowed)
    names = {str(docs.ids[i]) for i in np.flatnonzero(allowed)}
    check_topk(_as_ids(res, docs), _model(docs), qs, 10, allowed=names)


def test_mask_dtypes_and_no_mask_agree(docs, exact_seismic):
    qs = queries(n=6)
    p = SearchParams(query_cut=3, heap_factor=0.6)
    mask = np.arange(N) % 3 == 0
    a = exact_seismic._search_allowed(qs, 7, p, mask)
    b = exact_seismic._search_allowed(qs, 7, p, mask.astype(np.uint8))
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
    full = exact_seismic._search_allowed(qs, 7, p, np.ones(N, bool))
    plain = exact_seismic.search(qs, 7, p)
    assert np.array_equal(full.ids, plain.ids) and np.array_equal(full.scores, plain.scores)


def test_approximate_masked_search_never_returns_excluded_rows(docs):
    """Pruned index, early stop, kNN refinement on: whatever the approximation, no excluded row is scored
    or returned, and the work counted is below the unfiltered search's."""
    ix = SeismicIndex.build(docs, SeismicConfig(n_postings=40, knn=8), threads=1)
    qs = queries(n=20)
    p = SearchParams(query_cut=2, heap_factor=0.7, n_knn=8)
    mask = np.random.default_rng(1).random(N) < 0.2
    res = ix._search_allowed(qs, 10, p, mask)
    got = res.ids[res.ids >= 0]
    assert got.size and mask[got].all()
    filtered_scored = ix.last_stats["docs_scored"].sum()
    ix.search(qs, 10, p)
    assert filtered_scored <= ix.last_stats["docs_scored"].sum()


def test_bad_mask_is_refused(exact_seismic):
    with pytest.raises(ConfigError, match="one bool per row"):
        exact_seismic._search_allowed(queries(n=1), 5, SearchParams(), np.ones(N - 1, bool))


@pytest.mark.parametrize("threads", [1, 2])
def test_collection_filter_returns_k_when_k_allowed_match(tmp_path, threads):
    """Very approximate knobs (one posting list per query, a pruned index): the blocked search alone leaves
    queries short of k; the collection completes them exactly, so every query gets min(k, allowed matches)."""
    rng = np.random.default_rng(9)
    ids = [f"d{i}" for i in range(N)]
    docs = random_docs(rng, ids)
    cfg = CollectionConfig(exact_threshold=50, buffer_docs=N, filter_exact_rows=0, filter_exact_fraction=0.0,
                           seismic=SeismicConfig(n_postings=20))
    c = Collection.create(tmp_path / "c", dim=docs.dim, config=cfg, schema={"part": "integer"})
    c.upsert(docs, metadata=[{"part": i % 4} for i in range(N)])
    c.flush()
    assert [s["kind"] for s in c.info()["segments"]] == ["seismic"]
    c.delete(ids[::10])
    qs = queries(n=15)
    model = {str(docs.ids[i]): docs.row(i) for i in range(N) if i % 10}
    filt = {"must": [{"key": "part", "range": {"lte": 1}}]}  # half the rows
    allowed = {f"d{i}" for i in range(N) if i % 4 <= 1 and i % 10}
    scores, got = c.search(qs, k=10, filter=filt, query_cut=1, heap_factor=0.1, threads=threads)
    for q in range(len(qs)):
        want = brute_scores(model, *qs.row(q), allowed=allowed)
        hits = [x for x in got[q] if x is not None]
        assert len(hits) == min(10, len(want)) and set(hits) <= allowed
    check_topk(c.search(qs, k=10, filter=filt, query_cut=100, heap_factor=1.0), model, qs, 10, allowed=allowed)
    c.close()


def test_collection_recall_against_exact_filtered(tmp_path):
    """Default knobs on a pruned Seismic segment: recall of the in-heap filter against the exact filtered
    top-10 stays high (a loose floor: the benchmark measures the real number on lexicon)."""
    from aftershock.eval.metrics import recall_at_k

    rng = np.random.default_rng(2)
    n = 3000
    docs = random_docs(rng, [f"d{i}" for i in range(n)], dim=200, max_terms=12)
    cfg = CollectionConfig(exact_threshold=100, buffer_docs=n, filter_exact_rows=0, filter_exact_fraction=0.0)
    c = Collection.create(tmp_path / "c", dim=docs.dim, config=cfg, schema={"part": "integer"})
    part = rng.integers(0, 10, n)
    c.upsert(docs, metadata=[{"part": int(p)} for p in part])
    c.flush()
    qs = random_docs(np.random.default_rng(4), [f"q{i}" for i in range(50)], dim=200, max_terms=6)
    filt = {"must": [{"key": "part", "match": {"any": [0, 1, 2]}}]}
    mask = np.isin(part, [0, 1, 2])
    sub = docs[np.flatnonzero(mask)]
    truth = ExactIndex.build(sub).search(qs, 20)
    truth_ids = np.where(truth.ids >= 0, sub.ids[np.maximum(truth.ids, 0)], None)
    _, got = c.search(qs, k=10, filter=filt)
    row_of = {d: i for i, d in enumerate(docs.ids)}
    as_rows = lambda a: np.array([[row_of[x] if x is not None else -1 for x in r] for r in a], np.int64)  # noqa
    from aftershock.index import SearchResult

    assert recall_at_k(SearchResult(truth.scores, as_rows(truth_ids)), as_rows(got), 10) >= 0.9
    c.close()


def test_exact_paths_for_one_query_and_a_batch_agree(tmp_path):
    """A small allowed set is scored exactly: per row from the forward index (a few queries) or through the
    copied rows' postings (a batch); both give the brute-force filtered top-k."""
    from aftershock.collection.search import COPY_BATCH, exact_limit

    rng = np.random.default_rng(12)
    docs = random_docs(rng, [f"d{i}" for i in range(N)])
    cfg = CollectionConfig(exact_threshold=50, buffer_docs=N, filter_exact_rows=60)
    assert exact_limit(cfg, N, 1) == 60 and exact_limit(cfg, N, COPY_BATCH) > 60
    c = Collection.create(tmp_path / "c", dim=docs.dim, config=cfg, schema={"part": "integer"})
    c.upsert(docs, metadata=[{"part": i % 10} for i in range(N)])
    c.flush()
    filt = {"must": [{"key": "part", "match": {"value": 3}}]}  # 40 rows: exact on both paths
    allowed = {f"d{i}" for i in range(N) if i % 10 == 3}
    qs = queries(n=COPY_BATCH + 2)
    batch = c.search(qs, k=6, filter=filt)
    check_topk(batch, _model(docs), qs, 6, allowed=allowed)
    for q in range(len(qs)):  # the same scores (ties at the k-th may pick different ids)
        one = c.search(qs[q:q + 1], k=6, filter=filt)
        assert np.allclose(one.scores[0], batch.scores[q])
        check_topk(one, _model(docs), qs[q:q + 1], 6, allowed=allowed)
    c.close()
