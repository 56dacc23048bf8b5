"""`aftershock train-data` and `aftershock train` reach the training room (argument wiring and clean errors;
the training itself is tested under tests/train)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aftershock.cli import main

def test_train_data_bad_input_is_a_clean_error(tmp_path, capsys):
    assert main(["train-data", "prepare", "--output", str(tmp_path), "--sources", "msmarco"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftershock: error: ") and "msmarco" in err and "Traceback" not in err
    assert main(["train-data", "score", "--input", str(tmp_path), "--output", str(tmp_path),
                 "--teacher", "minilm=dense:"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftershock: error: ") and "train-data prepare" in err


def test_train_missing_config_is_a_clean_error(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("aftershock: error: ")


def _titled_beir(folder: Path) -> Path:
    """A small BEIR folder with titles, made from the bundled Cranfield titles (no ../shared needed)."""
    import aftershock

    titles = Path(aftershock.__file__).parent / "data" / "cranfield" / "titles.tsv"
    folder.mkdir(parents=True)
    with open(titles, encoding="utf-8") as f, open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for i, line in zip(range(120), f):
            did, _, text = line.rstrip("\n").partition("\t")
            out.write(json.dumps({"_id": did, "title": " ".join(text.split()[:6]), "text": text}) + "\n")
    return folder


def test_train_data_prepare_small_source(tmp_path, capsys):
    pytest.importorskip("Stemmer")
    pytest.importorskip("bm25s")
    out = tmp_path / "td"
    src = _titled_beir(tmp_path / "mine")
    assert main(["train-data", "prepare", "--data", str(tmp_path), "--output", str(out), "--sources", f"titles:{src}",
                 "--negatives", "3", "--depth", "6", "--dev-fraction", "0.2", "--no-gzip", "--threads", "1"]) == 0
    assert "prepared " in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["doc_ids"] for r in rows)


def test_train_data_needs_data_and_teacher_flags(tmp_path, monkeypatch, capsys):
    from aftershock.train import data as api

    monkeypatch.setattr(api, "default_data_dir", lambda: tmp_path / "no-shared" / "data")
    assert main(["train-data", "prepare", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "Traceback" not in err
    (tmp_path / "in").mkdir()
    assert main(["train-data", "score", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]) == 2
    assert "--teacher" in capsys.readouterr().err
