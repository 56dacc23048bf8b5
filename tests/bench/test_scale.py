"""benchmarks/scale (`aftershock bench scale`): the generator (df bands, permutations, grown documents, remapped
queries, the compact seed), the log-log slope, size parsing, and a tiny end-to-end run with a merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aftershock.cli.bench import load_suite
from aftershock.index import SparseBatch, write_npz
from aftershock.seismic import ExactIndex

load_suite("scale")  # benchmarks/scale beside the package
from benchmarks.ann import peers
from benchmarks.scale import driver, report
from benchmarks.scale import generate as gen

HAS_SEISMIC = peers._seismic_available()


@pytest.fixture(scope="module")
def src(helpers):
    # a skewed vocabulary: low term ids are frequent (a few head terms alone in their band, a long tail)
    rng = np.random.default_rng(5)
    n, dim = 400, 300
    p = 1.0 / np.arange(1, dim + 1) ** 1.1
    p /= p.sum()
    rows = []
    for _ in range(n):
        m = int(rng.integers(3, 25))
        t = np.sort(rng.choice(dim - 20, m, replace=False, p=p[: dim - 20] / p[: dim - 20].sum()))  # 20 unused ids
        rows.append((t, rng.uniform(0.05, 2.0, m).astype(np.float32)))
    ip = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])]).astype(np.int64)
    docs = SparseBatch.from_arrays(ip, np.concatenate([t for t, _ in rows]), np.concatenate([v for _, v in rows]),
                                   dim=dim)
    queries = helpers.make_batch(30, dim, 8, seed=6)
    return docs, queries


def test_bands_group_similar_df_and_copy_zero_is_identity(src):
    docs, _ = src
    df = gen.term_df(docs.indptr, docs.indices, docs.dim)
    band = gen.df_bands(df, 1.1)
    assert (band[df == 0] == -1).all() and (band[df > 0] >= 0).all()
    for b in np.unique(band[df > 0]):
        d = df[band == b]
        assert d.max() <= d.min() * 1.1 + 1e-9  # within the band ratio
    assert np.array_equal(gen.copy_permutation(band, 0), np.arange(docs.dim))
    for c in (1, 2):
        perm = gen.copy_permutation(band, c, seed=3)
        assert np.array_equal(np.sort(perm), np.arange(docs.dim))  # a permutation
        assert np.array_equal(band[perm], band)  # that never leaves a band
        assert np.array_equal(perm, gen.copy_permutation(band, c, seed=3))  # seeded
    assert not np.array_equal(gen.copy_permutation(band, 1), gen.copy_permutation(band, 2))


def test_grown_docs_keep_rows_and_grow_posting_lists(src):
    docs, _ = src
    n_src = len(docs)
    n = 2 * n_src + 150
    ip, ind, val = gen.grow_docs(docs.indptr, docs.indices, docs.values, docs.dim, n, seed=9)
    g = SparseBatch.from_arrays(ip, ind, val, dim=docs.dim)  # validates: sorted, unique, in range
    assert len(g) == n
    # copy 0 is the source; copy 1 has the same rows (lengths, weights as multisets) under other term names
    assert np.array_equal(ip[: n_src + 1], docs.indptr)
    assert np.array_equal(ind[: docs.nnz], docs.indices) and np.array_equal(val[: docs.nnz], docs.values)
    ln = np.diff(ip)
    assert np.array_equal(ln[n_src: 2 * n_src], np.diff(docs.indptr))
    for r in range(0, n_src, 37):
        a, b = docs.indptr[r], docs.indptr[r + 1]
        assert sorted(val[docs.nnz + a: docs.nnz + b]) == sorted(docs.values[a:b])
    # the partial copy: 150 distinct source rows
    assert set(ln[2 * n_src:]) <= set(np.diff(docs.indptr))
    # posting lengths per copy: the same distribution, the same total
    s0 = gen.set_stats(docs.indptr, docs.indices, docs.values, docs.dim)
    s1 = gen.set_stats(ip, ind, val, docs.dim, copies=n / n_src)
    assert s1["nnz_per_doc_mean"] == pytest.approx(s0["nnz_per_doc_mean"], rel=0.1)
    assert s1["posting_len_mean_per_copy"] == pytest.approx(s0["posting_len_mean_per_copy"], rel=0.1)
    assert s1["posting_len_per_copy_q"][-1] == pytest.approx(s0["posting_len_per_copy_q"][-1], rel=0.15)
    assert "| posting length / copies q0.5 |" in gen.stats_table(s0, s1)


def test_remapped_queries_score_their_copy_as_the_source_does(src):
    docs, queries = src
    n_src, n = len(docs), 3 * len(docs)
    band = gen.df_bands(gen.term_df(docs.indptr, docs.indices, docs.dim))
    g = SparseBatch.from_arrays(*gen.grow_docs(docs.indptr, docs.indices, docs.values, docs.dim, n, band=band),
                                dim=docs.dim)
    (qp, qi, qv), copy = gen.remap_queries(queries.indptr, queries.indices, queries.values, band, n_src, n)
    assert set(copy) <= {0, 1, 2} and len(set(copy)) > 1
    rq = SparseBatch.from_arrays(qp, qi, qv, dim=docs.dim)
    src_scores = ExactIndex.build(docs).search(queries, n_src)
    exact = ExactIndex.build(g)
    for i in range(len(queries)):
        c = int(copy[i])
        got = exact.search(rq[i:i + 1], n).scores[0]
        ids = exact.search(rq[i:i + 1], n).ids[0]
        mine = got[(ids >= c * n_src) & (ids < (c + 1) * n_src)]
        want = src_scores.scores[i]
        k = int(np.isfinite(want).sum())
        np.testing.assert_allclose(np.sort(mine[np.isfinite(mine)])[::-1][:k], want[:k], rtol=1e-5)


def test_seed_round_trip(src, tmp_path):
    docs, queries = src
    meta = gen.pack_seed(tmp_path / "seed.npz", docs, queries, n_queries=10)
    (ip, ind, val, dim), (qp, _qi, qv, _qdim), m2 = gen.unpack_seed(tmp_path / "seed.npz")
    assert meta == m2 and dim == docs.dim and meta["n_queries"] == 10
    assert np.array_equal(ip, docs.indptr) and np.array_equal(ind, docs.indices)  # term ids exact
    rel = np.abs(val - docs.values) / docs.values
    assert rel.max() < 0.02  # 256 log levels over [1e-3, max]
    assert np.array_equal(qp, queries.indptr[:11]) and np.array_equal(qv, queries.values[: qp[-1]])


def test_slope_and_sizes():
    ns = [1e5, 1e6, 1e7]
    assert report.loglog_slope(ns, [3 * n for n in ns]) == pytest.approx(1.0)
    assert report.loglog_slope(ns, [n ** 0.5 for n in ns]) == pytest.approx(0.5)
    assert report.loglog_slope([1e5], [1.0]) is None and report.loglog_slope(ns, [None, None, 1.0]) is None
    assert driver.parse_sizes("1M, 268640,500k,1M,2.5M") == [268640, 500_000, 1_000_000, 2_500_000]
    for bad in ("", "x", "0", "-1M"):
        with pytest.raises(ValueError):
            driver.parse_sizes(bad)


def test_end_to_end_tiny_and_merge(src, tmp_path, capsys):
    docs, queries = src
    write_npz(docs, tmp_path / "d.npz")
    write_npz(queries, tmp_path / "q.npz")
    systems = "aftershock" + (",seismic" if HAS_SEISMIC else "")
    base = ["--docs", str(tmp_path / "d.npz"), "--queries", str(tmp_path / "q.npz"), "--dim", str(docs.dim),
            "--n-queries", "12", "--n-timed", "6", "--n-postings", "30", "--sweep", "2:0.9,30:0.3", "--threads", "2",
            "--systems", systems, "--out", str(tmp_path / "out"), "--tmp", str(tmp_path)]
    assert driver.main([*base, "--sizes", "400,900", "--tag", "a"]) == 0
    rep = json.loads((tmp_path / "out" / "a.json").read_text(encoding="utf-8"))
    assert [s["n_docs"] for s in rep["sizes"]] == [400, 900]
    assert {(r["n_docs"], r["system"]) for r in rep["rows"]} == {(n, s) for n in (400, 900) for s in systems.split(",")}
    for r in rep["rows"]:
        assert "error" not in r, r.get("error")
        assert r["build_s"] > 0 and r["peak_rss_mb"] > 0 and r["index_mb"] > 0
        assert [p["knobs"] for p in r["points"]] == ["2:0.9", "30:0.3"]
        assert all(0 <= p["recall"] <= 1 and p["mean_us"] > 0 and p["batch_qps"] > 0 for p in r["points"])
        assert r["points"][-1]["recall"] >= 0.9  # 30 lists, heap_factor 0.3: near exact on this tiny set
    assert set(rep["slopes"]["aftershock"]) >= {"build_s", "peak_rss_mb", "index_mb"}
    assert rep["sizes"][1]["stats"]["copies"] == pytest.approx(900 / 400)
    assert (tmp_path / "out" / "a.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "| N docs | system |" in out and "log-log slope" in out
    # a second run of one more size, merged with the first
    assert driver.main([*base, "--sizes", "1200", "--tag", "b", "--systems", "aftershock"]) == 0
    assert driver.main(["--merge", str(tmp_path / "out" / "a.json"), str(tmp_path / "out" / "b.json"),
                        "--out", str(tmp_path / "out"), "--tag", "m"]) == 0
    m = json.loads((tmp_path / "out" / "m.json").read_text(encoding="utf-8"))
    assert sorted({r["n_docs"] for r in m["rows"]}) == [400, 900, 1200]
    assert {r["run"] for r in m["rows"]} == {"a.json", "b.json"}
    assert m["slopes"]["aftershock"]["build_s"] is not None
