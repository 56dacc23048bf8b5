"""sentence-transformers SparseEncoder layout: load what sentence-transformers saves, save what it
loads, and get the same vectors both ways (SPLADE and the inference-free Router layout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import MODEL, needs_model  # noqa: E402

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")
from sentence_transformers import SparseEncoder  # noqa: E402
from sentence_transformers.sparse_encoder.modules import MLMTransformer, SparseStaticEmbedding, SpladePooling  # noqa: E402

from aftershock.errors import ModelFormatError  # noqa: E402
from aftershock.lsr import InferenceFree, Splade, StaticEncoder, load_encoder, save_st  # noqa: E402

pytestmark = [needs_model, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

QUERIES = ["what is the capital of france", "hypersonic heating of slender bodies"]
DOCS = ["Paris is the capital and largest city of France.",
        "Heat transfer at hypersonic speeds depends on the boundary layer of the body."]


def st_dense(t):
    return (t.to_dense() if t.is_sparse else t).float().numpy()


def ours(batch):
    return batch.to_scipy().toarray()


@pytest.fixture(scope="module")
def st_splade_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("st_splade")
    SparseEncoder(modules=[MLMTransformer(str(MODEL)), SpladePooling("max")], device="cpu").save(str(path))
    return path


def test_load_a_sentence_transformers_splade_dir(st_splade_dir):
    model = SparseEncoder(str(st_splade_dir), device="cpu")
    enc = load_encoder(st_splade_dir)
    assert isinstance(enc, Splade) and enc.pooling == "max"
    np.testing.assert_allclose(ours(enc.encode_documents(DOCS)), st_dense(model.encode_document(DOCS)), atol=1e-5)
    np.testing.assert_allclose(ours(enc.encode_queries(QUERIES)), st_dense(model.encode_query(QUERIES)), atol=1e-5)


def test_save_load_round_trip_and_sentence_transformers_reads_it(tmp_path):
    enc = Splade(MODEL, pooling="sum")
    save_st(enc, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "1_SpladePooling" / "config.json").read_text())["pooling_strategy"] == "sum"
    again = load_encoder(tmp_path / "m")
    np.testing.assert_array_equal(ours(again.encode_documents(DOCS)), ours(enc.encode_documents(DOCS)))
    model = SparseEncoder(str(tmp_path / "m"), device="cpu")
    np.testing.assert_allclose(st_dense(model.encode_document(DOCS)), ours(enc.encode_documents(DOCS)),
                               rtol=1e-5, atol=1e-4)
    # saving puts the output projection back only for the save: the encoder still gives the same vectors
    np.testing.assert_array_equal(ours(Splade(MODEL, pooling="sum").encode_documents(DOCS)),
                                  ours(enc.encode_documents(DOCS)))


def test_inference_free_router_layout_round_trip(tmp_path):
    q = StaticEncoder(MODEL).fit_idf(DOCS + QUERIES)
    enc = InferenceFree(q, Splade(MODEL))
    save_st(enc, tmp_path / "if")
    model = SparseEncoder(str(tmp_path / "if"), device="cpu")
    np.testing.assert_allclose(st_dense(model.encode_query(QUERIES)), ours(enc.encode_queries(QUERIES)), atol=1e-6)
    np.testing.assert_allclose(st_dense(model.encode_document(DOCS)), ours(enc.encode_documents(DOCS)), atol=1e-5)
    again = load_encoder(tmp_path / "if")
    assert isinstance(again, InferenceFree)
    np.testing.assert_array_equal(ours(again.encode_queries(QUERIES)), ours(enc.encode_queries(QUERIES)))
    np.testing.assert_array_equal(ours(again.encode_documents(DOCS)), ours(enc.encode_documents(DOCS)))


def test_router_made_by_sentence_transformers_with_idf_json(tmp_path):
    from sentence_transformers.base.modules.router import Router
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(MODEL))
    (tmp_path / "idf.json").write_text(json.dumps({"capital": 3.0, "france": 2.5, "the": 0.1, "heat": 1.5}))
    static = SparseStaticEmbedding.from_json(str(tmp_path / "idf.json"), tokenizer=tok, frozen=True)
    router = Router.for_query_document(query_modules=[static],
                                       document_modules=[MLMTransformer(str(MODEL)), SpladePooling("max")])
    SparseEncoder(modules=[router], device="cpu").save(str(tmp_path / "r"))
    model = SparseEncoder(str(tmp_path / "r"), device="cpu")
    enc = load_encoder(tmp_path / "r")
    got = enc.encode_queries(QUERIES)
    np.testing.assert_allclose(ours(got), st_dense(model.encode_query(QUERIES)), atol=1e-6)
    assert got.to_dict(0) == {"capital": 3.0, "france": 2.5, "the": pytest.approx(0.1)}


def test_unsupported_module_is_a_clear_error(tmp_path):
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                        "type": "sentence_transformers.sparse_encoder.models.CSRSparsity"}]))
    with pytest.raises(ModelFormatError, match="CSRSparsity.*not supported"):
        load_encoder(tmp_path)
