"""The trainable sparse encoder (`SparseModel`, a torch module) and its inference wrapper.

One forward, used by training and by `load_encoder` alike. Documents:

    s(t)   = max_i log(1 + relu(logit[i, t]))                       SPLADE over the masked-LM head
    lit(t) = max_{i : x_i = t} sigmoid(g . f_i + b_g) * softplus(r . f_i + b_r)    literal residual
    w(t)   = s(t) + lit(t),   then the lexical focusing window keeps the k(p) largest w(t)

with ``f_i = [h_i, log(1 + tf(x_i)), log(len / 64)]``: ``h_i`` the masked-LM head's transformed
hidden state at position i (the vector the vocabulary projection reads), ``tf(x_i)`` how often
token ``x_i`` occurs in the text and ``len`` the number of real tokens. Queries are either the same
forward (``kind="splade"``) or inference-free (``kind="inference-free"``): ``w_q(t) = idf(t)`` for
each distinct token of the query (times its count with ``query_counts``), no model at query time.

PROSPER (Song et al., 2025) names two components and publishes no code; what is implemented here,
and why:

* **Literal residual** (``literal_residual=True``): SPLADE's max-pooled MLM logits can give a token
  that is literally in the text (a model number, a name, a rare technical word) a lower weight than
  an expansion term, since the MLM head predicts what *could* stand at a position. The residual adds
  a learned, gated, non-negative compensation to exactly the tokens present in the input (the
  formula above), so the expansion head is free to expand while literal terms keep a weight of their
  own. The term-frequency and length features let the residual learn BM25-like saturation and length
  normalisation, which SPLADE's max pooling cannot see. The gate starts nearly closed
  (``literal_gate_init``), so training starts from the backbone's SPLADE behaviour.
* **Lexical focusing window** (``focus_start_k > 0``): coarse-to-fine sparsification. Early in
  training, each document's output is restricted to its ``focus_start_k`` heaviest vocabulary
  entries (gradients reach only those), so the head first learns to rank a few strong terms instead
  of spreading mass over the 30k-token vocabulary; the window then widens linearly to
  ``focus_end_k`` (0 = the whole vocabulary) between the fractions ``focus_hold`` and ``focus_until``
  of training. A window still in force at the end (``focus_end_k > 0``) is kept at inference as
  top-k pruning.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from aftershock.errors import ConfigError, ModelFormatError
from aftershock.index.config import Config, check, is_int
from aftershock.lsr.hf import load_tokenizer, model_dir, tokenizer_vocab
from aftershock.lsr.options import make
from aftershock.lsr.splade import META_FILE, TransformerEncoder
from aftershock.lsr.static import InferenceFree, StaticEncoder

KINDS = ("inference-free", "splade")
LITERAL_FILE = "literal_residual.safetensors"
IDF_FILE = "idf.json"
MODEL_TYPE = "sparse-model"


@dataclass
class ModelConfig(Config):
    """Build-time choices of a `SparseModel` (the ``[model]`` table of a training config).

    ``backbone``: a local Hugging Face masked-LM directory (or a saved `SparseModel` directory, to
    continue training it). ``idf``: an ``idf.json`` (token -> weight) for the inference-free query
    side; by default the backbone directory's own ``idf.json``. ``idf_aware=False`` (an ablation:
    inference-free SPLADE-doc without IDF) weighs every query token with an idf > 0 as 1, in training
    and at query time, so the document FLOPS penalty no longer falls hardest on low-IDF tokens.
    ``query_counts``: an inference-free
    query weighs ``idf(t) * count(t)`` (BM25's query side) instead of ``idf(t)`` once per token.
    ``learn_query_weights``: train a per-token factor ``exp(theta_t)`` on the IDF (theta starts at 0;
    tokens absent from the training queries keep their IDF); still a table lookup at query time, saved
    into the model's ``idf.json``.
    """

    backbone: str
    kind: str = "inference-free"
    idf: str | None = None
    idf_aware: bool = True
    query_counts: bool = True
    learn_query_weights: bool = False
    literal_residual: bool = True
    literal_gate_init: float = -2.0
    focus_start_k: int = 0
    focus_end_k: int = 0
    focus_hold: float = 0.1
    focus_until: float = 0.5
    query_max_length: int = 64
    doc_max_length: int = 256

    def __post_init__(self):
        check(self.kind in KINDS, f"model kind={self.kind!r}; use one of {', '.join(KINDS)}")
        for name in ("focus_start_k", "focus_end_k"):
            check(is_int(getattr(self, name), 0), f"{name}={getattr(self, name)!r} must be an integer >= 0 "
                                                   "(0 = no window)")
        check(0.0 <= self.focus_hold <= self.focus_until <= 1.0,
              f"focus_hold={self.focus_hold}, focus_until={self.focus_until}: need "
              "0 <= focus_hold <= focus_until <= 1 (fractions of training)")
        check(not (self.focus_start_k and self.focus_end_k and self.focus_end_k < self.focus_start_k),
              f"focus_end_k={self.focus_end_k} < focus_start_k={self.focus_start_k}: the window "
              "goes from coarse (narrow) to fine (wide); use focus_end_k >= focus_start_k or 0")
        for name in ("query_max_length", "doc_max_length"):
            check(is_int(getattr(self, name), 1), f"{name}={getattr(self, name)!r} must be an integer >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The ``[model]`` table: unknown keys and a missing ``backbone`` are errors."""
        unknown, names = sorted(set(d) - {f.name for f in fields(cls)}), sorted(f.name for f in fields(cls))
        check(not unknown, f"unknown [model] key(s) {unknown}; valid keys: {names}")
        check("backbone" in d, "[model] needs backbone = '<masked-LM directory>'")
        return cls(**d)


def focus_k(cfg: ModelConfig, progress: float, vocab_size: int) -> int:
    """Width of the focusing window at ``progress`` in [0, 1] of training; 0 = no window.

    ``focus_start_k`` until ``focus_hold``, then widening geometrically to ``focus_end_k`` (or to the
    whole vocabulary when it is 0) at ``focus_until``, constant after."""
    if cfg.focus_start_k == 0 or progress >= cfg.focus_until:
        return cfg.focus_end_k if cfg.focus_start_k else 0
    if progress <= cfg.focus_hold:
        return cfg.focus_start_k
    top = cfg.focus_end_k or vocab_size
    frac = (progress - cfg.focus_hold) / (cfg.focus_until - cfg.focus_hold)
    return int(round(cfg.focus_start_k * math.exp(frac * math.log(top / cfg.focus_start_k))))


def _torch():
    try:
        import torch
    except ImportError:
        from aftershock.errors import BackendUnavailableError

        raise BackendUnavailableError("training and trained models need torch: pip install torch==2.13.0 "
                                      "(CPU build), then pip install -e '.[lsr]'") from None
    return torch


def _literal_head(hidden: int, gate_init: float):
    """The literal residual's head: (gate, magnitude) from [h_i, log1p(tf), log(len/64)]."""
    t = _torch()
    head = t.nn.Linear(hidden + 2, 2)
    t.nn.init.normal_(head.weight, std=0.02)
    with t.no_grad():
        head.bias.copy_(t.tensor([gate_init, 0.0]))
    return head


def _build_module_class():
    t = _torch()

    class SparseModel(t.nn.Module):
        """Masked-LM backbone -> sparse document (and query) weights; see the module docstring."""

        def __init__(self, cfg: ModelConfig, device: str = "cpu", _path: Path | None = None):
            super().__init__()
            from transformers import AutoModelForMaskedLM

            from aftershock.lsr.hf import resolve_device

            self.cfg = cfg
            path = _path or model_dir(cfg.backbone)
            self.path = path
            try:
                self.mlm = AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True,
                                                                dtype=t.float32)
            except (OSError, ValueError) as e:
                raise ModelFormatError(f"{path} is not a Hugging Face masked-LM directory ({e}); the backbone needs "
                                       "config.json with a *ForMaskedLM architecture and its weights") from None
            self.tokenizer = load_tokenizer(path)
            self.vocab = tokenizer_vocab(self.tokenizer)
            decoder = self.mlm.get_output_embeddings()
            self._decoder_ref = [decoder]  # a list, so the module is not registered twice
            self.weight = decoder.weight
            self.bias = decoder.bias if decoder.bias is not None else t.nn.Parameter(t.zeros(decoder.weight.shape[0]))
            self._slot = next(((mod, name) for mod in self.mlm.modules() for name, child in mod.named_children()
                               if child is decoder), None)
            if self._slot is None:
                raise ModelFormatError(f"{path}: cannot find the output projection of the masked-LM head")
            setattr(*self._slot, t.nn.Identity())
            if len(self.vocab) != self.weight.shape[0]:
                raise ModelFormatError(f"{path}: the tokenizer has {len(self.vocab)} tokens but the model's output "
                                       f"layer {self.weight.shape[0]}; they must be the same vocabulary")
            hidden = self.weight.shape[1]
            self.literal = _literal_head(hidden, cfg.literal_gate_init) if cfg.literal_residual else None
            special = sorted(set(self.tokenizer.all_special_ids))
            self.register_buffer("special", t.tensor(special, dtype=t.long), persistent=False)
            self.register_buffer("idf", t.zeros(len(self.vocab)), persistent=False)
            if cfg.kind == "inference-free":
                idf = self._load_idf(path)
                self.idf.copy_(t.from_numpy(idf if cfg.idf_aware else (idf > 0).astype(np.float32)))
            self.query_logw = (t.nn.Parameter(t.zeros(len(self.vocab)))
                               if cfg.learn_query_weights and cfg.kind == "inference-free" else None)
            self.window = focus_k(cfg, 1.0, len(self.vocab))  # inference: the window in force at the end of training
            self.to(resolve_device(device))

        # ------------------------------------------------------------ construction
        @classmethod
        def load(cls, path, device: str = "cpu"):
            path = model_dir(path)
            meta = path / META_FILE
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ModelFormatError(f"{meta}: cannot read ({e}); a saved SparseModel directory has it") from None
            if info.get("type") != MODEL_TYPE:
                raise ModelFormatError(f"{meta}: type {info.get('type')!r} is not a {MODEL_TYPE!r} directory")
            cfg = ModelConfig.from_dict({**info["config"], "backbone": str(path), "idf": None})
            model = cls(cfg, device=device, _path=path)
            if model.literal is not None:
                from safetensors.torch import load_file

                model.literal.load_state_dict({k: v.float() for k, v in load_file(str(path / LITERAL_FILE)).items()})
            model.window = int(info.get("window", 0))
            return model

        def _load_idf(self, path: Path) -> np.ndarray:
            src = Path(self.cfg.idf) if self.cfg.idf else path / IDF_FILE
            if not src.is_file():
                raise ConfigError(f"an inference-free model needs IDF weights: {src} does not exist; give "
                                  f"[model] idf = '<idf.json>' (make one with aftershock.lsr.StaticEncoder(dir)"
                                  ".fit_idf(texts).save_idf_json(path))")
            enc = StaticEncoder(path).load_idf_json(src)
            return enc.weights

        def save(self, path, dtype: str = "fp32") -> Path:
            """Write a directory `load_encoder` (and `SparseModel.load`) reads: the masked-LM in Hugging Face
            layout, the tokenizer, ``literal_residual.safetensors``, ``idf.json`` and ``aftershock_encoder.json``.
            ``dtype="fp16"`` halves the files (for shipping); weights are upcast to fp32 on load."""
            from safetensors.torch import save_file

            if dtype not in ("fp32", "fp16"):
                raise ConfigError(f"dtype={dtype!r}; use 'fp32' or 'fp16'")
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            setattr(*self._slot, self._decoder_ref[0])
            try:
                # a half copy keeps the tied embedding/decoder weights tied (saved once)
                mlm = copy.deepcopy(self.mlm).half() if dtype == "fp16" else self.mlm
                mlm.save_pretrained(str(path))
            finally:
                setattr(*self._slot, t.nn.Identity())
            self.tokenizer.save_pretrained(str(path))
            if self.literal is not None:
                cast = (lambda v: v.half()) if dtype == "fp16" else (lambda v: v)
                save_file({k: cast(v.detach().cpu()).contiguous() for k, v in self.literal.state_dict().items()},
                          str(path / LITERAL_FILE))
            if self.cfg.kind == "inference-free":
                idf = self.query_table().detach().cpu().numpy()
                nz = np.flatnonzero(idf)
                (path / IDF_FILE).write_text(json.dumps({self.vocab.tokens[i]: float(idf[i]) for i in nz},
                                                        ensure_ascii=False), encoding="utf-8")
            cfg = {k: v for k, v in asdict(self.cfg).items() if k not in ("backbone", "idf")}
            # the window in force at the END of training, not the current one: a checkpoint saved while the
            # focusing window is still narrow (a best dev step early in training) must not bake a top-k cut
            # into inference (the old distillation run's step-0 model came out with exactly 128 terms/doc)
            final = focus_k(self.cfg, 1.0, len(self.vocab))
            (path / META_FILE).write_text(json.dumps({"type": MODEL_TYPE, "config": cfg, "window": final},
                                                     indent=1), encoding="utf-8")
            return path

        # ------------------------------------------------------------ training interface
        @property
        def device(self):
            return self.weight.device

        @property
        def query_trainable(self) -> bool:
            return self.cfg.kind == "splade"

        def set_progress(self, step: int, total_steps: int) -> None:
            self.window = focus_k(self.cfg, step / max(total_steps, 1), len(self.vocab))

        def tokenize(self, texts: list[str], max_length: int):
            enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                                 return_tensors="pt", return_token_type_ids=False)
            return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

        def encode_docs(self, texts: list[str], max_length: int | None = None):
            return self.doc_weights(*self.tokenize(texts, max_length or self.cfg.doc_max_length))

        def encode_queries(self, texts: list[str], max_length: int | None = None):
            ids, mask = self.tokenize(texts, max_length or self.cfg.query_max_length)
            if self.cfg.kind == "splade":
                return self.doc_weights(ids, mask)
            present = self._present(ids, mask)
            return (present if self.cfg.query_counts else (present > 0).float()) * self.query_table()[None, :]

        def query_table(self):
            """The inference-free query weight of each token: idf, times exp(theta) when learned."""
            return self.idf if self.query_logw is None else self.idf * t.exp(self.query_logw)

        # ------------------------------------------------------------ forward
        def _present(self, ids, mask):
            """(B, V) count of each non-special token in each text."""
            real = (mask.bool() & ~t.isin(ids, self.special)).to(t.float32)
            return t.zeros(ids.shape[0], self.weight.shape[0], device=ids.device).scatter_add_(1, ids, real)

        def doc_weights(self, ids, mask, vocab_chunk: int | None = None):
            """(B, V) non-negative weights; differentiable unless called under no_grad / inference_mode."""
            hidden = self.mlm(input_ids=ids, attention_mask=mask).logits  # (B, L, H): head before projection
            keep = mask.bool()
            neg = float("-inf")  # any dtype (the projection is bf16 under autocast)
            if t.is_grad_enabled():
                logits = t.nn.functional.linear(hidden, self.weight, self.bias)
                pooled = logits.masked_fill(~keep[:, :, None], neg).amax(1)
            else:  # inference: project a slice of the vocabulary at a time
                V = self.weight.shape[0]
                chunk = vocab_chunk or max(1024, (128 << 20) // max(hidden.shape[0] * hidden.shape[1] * 4, 1))
                pooled = t.cat([t.nn.functional.linear(hidden, self.weight[c:c + chunk], self.bias[c:c + chunk])
                                .masked_fill_(~keep[:, :, None], neg).amax(1) for c in range(0, V, chunk)], dim=1)
            w = t.log1p(t.relu(pooled.float()))
            if self.literal is not None:
                w = w + self._literal(hidden, ids, mask)
            if self.window:
                w = self._focus(w, self.window)
            return w

        def _literal(self, hidden, ids, mask):
            counts = self._present(ids, mask)
            tf = counts.gather(1, ids)                                    # (B, L) tf of the token at i
            length = mask.sum(1, keepdim=True).clamp(min=1).float()
            feats = t.cat([hidden.float(), t.log1p(tf)[..., None],
                           t.log(length / 64.0)[:, None, :].expand(-1, ids.shape[1], 1)], dim=-1)
            gate, mag = self.literal(feats).unbind(-1)
            comp = (t.sigmoid(gate) * t.nn.functional.softplus(mag)).float()  # (B, L) >= 0
            comp = comp.masked_fill(tf == 0, 0.0)                         # padding and special tokens
            return t.zeros_like(counts).scatter_reduce(1, ids, comp, "amax", include_self=True)

        @staticmethod
        def _focus(w, k: int):
            if k >= w.shape[1]:
                return w
            top = w.topk(k, dim=1).indices
            keep = t.zeros_like(w, dtype=t.bool).scatter_(1, top, True)
            return w.masked_fill(~keep, 0.0)

    return SparseModel


_CLASS = None


def sparse_model_class():
    """The `SparseModel` class (a torch module, so it is built on first use: importing this module
    does not import torch)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build_module_class()
    return _CLASS


def __getattr__(name):  # `from aftershock.lsr.model import SparseModel`
    if name == "SparseModel":
        return sparse_model_class()
    raise AttributeError(name)


class TrainedEncoder(TransformerEncoder):
    """Inference wrapper: `SparseModel`'s document forward behind the `SparseEncoder` interface
    (length-sorted batches, background tokenization, bf16 on GPU, sparse output)."""

    def __init__(self, path, device: str = "cpu", **kw):
        super().__init__(path, device=device, **kw)
        self.module = sparse_model_class().load(self.path, device=str(self.device)).eval()
        self.config = self.module.mlm.config
        self.vocab = self.module.vocab
        if self.module.window and self.top_k is None:
            self.top_k = self.module.window

    def _pool(self, ids, mask):
        return self.module.doc_weights(ids, mask)


def query_side(path, **kwargs):
    """The inference-free query encoder of a saved model: tokenizer + its ``idf.json`` (no torch)."""
    path = model_dir(path)
    info = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    enc = make(StaticEncoder, path, counts=info["config"].get("query_counts", False),
                **{k: v for k, v in kwargs.items() if k not in ("dtype", "device")})
    enc.load_idf_json(path / IDF_FILE)
    enc.name = path.name
    return enc


def load_trained(path, device: str = "cpu", **kwargs):
    """A saved `SparseModel` directory as an encoder: `InferenceFree` (IDF queries, model documents)
    or the model on both sides (``kind="splade"``)."""
    path = model_dir(path)
    info = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    docs = make(TrainedEncoder, path, device=device, **kwargs)
    if info["config"]["kind"] == "splade":
        return docs
    enc = InferenceFree(query_side(path, **kwargs), docs)
    enc.name = path.name
    return enc
