"""``aftershock collection create|upsert|delete|optimize|info|search`` end to end on small files."""

from __future__ import annotations

import json

import numpy as np
from collection_helpers import DIM, queries, random_docs

from aftershock.cli import main
from aftershock.index import read_trec_run, write_ids, write_jsonl_records, write_vectors


def test_cli_round_trip(tmp_path, capsys):
    docs = random_docs(np.random.default_rng(0), [f"d{i}" for i in range(30)])
    write_vectors(docs, tmp_path / "docs.npz")
    write_ids(docs.ids, tmp_path / "docs.ids.txt")
    write_jsonl_records(tmp_path / "md.jsonl", [{"id": f"d{i}", "year": 1990 + i} for i in range(30)])
    qs = queries()
    write_vectors(qs, tmp_path / "q.npz")
    write_ids(qs.ids, tmp_path / "q.ids.txt")
    c = str(tmp_path / "coll")
    assert main(["collection", "create", c, "--dim", str(DIM), "--schema", '{"year": "integer"}',
                 "--buffer-docs", "8", "--durability", "batch"]) == 0
    assert main(["collection", "upsert", c, "--input", str(tmp_path / "docs.npz"), "--ids",
                 str(tmp_path / "docs.ids.txt"), "--metadata", str(tmp_path / "md.jsonl"), "--batch-size", "7"]) == 0
    assert main(["collection", "delete", c, "d0", "d1", "nope"]) == 0
    assert "deleted 2 of 3" in capsys.readouterr().out
    assert main(["collection", "optimize", c]) == 0
    assert "optimized" in capsys.readouterr().out
    assert main(["collection", "info", c]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 28 and len(info["segments"]) == 1
    run = tmp_path / "run.txt"
    assert main(["collection", "search", c, "--queries", str(tmp_path / "q.npz"), "--query-ids",
                 str(tmp_path / "q.ids.txt"), "--filter", '{"must": [{"key": "year", "range": {"gte": 2010}}]}',
                 "-k", "5", "--output", str(run)]) == 0
    got = read_trec_run(run)
    assert got and all(int(d[1:]) >= 20 for docs_ in got.values() for d in docs_)
    assert main(["collection", "create", c, "--dim", "5"]) == 2  # exists: a clean error, no traceback
    assert "aftershock: error:" in capsys.readouterr().err
