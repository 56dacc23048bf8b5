"""benchmarks/ann (`aftershock bench ann`): the ANN driver of the source checkout (Pareto read-off, sweep parsing,
an end-to-end run on tiny data with every installed system, BMP quantization, output locations)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aftershock.cli.bench import load_suite
from aftershock.eval.metrics import pareto_frontier, us_at_recall
from aftershock.index import write_npz

ann = load_suite("ann")  # benchmarks/ann beside the package
from benchmarks.ann import common, driver, peers  # noqa: E402  (importable once load_suite put the checkout first)
from benchmarks.ann.args import parse_bmp_sweep, parse_sizes, parse_sweep  # noqa: E402

HAS_SEISMIC = peers._seismic_available()
HAS_BMP = peers.bmp_available()


# ---------------------------------------------------------------------------------------------- Pareto
def test_pareto_frontier_drops_dominated_points():
    pts = [(10, 0.8), (20, 0.9), (15, 0.7), (40, 0.95), (30, 0.85), (50, 0.99), (60, 0.99), (float("nan"), 1.0)]
    assert pareto_frontier(pts) == [(10, 0.8), (20, 0.9), (40, 0.95), (50, 0.99)]
    assert pareto_frontier([(10, 0.8), (10, 0.9)]) == [(10, 0.9)]  # same cost: the better recall wins
    assert pareto_frontier([]) == []


def test_us_at_recall_interpolates_on_the_frontier():
    pts = [(10, 0.8), (20, 0.9), (15, 0.7), (40, 0.95), (30, 0.85), (50, 0.99)]
    assert us_at_recall(pts, 0.9) == pytest.approx(20)  # a frontier point exactly
    assert us_at_recall(pts, 0.85) == pytest.approx(15)  # halfway 10 -> 20 (the dominated (30, 0.85) is ignored)
    assert us_at_recall(pts, 0.97) == pytest.approx(45)  # halfway 40 -> 50
    assert us_at_recall(pts, 0.5) == pytest.approx(10)  # the cheapest point already reaches it
    assert us_at_recall(pts, 0.995) is None  # never reached
    assert us_at_recall([], 0.9) is None
    assert us_at_recall([(7.0, 1.0)], 0.95) == pytest.approx(7.0)


def test_parse_sweep():
    assert parse_sweep("10:0.9, 20:0.7,10:0.9") == [(10, 0.9), (20, 0.7)]
    for bad in ("10", "10:0", "0:0.5", "a:b", "10:1.5", ""):
        with pytest.raises(ValueError):
            parse_sweep(bad)
    assert parse_sweep(common.DEFAULT_SWEEP)


def test_parse_bmp_knobs():
    assert parse_bmp_sweep("1:1, 0.8:0.9,1:1") == [(1.0, 1.0), (0.8, 0.9)]
    for bad in ("1", "0:1", "1:0", "1.5:1", "a:b", ""):
        with pytest.raises(ValueError):
            parse_bmp_sweep(bad)
    assert parse_bmp_sweep(common.DEFAULT_BMP_SWEEP)[0] == (1.0, 1.0)
    assert parse_sizes("64,16,32,16") == [16, 32, 64]
    for bad in ("", "0", "a", "-4"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_bmp_impacts_are_8_bit():
    q = peers.quantize_impacts(np.array([0.0, 0.001, 1.0, 2.0, 4.0]), max_weight=4.0)
    assert q.tolist() == [0, 0, 64, 128, 255]  # round(w x 255 / 4)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, helpers):
    d = tmp_path_factory.mktemp("ann_data")
    docs = helpers.make_batch(300, 200, 20, seed=31)
    queries = helpers.make_batch(20, 200, 6, seed=32)
    write_npz(docs, d / "docs.npz")
    write_npz(queries, d / "queries.npz")
    return d / "docs.npz", d / "queries.npz"


def _run(tmp_path, tiny, *extra):
    docs, queries = tiny
    argv = ["--docs", str(docs), "--queries", str(queries), "--dim", "200", "--n-queries", "15",
            "--n-postings", "40", "--sweep", "2:0.9,5:0.7", "--threads", "2", "--dataset", "tiny",
            "--out", str(tmp_path), "--bmp-sweep", "1:1,0.5:0.5", "--bmp-bsize", "8,16", *extra]
    rc = driver.main(argv)
    return rc, argv


def test_main_end_to_end(tmp_path, tiny, capsys):
    systems = "aftershock,exact" + (",seismic" if HAS_SEISMIC else "") + (",bmp" if HAS_BMP else "")
    rc, argv = _run(tmp_path, tiny, "--systems", systems, "--clustering", "random,kmeans",
                    "--results", str(tmp_path / "R.md"))
    assert rc == 0
    report = json.loads((tmp_path / "ann_tiny.json").read_text(encoding="utf-8"))
    names = set(report["systems"])
    assert {"aftershock-random", "aftershock-kmeans", "exact"} <= names
    assert ("seismic" in names) == HAS_SEISMIC
    assert ({"bmp-b8", "bmp-b16"} <= names) == HAS_BMP
    assert report["data"]["n_queries"] == 15
    for name, s in report["systems"].items():
        assert "error" not in s, (name, s.get("error"))
        assert s["peak_rss_kb"] > 0 and s["build_s"] >= 0 and s["index_bytes"] > 0
        for p in s["points"]:
            assert 0.0 <= p["recall"] <= 1.0
            assert p["mean_us"] > 0 and p["p99_us"] >= 0 and p["batch_qps"] > 0
        if name.startswith("bmp"):
            assert [p["knobs"] for p in s["points"]] == ["1:1", "0.5:0.5"]
            assert s["points"][0]["recall"] >= 0.9  # alpha = beta = 1: exact up to the 8-bit impacts
        elif name != "exact":
            assert [(p["query_cut"], p["heap_factor"]) for p in s["points"]] == [(2, 0.9), (5, 0.7)]
            assert all(p["single_matches_batch"] == 1.0 for p in s["points"])
    assert report["systems"]["exact"]["points"][0]["recall"] == 1.0
    ref = report["exact_ref"]
    assert ref["scipy_recall"] == pytest.approx(1.0) and ref["aftershock_exact_us"] > 0
    for t in ("0.90", "0.95"):
        v = report["pareto"]["exact"][t]["us"]
        assert v is not None and math.isfinite(v)
    peers_run = (["seismic"] if HAS_SEISMIC else []) + (["bmp-b8", "bmp-b16"] if HAS_BMP else [])
    assert set(report["ratios"]) == {f"{a} / {p}" for a in ("aftershock-random", "aftershock-kmeans") for p in peers_run}
    if HAS_SEISMIC:
        assert report["systems"]["seismic"]["index_bytes_source"]
    assert (tmp_path / "ann_tiny.png").stat().st_size > 0

    md = (tmp_path / "R.md").read_text(encoding="utf-8")
    assert "aftershock bench ann --docs" in md
    assert report["command"] in md  # every option spelled out
    assert "--clustering random,kmeans" in md and "--n-queries 15" in md
    assert "ann_tiny.png" in md and "recall@10" in md
    out = capsys.readouterr().out
    assert "| system | knobs | recall@10 |" in out

    # a second run appends a second section
    rc, _ = _run(tmp_path, tiny, "--systems", "exact", "--start-method", "spawn", "--results", str(tmp_path / "R.md"))
    assert rc == 0
    assert (tmp_path / "R.md").read_text(encoding="utf-8").count("## ANN: tiny") == 2


def test_nothing_is_appended_without_results_and_out_is_respected(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --results would land here (benchmarks/RESULTS.md)
    out = tmp_path / "elsewhere"
    docs, queries = tiny
    rc = driver.main(["--docs", str(docs), "--queries", str(queries), "--dim", "200", "--n-queries", "5",
                      "--systems", "exact", "--dataset", "t", "--out", str(out)])
    assert rc == 0
    assert (out / "ann_t.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


def test_missing_seismic_is_skipped_with_a_note(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(driver, "_seismic_available", lambda: False)
    monkeypatch.setattr(driver, "bmp_available", lambda: False)
    rc, _ = _run(tmp_path, tiny, "--systems", "seismic,bmp,exact")
    assert rc == 0
    report = json.loads((tmp_path / "ann_tiny.json").read_text(encoding="utf-8"))
    assert list(report["systems"]) == ["exact"]
    assert any(n.startswith("seismic skipped") and "pip install 'aftershock[bench]'" in n for n in report["notes"])
    assert any(n.startswith("bmp skipped") for n in report["notes"])
    assert not (tmp_path / "R.md").exists()


def test_bad_arguments_exit_2(tmp_path, tiny):
    for extra in (["--systems", "faiss"], ["--sweep", "10"], ["--clustering", "hdbscan"], ["--n-knn", "5"],
                  ["--summary-energy", "0"], ["--bmp-sweep", "2:1"], ["--bmp-bsize", "0"]):
        with pytest.raises(SystemExit) as e:
            _run(tmp_path, tiny, *extra)
        assert e.value.code == 2
