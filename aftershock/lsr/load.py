"""`load_encoder(name_or_dir)`: one entry point for every encoder Aftershock ships."""

from __future__ import annotations

import json
from pathlib import Path

from aftershock.errors import ModelFormatError
from aftershock.lsr.base import SparseEncoder
from aftershock.lsr.options import make as _make

BUILTINS = ("default", "bm25", "binary:<tokenizer dir>", "idf:<tokenizer dir>")
DEFAULT_MODEL = "default"


def default_model_dir():
    """The model shipped inside the package (``aftershock/models/default``): an inference-free SPLADE
    trained by ``aftershock train`` (its README gives the command, data and results)."""
    from importlib import resources

    from aftershock.errors import FormatError

    path = Path(str(resources.files("aftershock").joinpath("models", DEFAULT_MODEL)))
    if not (path / "aftershock_encoder.json").is_file():
        raise FormatError(f"the shipped model is missing from {path}; reinstall aftershock from a full source "
                          "checkout (pip install -e .) or pass a model directory")
    return path


def load_query_encoder(name_or_dir, device: str = "cpu", **kwargs) -> SparseEncoder:
    """The encoder of the query side only: for an inference-free model just its tokenizer + IDF table
    (no torch model is loaded), else `load_encoder`."""
    name = str(name_or_dir)
    if name == DEFAULT_MODEL:
        name = str(default_model_dir())
    meta = Path(name) / "aftershock_encoder.json"
    if meta.is_file():
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("type") == "sparse-model" and info["config"]["kind"] == "inference-free":
            from aftershock.lsr.model import query_side

            return query_side(name, **kwargs)

    return load_encoder(name, device=device, **kwargs)
def load_encoder(name_or_dir, device: str = "cpu", **kwargs) -> SparseEncoder:
    """Load an encoder from a local directory or a built-in name.

    * ``"default"``: the model shipped with Aftershock (`default_model_dir`).
    * ``"bm25"``: `BM25` (unfitted: call ``enc.fit(corpus_texts)``); keyword arguments k1, b, ...
    * ``"binary:DIR"`` / ``"idf:DIR"``: `StaticEncoder` over the tokenizer in DIR (binary, or IDF
      from ``DIR/idf.json``; without it call ``enc.fit_idf(corpus_texts)``).
    * a sentence-transformers SparseEncoder directory (``modules.json``): SPLADE or inference-free.
    * a directory written by `BM25.save` or `SparseModel.save`
      (``aftershock_encoder.json``; a trained inference-free model gives `InferenceFree`).
    * a Hugging Face masked-LM directory (``config.json`` with a ``*ForMaskedLM`` architecture): `Splade`.
    * a directory with a tokenizer and ``idf.json`` but no model: the IDF `StaticEncoder`.

    Hub names work only when the model is already in the local Hugging Face cache (never downloads).
    """
    from aftershock.lsr.bm25 import BM25
    from aftershock.lsr.hf import model_dir
    from aftershock.lsr.splade import Splade
    from aftershock.lsr.st_layout import is_st_dir, load_st
    from aftershock.lsr.static import StaticEncoder

    name = str(name_or_dir)
    if name == DEFAULT_MODEL:
        name = str(default_model_dir())
    if name.lower() == "bm25":
        return _make(BM25, **kwargs)
    for prefix in ("binary:", "idf:"):
        if name.lower().startswith(prefix):
            enc = _make(StaticEncoder, name[len(prefix):], **kwargs)
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
        if kind == "sparse-model":
            from aftershock.lsr.model import load_trained

            return load_trained(path, device=device, **kwargs)
        raise ModelFormatError(f"{meta}: unknown encoder type {kind!r}")
    config = path / "config.json"
    if config.is_file():
        arch = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        if any(a.endswith("ForMaskedLM") for a in arch):
            return _make(Splade, path, device=device, **kwargs)
        raise ModelFormatError(f"{path}: architectures {arch} has no *ForMaskedLM model; SPLADE needs a masked-LM "
                               "head")
    if (path / "idf.json").is_file():
        return _make(StaticEncoder, path, **kwargs).load_idf_json(path / "idf.json")
    raise ModelFormatError(f"{path} holds no model Aftershock can load (no modules.json, config.json, "
                           f"aftershock_encoder.json or idf.json); built-in names: {', '.join(BUILTINS)}")
