"""Every CLI failure of issue 13 is one ``aftershock: error: ...`` line with exit status 2 and no traceback:
disk full, non-UTF-8 JSONL and id files, bad gzip/npz/parquet, bad vocabularies, dangerous --output paths,
permission denied, limits; and --output never deletes what Aftershock did not write."""

from __future__ import annotations

import errno
import json
import os
import sys

import numpy as np
import pytest

from aftershock.cli import main
from aftershock.index import SparseBatch, write_ids, write_vectors

DIM = 50


@pytest.fixture
def docs(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(rng.choice(DIM, 5, replace=False), rng.uniform(0.1, 1, 5)) for _ in range(40)]
    b = SparseBatch.from_rows(rows, ids=[f"d{i}" for i in range(40)], dim=DIM)
    write_vectors(b, tmp_path / "docs.npz")
    return tmp_path / "docs.npz"


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.err


def assert_error(rc, err, *fragments):
    assert rc == 2, err
    assert err.strip().splitlines()[-1].startswith("aftershock: error: "), err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in err, err


def build(capsys, inp, out, *extra):
    ids = ["--row-ids"] if str(inp).endswith((".npz", ".bin")) and "--ids" not in extra else []  # no ids inside
    return run(capsys, "build", "--input", inp, "--output", out, "--threads", "1", "--exact", *ids, *extra)


def test_output_that_is_not_an_index_needs_overwrite(capsys, tmp_path, docs):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    rc, err = build(capsys, docs, user)
    assert_error(rc, err, str(user), "--overwrite")
    assert (user / "thesis.tex").read_text() == "years of work"
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert_error(*build(capsys, docs, f), "--overwrite")
    assert f.read_text() == "x"
    rc, err = build(capsys, docs, user, "--overwrite")
    assert rc == 0, err
    assert not (user / "thesis.tex").exists() and (user / "meta.json").exists()


def test_output_never_replaces_the_input(capsys, tmp_path, docs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (docs, tmp_path, "."):
        assert_error(*build(capsys, docs, out, "--overwrite"))
        assert docs.exists()
    assert_error(*build(capsys, docs, "/", "--overwrite"), "/")


def test_rebuilding_over_an_index_is_fine(capsys, tmp_path, docs):
    assert build(capsys, docs, tmp_path / "idx")[0] == 0
    assert build(capsys, docs, tmp_path / "idx")[0] == 0
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["generation"] == 2


def test_disk_full(capsys, tmp_path, docs, monkeypatch):
    import aftershock.index.store as store

    assert build(capsys, docs, tmp_path / "idx")[0] == 0

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "idx" / "x.npy"))
    monkeypatch.setattr(store, "_write_file", full)
    assert_error(*build(capsys, docs, tmp_path / "idx"), "no space left")
    monkeypatch.undo()
    rc, err = run(capsys, "search", "--index", tmp_path / "idx", "--queries", docs, "--row-ids", "--output", tmp_path / "run")
    assert rc == 0, err  # the old index is intact


def test_permission_denied(capsys, tmp_path, docs, monkeypatch):
    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))
    monkeypatch.setattr(os, "mkdir", denied)
    assert_error(*build(capsys, docs, tmp_path / "ro" / "idx"), "permission denied")


@pytest.mark.parametrize("content, name, fragment", [
    (b'{"id": "a", "vector": {"\xff": 1.0}}\n', "v.jsonl", "UTF-8"),
    (b"not gzip", "v.jsonl.gz", "gzip"),
    (b"not gzip", "v.bin.gz", "gzip"),
    (b"PK\x03\x04junk", "v.npz", "v.npz"),
    (b"garbage", "v.npz", "v.npz"),
    (b"PAR1 junk PAR1", "v.parquet", "v.parquet"),
    (b'{"id": "a", "vector": {"x": "1"}}\n', "v.jsonl", "weights must be JSON numbers"),
    (b'{"id": "a b", "vector": {"x": 1}}\n', "v.jsonl", "whitespace"),
    (b'{"id": "a", "vector": {"x": 1}}\n{"id": "a", "vector": {"y": 1}}\n', "v.jsonl", "twice"),
])
def test_bad_input_files(capsys, tmp_path, content, name, fragment):
    f = tmp_path / name
    f.write_bytes(content)
    dim = [] if "jsonl" in name else ["--dim", "10"]
    assert_error(*build(capsys, f, tmp_path / "idx", *dim), fragment)
    assert not (tmp_path / "idx").exists()


def test_non_utf8_id_file(capsys, tmp_path, docs):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\n".join(f"d{i}".encode() for i in range(39)) + b"\nd\xff\n")
    assert_error(*build(capsys, docs, tmp_path / "idx", "--ids", ids), "UTF-8")


def test_bad_vocab(capsys, tmp_path, docs):
    v = tmp_path / "tokenizer.json"
    v.write_text("{broken")
    assert_error(*build(capsys, docs, tmp_path / "idx", "--vocab", v), "tokenizer.json")
    v.write_bytes(b"\xff\xfe")
    assert_error(*build(capsys, docs, tmp_path / "idx", "--vocab", v), "UTF-8")


def test_terms_per_document_limit_and_flag(capsys, tmp_path):
    b = SparseBatch.from_rows([(np.arange(5000), np.ones(5000))], ids=["huge"], dim=6000)
    write_vectors(b, tmp_path / "big.npz")
    assert_error(*build(capsys, tmp_path / "big.npz", tmp_path / "idx"), "(row 0)", "5000", "4096",
                 "--max-terms-per-doc")
    rc, err = build(capsys, tmp_path / "big.npz", tmp_path / "idx", "--max-terms-per-doc", "8000")
    assert rc == 0, err


def test_huge_k_and_damaged_index(capsys, tmp_path, docs):
    assert build(capsys, docs, tmp_path / "idx")[0] == 0
    rc, err = run(capsys, "search", "--index", tmp_path / "idx", "--queries", docs, "--row-ids", "--hits", "1000000000",
                  "--output", tmp_path / "run")
    assert_error(rc, err, "AFTERSHOCK_MAX_K")
    meta = tmp_path / "idx" / "meta.json"
    m = json.loads(meta.read_text())
    m["n_docs"] //= 2
    meta.write_text(json.dumps(m))
    rc, err = run(capsys, "search", "--index", tmp_path / "idx", "--queries", docs, "--row-ids", "--output", tmp_path / "run")
    assert_error(rc, err, "meta_sha256")


def test_ids_file_for_queries_with_spaces(capsys, tmp_path, docs):
    assert build(capsys, docs, tmp_path / "idx")[0] == 0
    qids = tmp_path / "q.txt"
    write_ids([f"q {i}" for i in range(40)], qids)
    rc, err = run(capsys, "search", "--index", tmp_path / "idx", "--queries", docs, "--query-ids", qids,
                  "--output", tmp_path / "run")
    assert_error(rc, err, "whitespace")


def test_an_error_starts_on_its_own_line_after_a_progress_bar(capsys):
    """A failure while a progress bar is drawn: the bar is closed (its line ended) before the error line."""
    from tqdm.auto import tqdm

    from aftershock.cli.common import error

    bar = tqdm(total=10, desc="build", file=sys.stderr)
    bar.update(3)
    assert error("boom") == 2
    err = capsys.readouterr().err
    assert "\naftershock: error: boom" in err and err.rstrip().endswith("aftershock: error: boom")
