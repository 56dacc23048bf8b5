"""The ir_datasets path of `aftershock eval` (aftershock.eval.beir.load_ir_datasets), offline: a tiny fake
ir_datasets cache (``$IR_DATASETS_HOME/beir/scifact/source.zip``, the file ir_datasets would download) is
read instead of the network. Each case runs in a subprocess: ir_datasets fixes its home when imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("ir_datasets")

ROOT = Path(__file__).resolve().parents[2]
CORPUS = [{"_id": "d1", "title": "Alpha", "text": "first document about wings"},
          {"_id": "d2", "title": "", "text": "second document about engines"},
          {"_id": "d3", "title": "Gamma", "text": "third one on wings and engines"}]
QUERIES = [{"_id": "q1", "text": "wings"}, {"_id": "q2", "text": "engines"}, {"_id": "q3", "text": "not judged"}]


@pytest.fixture(scope="module")
def irds_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("ir_datasets_home")
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as z:
        z.writestr("scifact/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in CORPUS))
        z.writestr("scifact/queries.jsonl", "".join(json.dumps(q) + "\n" for q in QUERIES))
        z.writestr("scifact/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t2\n")
        z.writestr("scifact/qrels/train.tsv", "query-id\tcorpus-id\tscore\nq3\td2\t1\n")
    return home


def _run(home: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "IR_DATASETS_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=home)


def test_load_ir_datasets_reads_the_local_cache(irds_home):
    p = _run(irds_home, """
        import json
        from aftershock.eval.beir import load_beir
        ds = load_beir("beir/scifact/test")  # not a folder: resolved through ir_datasets
        print(json.dumps([ds.name, ds.doc_ids, ds.doc_texts, ds.query_ids, ds.query_texts, ds.qrels]))
    """)
    assert p.returncode == 0, p.stderr[-2000:]
    name, doc_ids, texts, qids, qtexts, qrels = json.loads(p.stdout.strip().splitlines()[-1])
    assert name == "beir_scifact_test"
    assert doc_ids == ["d1", "d2", "d3"]
    assert texts[0] == "Alpha first document about wings" and texts[1] == "second document about engines"
    assert qids == ["q1", "q2"] and qtexts == ["wings", "engines"]  # only judged queries
    assert qrels == {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 2}}


def test_eval_command_on_a_cached_dataset(irds_home):
    p = _run(irds_home, """
        from aftershock.cli import main
        raise SystemExit(main(["eval", "--dataset", "beir/scifact/test", "--systems", "bm25", "--k", "3",
                               "--json", "out.json"]))
    """)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads((irds_home / "out.json").read_text(encoding="utf-8"))["results"]
    assert rows[0]["dataset"] == "beir_scifact_test" and rows[0]["n_queries"] == 2
    assert rows[0]["nDCG@10"] > 0.5  # each query's words pick its judged documents


def test_unknown_dataset_id_is_a_clean_error(irds_home):
    p = _run(irds_home, """
        from aftershock.cli import main
        raise SystemExit(main(["eval", "--dataset", "no-such/dataset", "--systems", "bm25"]))
    """)
    assert p.returncode == 2
    assert "aftershock: error: " in p.stderr and "ir_datasets could not provide 'no-such/dataset'" in p.stderr
    assert "Traceback" not in p.stderr
