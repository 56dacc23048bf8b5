"""`StaticEncoder` (binary / IDF, the inference-free query side) and `InferenceFree`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import MODEL, needs_model  # noqa: E402

pytest.importorskip("transformers")

from aftershock.errors import ModelFormatError  # noqa: E402
from aftershock.lsr import InferenceFree, Splade, StaticEncoder, bm25_idf, load_encoder  # noqa: E402
from aftershock.seismic import ExactIndex  # noqa: E402

pytestmark = needs_model
CORPUS = ["cat dog", "cat", "fish fish fish", "dog bird"]


def test_idf_on_a_tiny_corpus_matches_hand_computed_values():
    enc = StaticEncoder(MODEL).fit_idf(CORPUS)
    idf = lambda df, n=4: math.log(1 + (n - df + 0.5) / (df + 0.5))  # noqa: E731
    w = {t: float(enc.weights[enc.vocab.token_to_id[t]]) for t in ("cat", "dog", "fish", "bird", "[CLS]")}
    assert w["cat"] == pytest.approx(idf(2)) and w["dog"] == pytest.approx(idf(2))
    assert w["fish"] == pytest.approx(idf(1)) and w["bird"] == pytest.approx(idf(1))  # counted once per document
    assert w["[CLS]"] == 0.0  # special tokens carry no weight
    assert w["cat"] == pytest.approx(math.log(2.0))  # by hand: log(1 + (4 - 2 + .5) / (2 + .5)) = log 2
    np.testing.assert_allclose(bm25_idf([0, 4], 4), [math.log(1 + 4.5 / 0.5), math.log(1 + 0.5 / 4.5)])
    q = enc.encode_queries(["cat cat bird unknownword"]).to_dict(0)
    assert q["cat"] == pytest.approx(idf(2)) and q["bird"] == pytest.approx(idf(1))  # distinct tokens, idf weight


def test_idf_json_round_trip_and_load_encoder(tmp_path):
    enc = StaticEncoder(MODEL).fit_idf(CORPUS)
    d = tmp_path / "tok"
    enc.tokenizer.save_pretrained(str(d))
    enc.save_idf_json(d / "idf.json")
    again = load_encoder(d)
    np.testing.assert_allclose(again.weights, enc.weights)
    assert load_encoder(f"idf:{d}").name == "idf"
    (tmp_path / "bad.json").write_text(json.dumps({"notatoken##x": 1.0}))
    with pytest.raises(ModelFormatError, match="not in the tokenizer"):
        StaticEncoder(MODEL).load_idf_json(tmp_path / "bad.json")


def test_binary_encoder_bag_of_tokens():
    enc = load_encoder(f"binary:{MODEL}")
    b = enc.encode_documents(["The cat and the hat.", ""])
    assert b.to_dict(0) == {"the": 1.0, "cat": 1.0, "and": 1.0, "hat": 1.0, ".": 1.0}
    assert b.nnz_per_row()[1] == 0


def test_inference_free_scores_are_idf_times_document_weight():
    q = StaticEncoder(MODEL).fit_idf(CORPUS)
    splade = Splade(MODEL)
    enc = InferenceFree(q, splade)
    docs, queries = enc.encode_documents(CORPUS), enc.encode_queries(["fish and cat"])
    res = ExactIndex.build(docs).search(queries, k=4)
    dense_d, dense_q = docs.to_scipy().toarray(), queries.to_scipy().toarray()
    expected = dense_d @ dense_q[0]
    np.testing.assert_allclose(res.scores[0][: (expected > 0).sum()], np.sort(expected[expected > 0])[::-1], rtol=1e-5)
    np.testing.assert_array_equal(docs.to_scipy().toarray(), splade.encode_documents(CORPUS).to_scipy().toarray())
