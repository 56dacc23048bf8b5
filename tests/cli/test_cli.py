"""The `aftershock` console script: build, search (TREC output), demo, bench dispatch and error handling."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from aftershock.cli import main
from aftershock.index import SearchResult, SparseBatch, Vocabulary, write_ids, write_vectors

DIM = 400
SUMMARY = re.compile(r"^searched (\d+) queries in [0-9.]+ s: [0-9.]+ us/query \(k=(\d+), (.*)threads=\d+\)$", re.M)


def _random_batch(n, nnz, seed, prefix, vocab=None) -> SparseBatch:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        m = int(rng.integers(1, nnz + 1))
        rows.append((rng.choice(DIM, size=m, replace=False), rng.random(m).astype(np.float32) + 0.01))
    return SparseBatch.from_rows(rows, ids=[f"{prefix}{i}" for i in range(n)], dim=DIM, vocab=vocab)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-data")
    docs = _random_batch(300, 30, 1, "doc-")
    queries = _random_batch(17, 8, 2, "q")
    write_vectors(docs, d / "docs.bin")  # .bin has no ids: they come from the companion file
    write_ids(docs.ids, d / "docs.ids.txt")
    write_vectors(queries, d / "queries.npz")
    write_ids(queries.ids, d / "queries.ids.txt")
    vocab = Vocabulary([f"tok{i}" for i in range(DIM)])
    vdocs = SparseBatch.from_arrays(docs.indptr, docs.indices, docs.values, ids=docs.ids, dim=DIM, vocab=vocab)
    vqueries = SparseBatch.from_arrays(queries.indptr, queries.indices, queries.values, ids=queries.ids, dim=DIM,
                                       vocab=vocab)
    write_vectors(vdocs, d / "docs.jsonl")
    write_vectors(vqueries, d / "queries.jsonl")
    return types.SimpleNamespace(dir=d, docs=docs, queries=queries)


def _exact_top(docs: SparseBatch, queries: SparseBatch, k: int):
    scores = (queries.to_scipy() @ docs.to_scipy().T).toarray()
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(str(docs.ids[j]), float(row[j])) for j in order if row[j] > 0])
    return out


def _read_run(path: Path) -> dict[str, list[tuple[str, int, float, str]]]:
    run: dict[str, list] = {}
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        assert len(parts) == 6, line
        qid, q0, docid, rank, score, tag = parts
        assert q0 == "Q0"
        run.setdefault(qid, []).append((docid, int(rank), float(score), tag))
    return run


def _check_run_shape(run, k):
    for qid, hits in run.items():
        assert [h[1] for h in hits] == list(range(1, len(hits) + 1)), qid  # ranks 1..n in file order
        scores = [h[2] for h in hits]
        assert scores == sorted(scores, reverse=True), qid  # best first
        assert len(hits) <= k
        assert len({h[0] for h in hits}) == len(hits)  # no duplicate docs


def _build(data, out, *extra):
    return main(["build", "--input", str(data.dir / "docs.bin"), "--ids", str(data.dir / "docs.ids.txt"),
                 "--dim", str(DIM), "--output", str(out), *extra])


def test_build_and_search_bin(data, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert _build(data, idx, "--n-postings", "50", "--centroid-fraction", "0.2", "--threads", "1") == 0
    out = capsys.readouterr().out
    assert "300 docs" in out and "blocks" in out and str(idx) in out
    assert (idx / "meta.json").exists()

    run_file = tmp_path / "run.trec"
    rc = main(["search", "--index", str(idx), "--queries", str(data.dir / "queries.npz"), "--query-ids",
               str(data.dir / "queries.ids.txt"), "--hits", "5", "--heap-factor", "1.0", "--query-cut", "8",
               "--threads", "1", "--output", str(run_file), "--tag", "mytag"])
    assert rc == 0
    out = capsys.readouterr().out
    m = SUMMARY.search(out)
    assert m, out
    assert m.group(1) == "17" and m.group(2) == "5"
    assert "query_cut=8, heap_factor=1.0" in m.group(3)
    assert "us/query" in out

    run = _read_run(run_file)
    _check_run_shape(run, 5)
    assert set(run) <= {f"q{i}" for i in range(17)}
    for qi, qid in enumerate(data.queries.ids):
        hits = run.get(qid, [])
        assert all(h[3] == "mytag" for h in hits)
        assert all(h[0].startswith("doc-") for h in hits)  # docids come from --ids, not row numbers
        if hits:  # the best hit found is a real document with its true score
            best_doc, best_score = hits[0][0], hits[0][2]
            true = dict((d, s) for d, s in _exact_top(data.docs, data.queries[qi:qi + 1], 300)[0])
            assert best_score == pytest.approx(true[best_doc], rel=1e-2)
    # recall against exact (the project's one definition) is high on this tiny set
    from aftershock.eval.metrics import recall_at_k

    row = {str(d): i for i, d in enumerate(data.docs.ids)}
    deep = _exact_top(data.docs, data.queries, 10)  # 2k deep, so ties with the 5th are seen
    ex_ids = np.full((len(deep), 10), -1, np.int64)
    ex_sc = np.full((len(deep), 10), -np.inf, np.float32)
    for qi, e in enumerate(deep):
        ex_ids[qi, :len(e)] = [row[d] for d, _ in e]
        ex_sc[qi, :len(e)] = [sc for _, sc in e]
    got = np.full((len(deep), 5), -1, np.int64)
    for qi, qid in enumerate(data.queries.ids):
        hits = [row[h[0]] for h in run.get(qid, [])]
        got[qi, :len(hits)] = hits
    assert recall_at_k(SearchResult(ex_sc, ex_ids), got, k=5) >= 0.8


def test_exact_build_search_matches_numpy(data, tmp_path, capsys):
    idx = tmp_path / "exact"
    assert _build(data, idx, "--exact") == 0
    assert "built exact index" in capsys.readouterr().out
    run_file = tmp_path / "run.trec"
    rc = main(["search", "--index", str(idx), "--queries", str(data.dir / "queries.npz"), "--query-ids",
               str(data.dir / "queries.ids.txt"), "--hits", "10", "--heap-factor", "0.5",
               "--output", str(run_file)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "exact" in SUMMARY.search(cap.out).group(3)
    assert "ignores" in cap.err  # query params are ignored by an exact index, and the user is told
    run = _read_run(run_file)
    _check_run_shape(run, 10)
    exact = _exact_top(data.docs, data.queries, 10)
    for qid, want in zip(data.queries.ids, exact):
        got = run.get(qid, [])
        assert [h[2] for h in got] == pytest.approx([s for _, s in want], rel=1e-5)
        assert {h[0] for h in got} == {d for d, _ in want} or len(set(s for _, s in want)) < len(want)
        assert all(h[3] == "aftershock-exact" for h in got)


def test_batches_give_the_same_run(data, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert _build(data, idx, "--threads", "1") == 0
    runs = []
    for bs in ("3", "10000"):
        f = tmp_path / f"run{bs}.trec"
        assert main(["search", "--index", str(idx), "--queries", str(data.dir / "queries.npz"), "--query-ids",
                     str(data.dir / "queries.ids.txt"), "--batch-size", bs, "--output", str(f)]) == 0
        runs.append(f.read_text())
    assert runs[0] == runs[1] and runs[0]
    capsys.readouterr()


def test_build_and_search_jsonl(data, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert main(["build", "--input", str(data.dir / "docs.jsonl"), "--output", str(idx), "--threads", "1",
                 "--pruning", "none"]) == 0
    capsys.readouterr()
    assert any(idx.glob("vocab.*.json"))  # JSONL tokens: the vocabulary is stored with the index
    # a query with a token the index never saw: it is dropped, not an error
    q = tmp_path / "q.jsonl"
    lines = (data.dir / "queries.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["vector"]["never-seen-token"] = 3.0
    q.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    run_file = tmp_path / "run.trec"
    assert main(["search", "--index", str(idx), "--queries", str(q), "--output", str(run_file), "-k", "3",
                 "--heap-factor", "1.0"]) == 0
    assert "us/query" in capsys.readouterr().out
    run = _read_run(run_file)
    _check_run_shape(run, 3)
    assert set(run) <= set(data.queries.ids)  # JSONL carries its own ids
    exact = _exact_top(data.docs, data.queries, 3)
    # the query with the unknown token scores like the original query
    assert run["q0"][0][2] == pytest.approx(exact[0][0][1], rel=1e-2)


def _assert_cli_error(capsys, rc, *fragments):
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.err.startswith("aftershock: error: ") or "\naftershock: error: " in cap.err, cap.err
    assert "Traceback" not in cap.err
    for frag in fragments:
        assert frag in cap.err


def test_missing_input_is_a_clean_error(tmp_path, capsys):
    rc = main(["build", "--input", str(tmp_path / "nope.bin"), "--output", str(tmp_path / "idx")])
    _assert_cli_error(capsys, rc, "nope.bin")
    assert not (tmp_path / "idx").exists()


def test_missing_ids_file_is_a_clean_error(data, tmp_path, capsys):
    rc = main(["build", "--input", str(data.dir / "docs.bin"), "--ids", str(tmp_path / "ids.txt"),
               "--output", str(tmp_path / "idx")])
    _assert_cli_error(capsys, rc, "ids.txt")


def test_missing_index_is_a_clean_error(data, tmp_path, capsys):
    rc = main(["search", "--index", str(tmp_path / "no-index"), "--queries", str(data.dir / "queries.npz"),
               "--output", str(tmp_path / "run.trec")])
    _assert_cli_error(capsys, rc, "no-index")


def test_corrupted_index_is_a_clean_error(data, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert _build(data, idx, "--threads", "1") == 0
    capsys.readouterr()
    meta = json.loads((idx / "meta.json").read_text())
    victim = idx / sorted(f for f in meta["files"] if f.endswith(".npy"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF  # same size, different content: only the checksum can tell
    victim.write_bytes(bytes(raw))
    rc = main(["search", "--index", str(idx), "--queries", str(data.dir / "queries.npz"),
               "--output", str(tmp_path / "run.trec")])
    _assert_cli_error(capsys, rc, victim.name)


def test_bad_parameter_is_a_clean_error(data, tmp_path, capsys):
    rc = _build(data, tmp_path / "idx", "--summary-energy", "1.5")
    _assert_cli_error(capsys, rc, "summary_energy")


def test_argparse_errors_return_2(capsys):
    assert main(["build", "--format", "csv", "--input", "x", "--output", "y"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["search", "--index", "i", "--queries", "q", "--output", "o", "--hits", "0"]) == 2
    capsys.readouterr()
    assert main(["--help"]) == 0
    assert "build" in capsys.readouterr().out


def test_bench_dispatches_to_the_checkout_driver(monkeypatch, capsys):
    seen = {}
    fake = types.ModuleType("benchmarks.ann")

    def fake_main(argv):
        seen["argv"] = argv
        return 0

    fake.main = fake_main
    monkeypatch.setitem(sys.modules, "benchmarks.ann", fake)
    assert main(["bench", "ann", "--dataset", "x", "--help"]) == 0
    assert seen["argv"] == ["--dataset", "x", "--help"]


def test_bench_finds_the_driver_beside_the_package():
    from aftershock.cli import bench

    assert (bench.benchmarks_dir() / "ann" / "__init__.py").is_file()


def test_bench_without_the_checkout_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AFTERSHOCK_BENCHMARKS", str(tmp_path / "benchmarks"))  # as a pip install: no drivers
    rc = main(["bench", "ann", "--help"])
    _assert_cli_error(capsys, rc, "source checkout")
    assert main(["bench", "nope"]) == 2
    assert main(["bench"]) == 2


def test_console_entry_point_exit_code(tmp_path):
    """`run()` (the console script) exits with main()'s status and prints no traceback."""
    p = subprocess.run([sys.executable, "-c", "from aftershock.cli import run; run()", "build", "--input",
                        str(tmp_path / "missing.npz"), "--output", str(tmp_path / "idx")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("aftershock: error: ") and "Traceback" not in p.stderr


def test_demo_runs(capsys):
    assert main(["demo", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "1400 docs" in out and "225 queries" in out
    assert "recall@10" in out
    rows = [line for line in out.splitlines() if re.match(r"^(exact|seismic|\s+[01]\.\d)\s", line)]
    assert len(rows) >= 3
    recalls = [float(r.split()[-2 if "nDCG@10" in out else -1]) for r in rows]
    assert all(0.97 <= r <= 1.0 for r in recalls)  # measured 0.998-1.000 on the bundled Cranfield vectors
    try:
        import ir_measures  # noqa: F401

        assert "nDCG@10" in out
    except ImportError:
        assert "ir-measures is not installed" in out
    assert "query 1:" in out and "query 2:" in out


def test_demo_without_ir_measures(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ir_measures", None)  # `import ir_measures` raises ImportError
    assert main(["demo", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "recall@10" in out and "nDCG@10 not shown: ir-measures is not installed" in out


def test_jsonl_queries_against_an_index_without_vocabulary(data, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert _build(data, idx, "--exact") == 0  # from .bin: the index stores no vocabulary
    q = tmp_path / "q.jsonl"
    write_vectors(data.queries, q)  # no vocabulary: JSONL keys are term ids ("17": 0.5)
    run_file = tmp_path / "run.trec"
    assert main(["search", "--index", str(idx), "--queries", str(q), "--output", str(run_file), "-k", "3"]) == 0
    run = _read_run(run_file)
    exact = _exact_top(data.docs, data.queries, 3)
    assert [h[2] for h in run["q0"]] == pytest.approx([s for _, s in exact[0]], rel=1e-5)
    # token strings cannot be mapped without a vocabulary: a clear error, not wrong ids
    rc = main(["search", "--index", str(idx), "--queries", str(data.dir / "queries.jsonl"),
               "--output", str(run_file)])
    _assert_cli_error(capsys, rc, "--vocab")


def test_core_commands_need_no_optional_extras(tmp_path):
    """`pip install -e . && aftershock demo` installs only the core dependencies: building the parser and
    running the demo must not import FastAPI, torch, transformers or ir-measures."""
    code = textwrap.dedent("""
        import builtins
        real = builtins.__import__
        blocked = {"fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "torch", "transformers",
                   "ir_measures", "sentence_transformers"}
        def guarded(name, *a, **k):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return real(name, *a, **k)
        builtins.__import__ = guarded
        from aftershock.cli import main
        assert main(["demo"]) == 0
        assert main(["build", "--help"]) == 0
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
