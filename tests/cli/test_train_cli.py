"""`aftershock train-data` and `aftershock train` reach the training room (argument wiring and clean errors;
the training itself is tested under tests/train)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aftershock.cli import main

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_train_data_bad_input_is_a_clean_error(tmp_path, capsys):
    assert main(["train-data", "prepare", "--output", str(tmp_path), "--sources", "msmarco"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftershock: error: ") and "msmarco" in err and "Traceback" not in err
    assert main(["train-data", "score", "--input", str(tmp_path), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftershock: error: ") and "train-data prepare" in err


def test_train_missing_config_is_a_clean_error(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("aftershock: error: ")


@pytest.mark.skipif(not (DATA / "adi" / "qrels").is_dir(), reason="shared/data absent")
def test_train_data_prepare_small_source(tmp_path, capsys):
    out = tmp_path / "td"
    assert main(["train-data", "prepare", "--data", str(DATA), "--output", str(out), "--sources", "adi-title",
                 "--negatives", "3", "--depth", "6", "--dev-fraction", "0.2", "--no-gzip", "--threads", "1"]) == 0
    assert "prepared " in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["doc_ids"] for r in rows)
