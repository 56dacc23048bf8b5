"""`aftershock.lsr.backbone`: a masked-LM head tied to the word embeddings of an encoder-only BERT (the MiniLM
backbone), built from a tiny random `BertModel` with the test tokenizer; loads as SPLADE and as a `SparseModel`."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import MODEL, needs_model  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from aftershock.errors import ModelFormatError  # noqa: E402
from aftershock.lsr.backbone import INFO_FILE, mlm_from_encoder, save_backbone  # noqa: E402

pytestmark = needs_model


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A sentence-transformers-like folder: a random 2 x 32 BertModel (no MLM head) + the test tokenizer."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(cfg).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(MODEL / name, folder / name)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 64}')
    return folder


def test_head_is_tied_and_starts_as_embedding_similarity(encoder_dir):
    mlm = mlm_from_encoder(encoder_dir, alpha=1.0, bias0=-5.0).eval()
    emb = mlm.bert.embeddings.word_embeddings.weight
    assert mlm.get_output_embeddings().weight is emb  # tied: one matrix
    enc = transformers.BertModel.from_pretrained(str(encoder_dir)).eval()
    for name, p in enc.state_dict().items():  # the encoder is copied unchanged
        if not name.startswith("pooler."):
            assert torch.equal(mlm.bert.state_dict()[name], p), name
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        h = enc(input_ids=ids).last_hidden_state
        expected = torch.nn.functional.layer_norm(torch.nn.functional.gelu(h), (32,), eps=1e-12) @ emb.T - 5.0
        assert torch.allclose(mlm(input_ids=ids).logits, expected, atol=1e-4)


def test_saved_backbone_loads_as_splade_and_sparse_model(encoder_dir, tmp_path):
    from aftershock.lsr import load_encoder
    from aftershock.lsr.model import ModelConfig, sparse_model_class

    # bias0 = 0: a random 32-wide encoder's logits are small (MiniLM's reach ~20, where -5 keeps it sparse)
    out = save_backbone(encoder_dir, tmp_path / "bb", dtype="fp16", bias0=0.0, license="test")
    half = (out / "model.safetensors").stat().st_size
    full = (save_backbone(encoder_dir, tmp_path / "bb32") / "model.safetensors").stat().st_size
    assert half < 0.6 * full  # fp16 on disk, the tied matrix saved once
    assert json.loads((out / INFO_FILE).read_text())["weights_license"] == "test"
    assert (out / "sentence_bert_config.json").is_file()  # the dense teacher's truncation travels along
    vecs = load_encoder(out).encode_documents(["the wing sweep angle", "glucose in plasma"])
    assert vecs.dim == 30522 and len(vecs.indptr) == 3 and vecs.indptr[-1] > 0
    model = sparse_model_class()(ModelConfig(backbone=str(out), kind="splade", literal_residual=False))
    assert model.weight.dtype == torch.float32  # fp16 on disk, fp32 to train
    w = model.encode_docs(["the wing sweep angle"]).detach().numpy()
    assert np.all(w >= 0) and (w > 0).sum() > 0


def test_not_an_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="not a BERT encoder"):
        mlm_from_encoder(tmp_path)
