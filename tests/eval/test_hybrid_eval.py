"""`aftershock eval --systems bm25+MODEL[:method]`: parsing, one encoding per component, fused rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lsr"))
from _shared import DATA, MODEL, REAL_DATA, needs_data  # noqa: E402

from aftershock.errors import ConfigError  # noqa: E402
from aftershock.eval.hybrid import name_of, parse_hybrid  # noqa: E402
from aftershock.index.fusion import DEFAULT_WEIGHT, FusionParams  # noqa: E402


def test_parse_hybrid():
    assert parse_hybrid("bm25") is None and parse_hybrid("idf:/x/y") is None
    assert parse_hybrid("bm25+default") == ("bm25", "default", FusionParams())
    assert parse_hybrid("bm25+default")[2].weight == DEFAULT_WEIGHT
    assert parse_hybrid("bm25+default:rrf") == ("bm25", "default", FusionParams(method="rrf"))
    assert parse_hybrid("bm25+idf:/m/x:convex=0.3") == ("bm25", "idf:/m/x", FusionParams(weight=0.3))
    assert parse_hybrid("bm25+/a/b/model:RRF=10")[2].rrf_k == 10
    assert name_of("bm25+/a/b/model:rrf") == "bm25+model:rrf" and name_of("/a/b/model") == "model"
    assert name_of("bm25+default:convex=0.25") == "bm25+default:convex=0.25"
    for bad in ("bm25+default:convex=1.5", "bm25s+default", "bm25+a+b", "bm25+default:rrf=-1"):
        with pytest.raises(ConfigError):
            parse_hybrid(bad)


@needs_data
def test_eval_fuses_components_encoded_once(capsys):
    pytest.importorskip("ir_measures")
    from aftershock.eval.beir import load_beir
    from aftershock.eval.effectiveness import evaluate

    ds = load_beir(DATA / "adi")
    b = f"binary:{MODEL}"
    stages = []
    rows = evaluate(ds, ["bm25", f"bm25+{b}", f"bm25+{b}:rrf", f"bm25+{b}:convex=1", f"bm25+{b}:convex=0"],
                    k=100, log=lambda s: None, stage=stages.append)
    assert [r["system"] for r in rows][:2] == ["bm25", f"bm25+{b}"] and len(rows) == 5
    assert sum("bm25: encode" in s and "documents" in s for s in stages) == 1
    assert sum(f"{Path(b).name}: encode" in s and "documents" in s for s in stages) == 1  # not listed alone
    bm25, convex, rrf, _only_b, only_bm25 = rows
    assert convex["fusion"] == {"method": "convex", "weight": DEFAULT_WEIGHT, "depth": min(100, len(ds.doc_ids)),
                                 "rrf_k": 60}
    assert rrf["fusion"]["method"] == "rrf"
    for r in rows[1:]:
        assert 0 <= r["nDCG@10"] <= 1 and r["R@100"] >= bm25["R@100"] - 1e-9  # the union of two lists
    if REAL_DATA:  # weight 0: BM25's order up to BM25's own lowest hits
        assert only_bm25["nDCG@10"] == pytest.approx(bm25["nDCG@10"], abs=1e-6)


def test_eval_cli_checks_hybrid_components_first(tmp_path, capsys):
    pytest.importorskip("ir_measures")
    from aftershock.cli import main

    assert main(["eval", "--dataset", str(tmp_path), "--systems", f"bm25,bm25+{tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(tmp_path), "--systems", "bm25+default:convex=2"]) == 2
    assert "convex=W" in capsys.readouterr().err


@needs_data
def test_vectors_dir_stores_then_reuses_document_vectors(tmp_path):
    pytest.importorskip("ir_measures")
    from aftershock.errors import FormatError
    from aftershock.eval.beir import load_beir
    from aftershock.eval.effectiveness import evaluate
    from aftershock.index import read_ids, write_ids

    ds = load_beir(DATA / "adi")
    system = f"binary:{MODEL}"
    name = Path(system).name
    first = evaluate(ds, [system, "bm25"], k=50, log=lambda s: None, vectors_dir=tmp_path)
    stored = tmp_path / name / f"{ds.name}.docs.npz"
    assert stored.is_file() and read_ids(stored.with_name(f"{ds.name}.docs.ids.txt")) == ds.doc_ids
    assert not (tmp_path / "bm25").exists()  # BM25 is cheap: never stored
    again = evaluate(ds, [system], k=50, log=lambda s: None, vectors_dir=tmp_path)[0]
    assert again["doc_vectors"] == str(tmp_path / name) and "doc_vectors" not in first[0]
    assert again["nDCG@10"] == first[0]["nDCG@10"] and again["R@100"] == first[0]["R@100"]
    write_ids(["x"] + ds.doc_ids[1:], stored.with_name(f"{ds.name}.docs.ids.txt"))  # another corpus
    with pytest.raises(FormatError, match="lacks 1"):
        evaluate(ds, [system], k=50, log=lambda s: None, vectors_dir=tmp_path)
