"""`load_encoder(name_or_dir)`: one entry point for every encoder Aftershock ships."""

from __future__ import annotations

import json
from pathlib import Path

from aftershock.errors import ModelFormatError
from aftershock.lsr.base import SparseEncoder

BUILTINS = ("bm25", "binary:<tokenizer dir>", "idf:<tokenizer dir>")


def load_encoder(name_or_dir, device: str = "cpu", **kwargs) -> SparseEncoder:
    """Load an encoder from a local directory or a built-in name.

    * ``"bm25"``: `BM25` (unfitted: call ``enc.fit(corpus_texts)``); keyword arguments k1, b, ...
    * ``"binary:DIR"`` / ``"idf:DIR"``: `StaticEncoder` over the tokenizer in DIR (binary, or IDF
      from ``DIR/idf.json``; without it call ``enc.fit_idf(corpus_texts)``).
    * a sentence-transformers SparseEncoder directory (``modules.json``): SPLADE or inference-free.
    * a directory written by `BM25.save` or `MLPEncoder.save_pretrained` (``aftershock_encoder.json``).
    * a Hugging Face masked-LM directory (``config.json`` with a ``*ForMaskedLM`` architecture): `Splade`.
    * a directory with a tokenizer and ``idf.json`` but no model: the IDF `StaticEncoder`.

    Hub names work only when the model is already in the local Hugging Face cache (never downloads).
    """
    from aftershock.lsr.bm25 import BM25
    from aftershock.lsr.hf import model_dir
    from aftershock.lsr.splade import MLPEncoder, Splade
    from aftershock.lsr.st_layout import is_st_dir, load_st
    from aftershock.lsr.static import StaticEncoder

    name = str(name_or_dir)
    if name.lower() == "bm25":
        return BM25(**kwargs)
    for prefix in ("binary:", "idf:"):
        if name.lower().startswith(prefix):
            enc = StaticEncoder(name[len(prefix):], **kwargs)
            if prefix == "idf:" and (enc.path / "idf.json").is_file():
                enc.load_idf_json(enc.path / "idf.json")
            return enc
    path = model_dir(name)
    if is_st_dir(path):
        return load_st(path, device=device, **kwargs)
    meta = path / "aftershock_encoder.json"
    if meta.is_file():
        kind = json.loads(meta.read_text(encoding="utf-8")).get("type")
        if kind == "bm25":
            return BM25.load(path)
        if kind == "mlp":
            return MLPEncoder(path, device=device, **kwargs)
        raise ModelFormatError(f"{meta}: unknown encoder type {kind!r}")
    config = path / "config.json"
    if config.is_file():
        arch = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        if any(a.endswith("ForMaskedLM") for a in arch):
            return Splade(path, device=device, **kwargs)
        raise ModelFormatError(f"{path}: architectures {arch} has no *ForMaskedLM model; SPLADE needs a masked-LM "
                               "head (an MLP encoder directory needs aftershock_encoder.json + mlp_head.safetensors)")
    if (path / "idf.json").is_file():
        return StaticEncoder(path, **kwargs).load_idf_json(path / "idf.json")
    raise ModelFormatError(f"{path} holds no model Aftershock can load (no modules.json, config.json, "
                           f"aftershock_encoder.json or idf.json); built-in names: {', '.join(BUILTINS)}")
