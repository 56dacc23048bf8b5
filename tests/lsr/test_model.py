"""The trainable `SparseModel`: forward, literal residual, focusing window, save/load round trip."""

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aftershock.errors import ConfigError
from aftershock.lsr.model import ModelConfig, focus_k

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import DATA, MODEL, needs_data, needs_model  # noqa: E402

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def idf_json(tmp_path_factory):
    from aftershock.lsr.static import StaticEncoder

    with gzip.open(DATA / "adi" / "corpus.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    path = tmp_path_factory.mktemp("idf") / "idf.json"
    StaticEncoder(MODEL).fit_idf(texts).save_idf_json(path)
    return path


DOCS = ["The wing sweep angle changes the lift of the aircraft at high speed.",
        "Maternal plasma glucose was measured in 40 subjects; glucose rose."]


def test_focus_schedule_hand_values():
    cfg = ModelConfig(backbone="x", focus_start_k=64, focus_end_k=256, focus_hold=0.2, focus_until=0.6)
    assert focus_k(cfg, 0.0, 30522) == 64 and focus_k(cfg, 0.2, 30522) == 64
    assert focus_k(cfg, 0.4, 30522) == 128            # geometric midpoint of 64 and 256
    assert focus_k(cfg, 0.6, 30522) == 256 and focus_k(cfg, 1.0, 30522) == 256
    open_end = ModelConfig(backbone="x", focus_start_k=100, focus_hold=0.0, focus_until=1.0)
    assert focus_k(open_end, 0.5, 10000) == 1000       # sqrt(100 * 10000)
    assert focus_k(open_end, 1.0, 10000) == 0          # fully open at the end: no window
    assert focus_k(ModelConfig(backbone="x"), 0.3, 30522) == 0


def test_config_errors_name_the_value():
    with pytest.raises(ConfigError, match="kind='dense'"):
        ModelConfig(backbone="x", kind="dense")
    with pytest.raises(ConfigError, match="focus_end_k=10 < focus_start_k=20"):
        ModelConfig(backbone="x", focus_start_k=20, focus_end_k=10)
    with pytest.raises(ConfigError, match="unknown \\[model\\] key"):
        ModelConfig.from_dict({"backbone": "x", "literal": True})


@needs_model
@needs_data
def test_forward_literal_residual_and_window(idf_json):
    from aftershock.lsr.model import SparseModel

    torch.manual_seed(0)
    m = SparseModel(ModelConfig(backbone=str(MODEL), idf=str(idf_json), literal_residual=True))
    q = m.encode_queries(["effect of wing sweep on lift"])
    ids = m.tokenizer("effect of wing sweep on lift", add_special_tokens=False)["input_ids"]
    assert set(torch.nonzero(q[0]).flatten().tolist()) <= set(ids)       # queries: only their own tokens
    assert torch.allclose(q[0, ids], m.idf[ids])
    d = m.encode_docs(DOCS)
    assert d.shape == (2, 30522) and (d >= 0).all() and d.requires_grad
    # the literal residual touches exactly the tokens present in each text (and only non-special ones)
    ids_b, mask_b = m.tokenize(DOCS, 64)
    lit = m._literal(m.mlm(input_ids=ids_b, attention_mask=mask_b).logits, ids_b, mask_b)
    for row, text in enumerate(DOCS):
        present = set(m.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert set(torch.nonzero(lit[row]).flatten().tolist()) == present
    # gradients reach the backbone, the vocabulary projection and the residual head
    (q @ d.T).sum().backward()
    assert m.literal.weight.grad.abs().sum() > 0 and m.weight.grad.abs().sum() > 0
    m.window = 5
    assert ((m.encode_docs(DOCS) > 0).sum(1) <= 5).all()


@needs_model
@needs_data
def test_save_load_roundtrip_and_load_encoder(idf_json, tmp_path):
    from aftershock.lsr import InferenceFree, load_encoder
    from aftershock.lsr.model import SparseModel

    torch.manual_seed(1)
    m = SparseModel(ModelConfig(backbone=str(MODEL), idf=str(idf_json), focus_start_k=32,
                                            focus_end_k=48))
    with torch.no_grad():  # make the residual visible
        m.literal.bias.copy_(torch.tensor([1.0, 0.5]))
    m.set_progress(10, 10)
    assert m.window == 48
    m.save(tmp_path / "m")
    m.eval()
    with torch.no_grad():
        ref = m.encode_docs(DOCS).numpy()
    again = SparseModel.load(tmp_path / "m").eval()
    with torch.no_grad():
        np.testing.assert_allclose(again.encode_docs(DOCS).numpy(), ref, rtol=1e-5, atol=1e-5)
    enc = load_encoder(tmp_path / "m")
    assert isinstance(enc, InferenceFree)
    docs = enc.encode_documents(DOCS)
    dense = np.zeros((2, 30522), np.float32)
    for r in range(2):
        s, e = docs.indptr[r], docs.indptr[r + 1]
        dense[r, docs.indices[s:e]] = docs.values[s:e]
    np.testing.assert_allclose(dense, ref, rtol=1e-4, atol=1e-5)
    assert (np.diff(docs.indptr) <= 48).all()
    qv = enc.encode_queries(["wing sweep"])
    np.testing.assert_allclose(qv.values, m.idf[qv.indices].numpy(), rtol=1e-6)


@needs_model
@needs_data
def test_query_counts_and_learned_query_weights(idf_json, tmp_path):
    from aftershock.lsr import load_encoder
    from aftershock.lsr.model import SparseModel

    m = SparseModel(ModelConfig(backbone=str(MODEL), idf=str(idf_json), learn_query_weights=True,
                                            literal_residual=False))
    tid = m.tokenizer("glucose", add_special_tokens=False)["input_ids"][0]
    q = m.encode_queries(["glucose levels glucose"])
    assert torch.isclose(q[0, tid], 2 * m.idf[tid])              # query_counts: idf * count
    d = m.encode_docs(DOCS)
    (q @ d.T).sum().backward()
    assert m.query_logw.grad[tid] != 0                             # the IDF factor of a query token trains
    with torch.no_grad():
        m.query_logw[tid] = np.log(3.0)
    m.save(tmp_path / "m")
    qv = load_encoder(tmp_path / "m").encode_queries(["glucose levels glucose"])
    w = dict(zip(qv.indices.tolist(), qv.values.tolist()))
    assert w[tid] == pytest.approx(2 * 3 * float(m.idf[tid]), rel=1e-5)  # saved table = idf * exp(theta), x count


@needs_model
@needs_data
def test_bf16_autocast_forward_matches_fp32(idf_json):
    """Under bf16 autocast (the GPU path) the vocabulary projection is bf16; masking its padding must not
    overflow, and the weights stay close to fp32 ones."""
    from aftershock.lsr.model import SparseModel

    m = SparseModel(ModelConfig(backbone=str(MODEL), idf=str(idf_json))).eval()
    texts = DOCS + ["a short one"]  # padding in the batch
    with torch.no_grad():
        ref = m.encode_docs(texts)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m.encode_docs(texts)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.1 * ref.max()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training path (grad enabled)
        assert torch.isfinite(m.encode_docs(texts)).all()


def test_saved_model_keeps_the_final_window_not_the_training_one(tmp_path, idf_json):
    """A checkpoint saved while the focusing window is still narrow infers with the window of the END of
    training (none here), so a best-dev step early in training does not bake a top-k cut into the model."""
    from aftershock.lsr.model import sparse_model_class

    cfg = ModelConfig(backbone=str(MODEL), idf=str(idf_json), focus_start_k=8, focus_hold=0.5, focus_until=0.9)
    model = sparse_model_class()(cfg)
    model.set_progress(0, 100)
    assert model.window == 8
    loaded = sparse_model_class().load(model.save(tmp_path / "m"))
    assert loaded.window == 0
    with torch.no_grad():
        assert (loaded.encode_docs(DOCS[:1]) > 0).sum() > 8
