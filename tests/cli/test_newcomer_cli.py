"""Issue 15 ("a newcomer's first hour"): no silent wrong output from the CLI. Files without ids need an id
file or an explicit --row-ids; a failed search leaves an existing run file alone; an inferred dim is reported
and a query outside the index's dim or vocabulary is a clear error; vocabularies travel with the vectors;
a command whose extra is missing exits 2 with the install hint; --threads above the cores is a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from aftershock.cli import main
from aftershock.index import SparseBatch, Vocabulary, read_vectors, write_ids, write_vectors
from aftershock.seismic import load_index

REPO = Path(__file__).resolve().parents[2]
DIM = 300


def _batch(n, seed, prefix, dim=DIM, vocab=None, top=None) -> SparseBatch:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        m = int(rng.integers(2, 12))
        rows.append((np.sort(rng.choice(top or dim, size=m, replace=False)), rng.random(m).astype(np.float32) + 0.05))
    return SparseBatch.from_rows(rows, ids=[f"{prefix}{i}" for i in range(n)], dim=dim, vocab=vocab)


def _err(capsys, rc, *fragments):
    cap = capsys.readouterr()
    assert rc == 2, cap
    assert "aftershock: error: " in cap.err and "Traceback" not in cap.err, cap.err
    for f in fragments:
        assert f in cap.err, cap.err
    return cap


@pytest.fixture()
def files(tmp_path):
    docs, queries = _batch(200, 1, "d"), _batch(9, 2, "q")
    write_vectors(docs, tmp_path / "docs.npz")
    write_ids(docs.ids, tmp_path / "docs.ids.txt")
    write_vectors(queries, tmp_path / "q.npz")
    write_ids(queries.ids, tmp_path / "q.ids.txt")
    return tmp_path


def test_id_less_files_need_ids_or_row_ids(files, capsys):
    idx = files / "idx"
    rc = main(["build", "--input", str(files / "docs.npz"), "--output", str(idx), "--exact"])
    _err(capsys, rc, "--ids", "--row-ids")
    assert not idx.exists()
    assert main(["build", "--input", str(files / "docs.npz"), "--output", str(idx), "--exact", "--row-ids"]) == 0
    assert list(load_index(idx).doc_ids[:2]) == ["0", "1"]
    rc = main(["search", "--index", str(idx), "--queries", str(files / "q.npz"), "--output", str(files / "r")])
    _err(capsys, rc, "--query-ids", "--row-ids")
    rc = main(["build", "--input", str(files / "docs.npz"), "--ids", str(files / "docs.ids.txt"), "--row-ids",
               "--output", str(idx)])
    _err(capsys, rc, "not both")
    assert main(["search", "--index", str(idx), "--queries", str(files / "q.npz"), "--row-ids",
                 "--output", str(files / "r")]) == 0
    assert (files / "r").read_text().split()[0] == "0"


def test_failed_search_keeps_the_existing_run_file(files, capsys):
    idx = files / "idx"
    assert main(["build", "--input", str(files / "docs.npz"), "--ids", str(files / "docs.ids.txt"),
                 "--output", str(idx), "--n-postings", "50"]) == 0
    run = files / "run.trec"
    run.write_text("precious\n" * 100)
    wide = _batch(3, 5, "w", dim=DIM + 50, top=DIM + 50)  # term ids beyond the index's dim
    write_vectors(wide, files / "wide.npz")
    rc = main(["search", "--index", str(idx), "--queries", str(files / "wide.npz"), "--row-ids",
               "--output", str(run)])
    _err(capsys, rc, f"dim {DIM}", "--dim")
    assert run.read_text() == "precious\n" * 100
    assert sorted(p.name for p in files.iterdir() if p.name.startswith(".tmp-")) == []
    # success replaces it, and queries of a smaller dim are fine
    narrow = _batch(3, 6, "n", dim=DIM - 100)
    write_vectors(narrow, files / "narrow.npz")
    assert main(["search", "--index", str(idx), "--queries", str(files / "narrow.npz"), "--row-ids",
                 "--output", str(run)]) == 0
    assert "precious" not in run.read_text() and run.read_text().startswith("0 Q0 ")


def test_inferred_dim_is_reported_and_a_larger_query_is_a_clear_error(files, capsys):
    docs = _batch(100, 3, "d", dim=30522, top=250)  # term ids < 250: the .bin holds no dim
    write_vectors(docs, files / "docs.bin")
    write_ids(docs.ids, files / "docs.ids.txt")
    idx = files / "idx"
    assert main(["build", "--input", str(files / "docs.bin"), "--ids", str(files / "docs.ids.txt"),
                 "--output", str(idx), "--exact"]) == 0
    err = capsys.readouterr().err
    assert "inferred" in err and "--dim" in err and "no vocabulary" in err
    q = _batch(2, 4, "q", dim=30522, top=30522)
    write_vectors(q, files / "q30522.npz")
    rc = main(["search", "--index", str(idx), "--queries", str(files / "q30522.npz"), "--row-ids",
               "--output", str(files / "r")])
    _err(capsys, rc, "rebuild the index with --dim", "largest term id + 1")


def test_vocabulary_kept_by_build_and_parquet_and_checked_at_search(files, capsys):
    vocab = Vocabulary([f"t{i}" for i in range(DIM)])
    (files / "vocab.json").write_text("[" + ",".join(f'"{t}"' for t in vocab.tokens) + "]")
    idx = files / "idx"
    assert main(["build", "--input", str(files / "docs.npz"), "--ids", str(files / "docs.ids.txt"),
                 "--vocab", str(files / "vocab.json"), "--output", str(idx), "--n-postings", "50"]) == 0
    assert load_index(idx).vocab == vocab
    # Parquet carries the vocabulary in its metadata
    q = read_vectors(files / "q.npz", ids=files / "q.ids.txt", vocab=vocab)
    write_vectors(q, files / "q.parquet")
    assert read_vectors(files / "q.parquet").vocab == vocab
    assert main(["search", "--index", str(idx), "--queries", str(files / "q.parquet"),
                 "--output", str(files / "r")]) == 0
    other = Vocabulary([f"u{i}" for i in range(DIM)])
    write_vectors(read_vectors(files / "q.npz", ids=files / "q.ids.txt", vocab=other), files / "other.parquet")
    rc = main(["search", "--index", str(idx), "--queries", str(files / "other.parquet"),
               "--output", str(files / "r")])
    _err(capsys, rc, "different vocabulary")
    # an index built from Parquet keeps its vocabulary without --vocab
    docs = read_vectors(files / "docs.npz", ids=files / "docs.ids.txt", vocab=vocab)
    write_vectors(docs, files / "docs.parquet")
    assert main(["build", "--input", str(files / "docs.parquet"), "--output", str(files / "idx2"), "--exact"]) == 0
    assert load_index(files / "idx2").vocab == vocab


def test_threads_above_the_cores_is_a_warning(files, capsys):
    import numba

    n = numba.config.NUMBA_NUM_THREADS + 3
    assert main(["build", "--input", str(files / "docs.npz"), "--ids", str(files / "docs.ids.txt"),
                 "--output", str(files / "idx"), "--n-postings", "50", "--threads", str(n)]) == 0
    err = capsys.readouterr().err
    assert f"--threads {n} is more than the {numba.config.NUMBA_NUM_THREADS} cores" in err


def test_encode_with_the_shipped_tokenizer_keeps_the_vocabulary(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    import aftershock

    model = Path(aftershock.__file__).parent / "models" / "default"
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "supersonic wing flow"}\n{"_id": "b", "text": "heat transfer"}\n')
    out = tmp_path / "v.parquet"
    out.write_text("old")
    assert main(["encode", "--model", f"binary:{model}", "--input", str(corpus), "--output", str(out)]) == 0
    assert "encoded 2 documents" in capsys.readouterr().out
    b = read_vectors(out)
    assert b.vocab is not None and len(b.vocab) == 30522 and "wing" in b.to_dict(0)
    # a failing encode leaves the previous output in place
    before = out.read_bytes()
    rc = main(["encode", "--model", f"binary:{model}", "--input", str(tmp_path / "missing.jsonl"),
               "--output", str(out)])
    assert rc == 2 and out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


BLOCK = """
import sys
for m in {mods!r}:
    sys.modules[m] = None  # as if not installed
from aftershock.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("argv, mods, extra", [
    (["serve", "--index", "x"], ["fastapi"], "service"),
    (["eval", "--dataset", "x", "--systems", "bm25"], ["ir_measures"], "eval"),
    (["encode", "--model", "default", "--input", "x", "--output", "y.parquet"], ["torch"], "encode"),
    (["train", "--config", "x.toml"], ["torch", "transformers"], "train"),
    (["train-data", "prepare", "--output", "x", "--data", "x"], ["bm25s"], "train"),
])
def test_missing_extra_exits_2_with_the_install_hint(tmp_path, argv, mods, extra):
    code = BLOCK.format(mods=mods, argv=argv)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"pip install 'aftershock[{extra}" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    if "torch" in mods:
        assert "download.pytorch.org/whl/cpu" in p.stderr


def test_query_encoder_of_the_shipped_model_needs_only_tokenizers(tmp_path):
    pytest.importorskip("tokenizers")
    code = textwrap.dedent("""
        import sys
        for m in ("torch", "transformers", "sentence_transformers", "safetensors"):
            sys.modules[m] = None
        from aftershock.lsr import load_query_encoder
        enc = load_query_encoder("default")
        b = enc.encode_queries(["supersonic wing flow"])
        assert enc.dim == 30522 and b.nnz >= 3, b.nnz
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-2000:]


def test_eval_checks_every_system_before_running(tmp_path, capsys):
    pytest.importorskip("ir_measures")
    rc = main(["eval", "--dataset", str(tmp_path), "--systems", f"bm25,{tmp_path / 'no-such-model'}"])
    _err(capsys, rc, "no-such-model", "--systems")
