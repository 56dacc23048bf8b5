"""`BM25` as an encoder: bm25s' analysis, Lucene BM25 weights by hand, the same scores as bm25s
through Aftershock's exact index, dim above 65,535, persistence."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import DATA, needs_data  # noqa: E402

pytest.importorskip("Stemmer")
bm25s = pytest.importorskip("bm25s")

from aftershock.errors import ConfigError  # noqa: E402
from aftershock.lsr import BM25, Analyzer, load_encoder  # noqa: E402
from aftershock.seismic import ExactIndex  # noqa: E402

CORPUS = ["The cats are running", "a cat runs and runs", "dogs bark loudly at the running cats", "fish"]


def test_analyzer_is_bm25s_tokenization():
    import Stemmer

    texts = CORPUS + ["Hypersonic   flows, boundary-layers & Heat-Transfer (1958)!", "x y z", "ÉCOLE naïve café"]
    ref = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                         show_progress=False)
    ours = [Analyzer()(t) for t in texts]
    assert ours[:-2] == [list(r) for r in ref[:-2]] and ours[-1] == list(ref[-1])
    assert ours[-2] == []  # bm25s pads an empty document with [""]; it has no terms


def test_weights_by_hand():
    enc = BM25(k1=1.2, b=0.75).fit(CORPUS)
    an = Analyzer()
    lengths = [len(an(t)) for t in CORPUS]
    avgdl = sum(lengths) / 4
    assert enc.n_docs == 4 and enc.avgdl == pytest.approx(avgdl)
    docs = enc.encode_documents(CORPUS)
    # "cat" occurs in docs 0, 1, 2 (df 3); doc 1 "a cat runs and runs" -> [cat, run, run]
    idf = math.log(1 + (4 - 3 + 0.5) / (3 + 0.5))
    norm = 1.2 * (1 - 0.75 + 0.75 * lengths[1] / avgdl)
    assert docs.to_dict(1)["cat"] == pytest.approx(idf * 1 / (1 + norm), rel=1e-6)
    idf_run = math.log(1 + (4 - 3 + 0.5) / 3.5)  # "run" (running, runs, running) in docs 0, 1, 2
    assert docs.to_dict(1)["run"] == pytest.approx(idf_run * 2 / (2 + norm), rel=1e-6)
    q = enc.encode_queries(["running cats run", "unknown words only", ""])
    assert q.to_dict(0) == {"cat": 1.0, "run": 2.0}  # tf query weights, as bm25s/Lucene score repeats
    assert list(q.nnz_per_row()[1:]) == [0, 0]
    binary = BM25(query_weighting="binary").fit(CORPUS).encode_queries(["running cats run"])
    assert binary.to_dict(0) == {"cat": 1.0, "run": 1.0}
    qside = BM25(k1=1.2, idf_side="query").fit(CORPUS)
    s1 = qside.encode_queries(["cat"]).to_scipy() @ qside.encode_documents(CORPUS).to_scipy().T
    s2 = enc.encode_queries(["cat"]).to_scipy() @ docs.to_scipy().T
    np.testing.assert_allclose(s1.toarray(), s2.toarray(), rtol=1e-6)


@needs_data
def test_same_scores_as_bm25s_through_the_exact_index():
    import Stemmer

    docs = [json.loads(line) for _, line in zip(range(400), gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt"))]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    queries = [json.loads(line)["text"] for _, line in zip(range(25), open(DATA / "scifact" / "queries.jsonl"))]
    stem = Stemmer.Stemmer("english")
    ref = bm25s.BM25(method="lucene")
    ref.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
    enc = BM25().fit(texts)
    index = ExactIndex.build(enc.encode_documents(texts))
    res = index.search(enc.encode_queries(queries), k=10)
    for qi, q in enumerate(queries):
        terms = Analyzer()(q)
        want = ref.get_scores(terms) if terms else np.zeros(len(texts))
        top = np.sort(want)[::-1][:10]
        got = res.scores[qi]
        n = int((top > 0).sum())
        np.testing.assert_allclose(got[:n], top[:n], rtol=2e-5)
        np.testing.assert_allclose(want[res.ids[qi][:n]], got[:n], rtol=2e-5)


def test_vocabulary_above_65535_terms_searches_exactly():
    words = [f"w{i:05d}x" for i in range(70_000)]  # distinct terms, not stemmed together
    corpus = [" ".join(words[i:i + 100]) for i in range(0, 70_000, 100)] + ["w69999x w69999x common"]
    enc = BM25(stemmer=None).fit(corpus)
    assert enc.dim == 70_001
    index = ExactIndex.build(enc.encode_documents(corpus))
    res = index.search(enc.encode_queries(["w69999x", "w00000x"]), k=2)
    assert res.ids[0][0] == 700 and res.ids[0][1] == 699 and res.ids[1][0] == 0


def test_unfitted_and_persistence(tmp_path):
    with pytest.raises(ConfigError, match="not fitted"):
        BM25().encode_documents(["x"])
    with pytest.raises(ConfigError, match="k1"):
        BM25(k1=-1)
    enc = BM25(k1=0.9, b=0.4).fit(CORPUS)
    enc.save(tmp_path / "bm25")
    again = load_encoder(tmp_path / "bm25")
    assert isinstance(again, BM25) and again.k1 == 0.9
    a, b = again.encode_documents(CORPUS), enc.encode_documents(CORPUS)
    np.testing.assert_array_equal(a.to_scipy().toarray(), b.to_scipy().toarray())
    assert a.vocab == b.vocab
    assert isinstance(load_encoder("bm25"), BM25)
