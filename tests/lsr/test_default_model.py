"""The model shipped in ``aftershock/models/default``: loads by name, queries are tokenizer + IDF only,
and a golden score pins the document side."""

import numpy as np
import pytest

pytest.importorskip("transformers")

from aftershock.lsr import InferenceFree, StaticEncoder, default_model_dir, load_encoder, load_query_encoder  # noqa: E402

QUERY = "lift of a delta wing at supersonic speeds"
DOCS = ["The lift of delta wings at supersonic speed was measured in a wind tunnel.", "Maternal plasma glucose."]


def _dense(b):
    m = np.zeros((len(b.indptr) - 1, b.dim), np.float64)
    for r in range(m.shape[0]):
        s, e = b.indptr[r], b.indptr[r + 1]
        m[r, b.indices[s:e]] = b.values[s:e]
    return m


def test_default_loads_by_name_and_queries_are_idf_times_count():
    enc = load_encoder("default")
    assert isinstance(enc, InferenceFree) and enc.dim == 30522 and enc.name == "default"
    qe = load_query_encoder("default")
    assert isinstance(qe, StaticEncoder) and qe.counts
    q = qe.encode_queries([QUERY + " wing"])
    w = dict(zip((qe.vocab.tokens[i] for i in q.indices), q.values.tolist()))
    assert set(w) == {"lift", "delta", "wing", "super", "##sonic", "speeds"}  # stopwords (of, a, at) weigh 0
    assert w["wing"] == pytest.approx(2 * 6.0799, abs=2e-3)                  # idf x count
    assert w["delta"] == pytest.approx(7.9045, abs=1e-3)
    assert (default_model_dir() / "README.md").is_file()


def test_golden_score_of_the_document_side():
    enc = load_encoder("default")
    q, d = enc.encode_queries([QUERY]), enc.encode_documents(DOCS)
    scores = _dense(q) @ _dense(d).T
    assert scores[0, 0] == pytest.approx(69.0720, rel=1e-4)
    assert scores[0, 1] == 0.0
    assert (d.values > 0).all()
