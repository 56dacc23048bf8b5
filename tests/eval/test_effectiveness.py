"""`aftershock eval` (BEIR loader, metrics, runs, JSON, FLOPS) and `aftershock encode` (streaming)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lsr"))
from _shared import DATA, MODEL, REAL_DATA, needs_data, needs_model  # noqa: E402

pytest.importorskip("ir_measures")

from aftershock.cli import main  # noqa: E402
from aftershock.eval.beir import load_beir, read_qrels  # noqa: E402
from aftershock.eval.effectiveness import evaluate, flops, score_run  # noqa: E402
from aftershock.index import SparseBatch, read_ids, read_vectors  # noqa: E402

ADI = DATA / "adi"


def test_flops_and_scoring_by_hand():
    q = SparseBatch.from_dicts([{0: 1.0, 1: 1.0}, {1: 2.0}], dim=3)
    d = SparseBatch.from_dicts([{1: 1.0}, {1: 1.0, 2: 1.0}, {0: 1.0}, {2: 3.0}], dim=3)
    # P_q = [1/2, 1, 0], P_d = [1/4, 1/2, 1/2]
    assert flops(q, d) == pytest.approx(0.5 * 0.25 + 1 * 0.5)
    qrels = {"1": {"a": 1}, "2": {"b": 1}}
    m = score_run({"1": {"a": 2.0, "x": 1.0}}, qrels)  # query 2 missing from the run counts as 0
    assert m["nDCG@10"] == pytest.approx(0.5) and m["MRR@10"] == pytest.approx(0.5) and m["R@100"] == 0.5


def test_qrels_reader_accepts_beir_and_trec(tmp_path):
    (tmp_path / "a.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t0\n")
    (tmp_path / "b.txt").write_text("1\t0\td1\t2\n")
    assert read_qrels(tmp_path / "a.tsv") == {"1": {"d1": 1, "d2": 0}}
    assert read_qrels(tmp_path / "b.txt") == {"1": {"d1": 2}}


@needs_data
def test_bm25_matches_bm25s_on_adi_and_writes_runs(tmp_path):
    ds = load_beir(ADI)
    if REAL_DATA:  # else a stand-in folder made from the bundled Cranfield titles
        assert len(ds.doc_ids) == 82 and len(ds.query_ids) == 35
    rows = evaluate(ds, ["bm25", "bm25s"], k=100, out_dir=tmp_path, log=lambda s: None)
    ours, peer = rows
    for m in ("nDCG@10", "MRR@10", "R@100"):  # on the stand-in (titles only: many score ties) up to tie order
        assert ours[m] == pytest.approx(peer[m], abs=1e-6 if REAL_DATA else 0.01)
    if REAL_DATA:
        assert ours["nDCG@10"] == pytest.approx(0.494, abs=0.005)  # the issue's bm25s reference for ADI
    assert ours["nnz_per_query"] > 0 and ours["flops"] > 0
    lines = Path(ours["run_file"]).read_text().splitlines()
    qid, q0, did, rank, score, tag = lines[0].split()
    assert q0 == "Q0" and rank == "1" and did in set(ds.doc_ids) and tag == "bm25-exact"


@needs_data
def test_eval_cli_one_line_per_system_and_json(tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = main(["eval", "--dataset", str(ADI), "--systems", "bm25", "--approx", "--k", "100", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith("adi")]
    assert len(lines) == 2 and "bm25" in lines[0] and "exact" in lines[0] and "seismic" in lines[1]
    res = json.loads(out.read_text())["results"]
    assert {r["index"] for r in res} == {"exact", "seismic"} and 0 <= res[1]["recall10_vs_exact"] <= 1

    assert main(["eval", "--dataset", str(tmp_path / "missing"), "--systems", "bm25"]) == 2
    assert main(["eval", "--dataset", str(ADI), "--split", "dev", "--systems", "bm25"]) == 2
    assert "splits here: ['test']" in capsys.readouterr().err


@needs_data
def test_eval_names_each_stage_on_stderr(capsys):
    """`aftershock eval` is never silent: each stage is named on stderr as it starts (issue 15)."""
    assert main(["eval", "--dataset", str(ADI), "--systems", "bm25,binary:" + str(MODEL), "--k", "10"]) == 0
    cap = capsys.readouterr()
    for stage in ("loading", "bm25: encode", "documents", "queries", "exact search", "score"):
        assert stage in cap.err, (stage, cap.err)
    assert "encode" not in cap.out  # stdout stays the table
    assert main(["eval", "--dataset", str(ADI), "--systems", "bm25", "--k", "10", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def adi_vectors():
    from aftershock.eval.beir import doc_text, iter_jsonl
    from aftershock.lsr import Splade

    recs = list(iter_jsonl(ADI / "corpus.jsonl.gz"))
    return recs, Splade(MODEL, doc_max_length=64).encode_documents([doc_text(r) for r in recs])


@needs_data
@needs_model
@pytest.mark.parametrize("suffix", ["parquet", "jsonl.gz", "bin"])
def test_encode_cli_streams_every_format(tmp_path, suffix, capsys, adi_vectors):
    out = tmp_path / f"adi.{suffix}"
    rc = main(["encode", "--model", str(MODEL), "--input", str(ADI / "corpus.jsonl.gz"), "--output", str(out),
               "--chunk", "30", "--batch-size", "16", "--max-length", "64"])
    recs, want = adi_vectors
    assert rc == 0 and f"encoded {len(recs)} documents" in capsys.readouterr().out
    ids = read_ids(tmp_path / "adi.ids.txt") if suffix == "bin" else None
    got = read_vectors(out, ids=ids, dim=want.dim, vocab=want.vocab)
    assert list(got.ids) == [r["_id"] for r in recs]
    # other batches (chunks of 30) pad differently: fp32 round-off only
    np.testing.assert_allclose(got.to_scipy().toarray(), want.to_scipy().toarray(), atol=2e-5)


@needs_data
def test_encode_cli_errors(tmp_path, capsys):
    assert main(["encode", "--model", "bm25", "--input", str(ADI / "corpus.jsonl.gz"),
                 "--output", str(tmp_path / "x.parquet")]) == 2
    assert "fitted" in capsys.readouterr().err
    if (MODEL / "tokenizer.json").is_file():
        assert main(["encode", "--model", f"binary:{MODEL}", "--input", str(ADI / "corpus.jsonl.gz"),
                     "--output", str(tmp_path / "x.npz")]) == 2
        assert "cannot stream-write 'npz'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xff"}\n{"_id": "3", "text": ""}\n')
    if (MODEL / "tokenizer.json").is_file():
        assert main(["encode", "--model", f"binary:{MODEL}", "--input", str(bad), "--output",
                     str(tmp_path / "b.jsonl")]) == 0
        got = read_vectors(tmp_path / "b.jsonl")
        assert list(got.ids) == ["1", "2", "3"] and got.nnz_per_row()[2] == 0  # bad byte replaced, empty -> empty
