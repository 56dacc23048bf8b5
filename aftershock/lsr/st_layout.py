"""Read and write the sentence-transformers ``SparseEncoder`` directory layout without importing
sentence-transformers.

Supported layouts (``modules.json``):

* SPLADE: ``MLMTransformer`` (or ``Transformer`` with ``transformer_task="fill-mask"``) at the root
  or a subfolder, then ``SpladePooling`` (``pooling_strategy`` max or sum, activation relu).
* Inference-free: one ``Router`` whose ``router_config.json`` routes ``query`` to a
  ``SparseStaticEmbedding`` (tokenizer + ``idf.json`` or ``model.safetensors`` with ``weight``) and
  ``document`` to the SPLADE modules above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aftershock.errors import ModelFormatError

MLM_TYPES = ("MLMTransformer",)
ST_PREFIX = "sentence_transformers.sparse_encoder.modules."


def _version() -> str:
    """The installed package's version (read from its metadata: lsr does not import the package facade)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aftershock")
    except PackageNotFoundError:
        return "unknown"


def _kind(type_name: str, folder: Path) -> str:
    short = type_name.rsplit(".", 1)[-1]
    if short in MLM_TYPES:
        return "mlm"
    if short == "Transformer":
        cfg = _read_json(folder / "sentence_bert_config.json", required=False) or {}
        if cfg.get("transformer_task") == "fill-mask":
            return "mlm"
    if short in ("SpladePooling", "SparseStaticEmbedding", "Router"):
        return short
    raise ModelFormatError(f"{folder}: module type {type_name!r} is not supported by Aftershock (supported: "
                           "MLMTransformer/Transformer(fill-mask) + SpladePooling, Router, SparseStaticEmbedding)")


def _read_json(path: Path, required: bool = True):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ModelFormatError(f"{path} is missing; the sentence-transformers layout needs it") from None
        return None
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path} is not valid JSON ({e})") from None


def is_st_dir(path) -> bool:
    return (Path(path) / "modules.json").is_file()


def _chain(root: Path, entries: list[tuple[str, Path]], kw: dict):
    """Build an encoder from an ordered list of (type name, folder)."""
    from aftershock.lsr.splade import Splade
    from aftershock.lsr.static import StaticEncoder

    kinds = [(_kind(t, f), f) for t, f in entries]
    names = [k for k, _ in kinds]
    if names == ["mlm", "SpladePooling"]:
        pool = _read_json(kinds[1][1] / "config.json", required=False) or {}
        strategy = pool.get("pooling_strategy", "max")
        act = pool.get("activation_function", "relu")
        if act != "relu":
            raise ModelFormatError(f"{kinds[1][1]}: SpladePooling activation {act!r} is not supported (only relu)")
        return Splade(kinds[0][1], pooling=strategy, **kw)
    if names == ["SparseStaticEmbedding"]:
        folder = kinds[0][1]
        skw = {k: v for k, v in kw.items() if k in ("batch_size", "query_max_length", "doc_max_length", "progress",
                                                    "errors")}
        enc = StaticEncoder(folder, **skw)
        cfg = _read_json(folder / "config.json", required=False) or {}
        idf = folder / cfg.get("path", "idf.json") if str(cfg.get("path", "")).endswith(".json") else folder / "idf.json"
        if idf.is_file():
            return enc.load_idf_json(idf)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise ModelFormatError(f"{folder}: a SparseStaticEmbedding needs idf.json or model.safetensors")
        from safetensors.numpy import load_file

        w = load_file(str(weights))
        if "weight" not in w:
            raise ModelFormatError(f"{weights} has no 'weight' tensor (has {sorted(w)})")
        enc.weights = enc._check_weights(w["weight"])
        enc.name = "idf"
        return enc
    raise ModelFormatError(f"{root}: unsupported module chain {[t for t, _ in entries]}; expected "
                           "[MLMTransformer, SpladePooling] or [SparseStaticEmbedding]")


def load_st(path, **kw):
    """Encoder for a sentence-transformers SparseEncoder directory (keyword arguments go to the encoders)."""
    from aftershock.lsr.static import InferenceFree

    root = Path(path)
    modules = _read_json(root / "modules.json")
    entries = [(m["type"], root / m.get("path", "")) for m in sorted(modules, key=lambda m: m.get("idx", 0))]
    if len(entries) == 1 and _kind(*entries[0]) == "Router":
        folder = entries[0][1]
        cfg = _read_json(folder / "router_config.json")
        types, structure = cfg.get("types", {}), cfg.get("structure", {})
        missing = {"query", "document"} - set(structure)
        if missing:
            raise ModelFormatError(f"{folder}/router_config.json has routes {sorted(structure)}; Aftershock needs "
                                   "'query' and 'document'")
        side = {r: _chain(root, [(types[n], folder / n) for n in structure[r]], kw) for r in ("query", "document")}
        return InferenceFree(side["query"], side["document"])
    enc = _chain(root, entries, kw)
    sbert = _read_json(entries[0][1] / "sentence_bert_config.json", required=False) or {}
    if sbert.get("max_seq_length") and enc.doc_max_length is None:
        enc.doc_max_length = enc.query_max_length = int(sbert["max_seq_length"])
    return enc


# ------------------------------------------------------------------------------------------- save
def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _save_splade(enc, folder: Path) -> list[dict]:
    enc.save_pretrained(folder)
    _write(folder / "sentence_bert_config.json", {"transformer_task": "fill-mask", "modality_config": {
        "text": {"method": "forward", "method_output_name": "logits"}}, "module_output_name": "token_embeddings"})
    return [{"name": "mlm", "type": ST_PREFIX + "mlm_transformer.MLMTransformer"},
            {"name": "pool", "type": ST_PREFIX + "splade_pooling.SpladePooling",
             "config": {"pooling_strategy": enc.pooling, "activation_function": "relu", "embedding_dimension": None}}]


def _save_static(enc, folder: Path) -> None:
    from safetensors.numpy import save_file

    if enc.weights is None:
        raise ModelFormatError("a binary StaticEncoder has no weights to save in the sentence-transformers layout; "
                               "fit_idf first")
    folder.mkdir(parents=True, exist_ok=True)
    enc.tokenizer.save_pretrained(str(folder))
    save_file({"weight": np.ascontiguousarray(enc.weights, dtype=np.float32)}, str(folder / "model.safetensors"))
    _write(folder / "config.json", {"frozen": False})


def save_st(enc, path) -> Path:
    """Write ``enc`` (`Splade`, or `InferenceFree` of IDF queries + `Splade` documents) in the
    sentence-transformers SparseEncoder layout, loadable by ``SparseEncoder(path)`` and `load_st`."""
    from aftershock.lsr.splade import Splade
    from aftershock.lsr.static import InferenceFree, StaticEncoder

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "config_sentence_transformers.json", {"__version__": {"aftershock": _version()},
                                                        "model_type": "SparseEncoder", "prompts": {"query": "",
                                                        "document": ""}, "default_prompt_name": None,
                                                        "similarity_fn_name": "dot"})
    if isinstance(enc, Splade):
        mods = _save_splade(enc, root)
        _write(root / "1_SpladePooling" / "config.json", mods[1]["config"])
        _write(root / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": mods[0]["type"]},
                                       {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": mods[1]["type"]}])
        return root
    if isinstance(enc, InferenceFree) and isinstance(enc.query_encoder, StaticEncoder) and isinstance(
            enc.document_encoder, Splade):
        _save_static(enc.query_encoder, root / "query_0_SparseStaticEmbedding")
        mods = _save_splade(enc.document_encoder, root / "document_0_MLMTransformer")
        _write(root / "document_1_SpladePooling" / "config.json", mods[1]["config"])
        _write(root / "router_config.json", {
            "types": {"query_0_SparseStaticEmbedding": ST_PREFIX + "sparse_static_embedding.SparseStaticEmbedding",
                      "document_0_MLMTransformer": mods[0]["type"], "document_1_SpladePooling": mods[1]["type"]},
            "structure": {"query": ["query_0_SparseStaticEmbedding"],
                          "document": ["document_0_MLMTransformer", "document_1_SpladePooling"]},
            "parameters": {"default_route": "document", "allow_empty_key": True, "route_mappings": {}}})
        _write(root / "modules.json", [{"idx": 0, "name": "0", "path": "",
                                        "type": "sentence_transformers.base.modules.router.Router"}])
        return root
    raise ModelFormatError(f"cannot save {type(enc).__name__} in the sentence-transformers layout; supported: Splade, "
                           "InferenceFree(StaticEncoder with IDF, Splade)")
