"""The training config (`TrainConfig`): ``aftershock train --config config.toml`` reads it, `aftershock.train.train`
runs it.

Config (every key optional except ``data.train``; unknown keys raise `ConfigError` listing the valid
ones; relative paths are resolved against the config file's folder)::

    [model]                      # keyword arguments of aftershock.lsr.model.ModelConfig
    backbone = "default"         # the shipped model (aftershock/models/default; the default), or a masked-LM dir
    kind = "inference-free"      # or "splade"
    idf = "idf.json"             # inference-free query weights (token -> idf)

    [data]
    train = "train.jsonl"        # one query per line, see below (.jsonl or .jsonl.gz)
    corpus = "corpus.jsonl.gz"   # BEIR {"_id","title","text"}: texts of records that give doc_ids
    dev = "dev.jsonl"            # optional; else dev_fraction of the train queries (by a hash of qid)
    dev_fraction = 0.1
    n_negatives = 7              # sampled per query and step from its non-positive candidates
    max_query_length = 32
    max_doc_length = 256

    [loss]
    ranking = { infonce = 1.0, kl = 0.0, margin_mse = 0.0 }   # weights; kl/margin_mse need "teacher"
    infonce_temperature = 1.0   # scores / τ before the softmax (IDF-weighted scores are large: try τ > 1)
    kl_temperature = 1.0
    kl_normalize = false         # standardise teacher and student scores per query before the KL (scale-free)
    flops_doc = 1e-3             # λ of FLOPS on documents (IDF-aware for an inference-free model)
    flops_query = 0.0            # λ of FLOPS / L1 on queries: only for a model with a trainable query side
    l1_query = 0.0
    reg_warmup_steps = 0         # T of λ·min(1, (step/T)²)

    [optim]
    lr = 2e-5
    weight_decay = 0.01
    warmup_steps = 0             # linear warm-up, then linear decay to 0 at the last step
    batch_size = 16              # queries per micro-batch (each with 1 + n_negatives documents)
    grad_accum = 1
    epochs = 1                   # or max_steps > 0 (optimizer steps)
    max_steps = 0
    bf16 = true                  # autocast, on CUDA only
    seed = 0
    max_grad_norm = 1.0          # 0 = no clipping

    [run]
    output = "runs/train"
    device = "auto"              # cpu, cuda, cuda:N, auto
    log_every = 10
    eval_every = 0               # 0 = at the start and the end only
    checkpoint_every = 0         # 0 = at the end only
    keep_checkpoints = 2
    max_seconds = 0              # > 0: after 20 timed steps, cut the steps to end training within this budget

The training records are described in `aftershock.train.records`; the loop in `aftershock.train.trainer`.
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from aftershock.errors import ConfigError
from aftershock.index.config import Config, check, is_int

RANKING_LOSSES = ("infonce", "kl", "margin_mse")


@dataclass
class DataConfig(Config):
    train: str = ""
    corpus: str | None = None
    dev: str | None = None
    dev_fraction: float = 0.1
    n_negatives: int = 7
    max_query_length: int = 32
    max_doc_length: int = 256


@dataclass
class LossConfig(Config):
    ranking: dict = field(default_factory=lambda: {"infonce": 1.0})
    infonce_temperature: float = 1.0
    kl_temperature: float = 1.0
    kl_normalize: bool = False
    flops_doc: float = 1e-3
    flops_query: float = 0.0
    l1_query: float = 0.0
    reg_warmup_steps: int = 0


@dataclass
class OptimConfig(Config):
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    batch_size: int = 16
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0
    bf16: bool = True
    seed: int = 0
    max_grad_norm: float = 1.0


@dataclass
class RunConfig(Config):
    output: str = "runs/train"
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    max_seconds: float = 0.0


_SECTIONS = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass
class TrainConfig(Config):
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_toml(cls, path) -> "TrainConfig":
        """Read a TOML file; relative paths in it are resolved against the file's folder."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        return cls.from_dict(raw, base_dir=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, base_dir=".", source: str = "config") -> "TrainConfig":
        valid = ["model", *_SECTIONS]
        for key in raw:
            if key not in valid:
                raise ConfigError(f"{source}: unknown section [{key}]; valid sections: {', '.join(valid)}")
        model = raw.get("model", {})
        if not isinstance(model, dict):
            raise ConfigError(f"{source}: [model] must be a table of ModelConfig keyword arguments")
        cfg = cls(model=dict(model), **{name: _section(kind, name, raw.get(name, {}), source)
                                         for name, kind in _SECTIONS.items()})
        cfg._resolve_paths(Path(base_dir))
        cfg.validate()
        return cfg

    def _resolve_paths(self, base: Path) -> None:
        def resolve(p):
            return None if p is None or p == "" or Path(p).is_absolute() else str(base / p)

        for name in ("train", "corpus", "dev"):
            value = getattr(self.data, name)
            setattr(self.data, name, resolve(value) or value)
        self.run.output = resolve(self.run.output) or self.run.output
        if self.model.get("backbone", "default") == "default":  # continue from the shipped model (a BERT masked LM)
            from aftershock.lsr.load import default_model_dir

            self.model["backbone"] = str(default_model_dir())
        for key in ("backbone", "idf"):  # model paths, when they exist relative to the config file
            value = self.model.get(key)
            if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
                self.model[key] = str(base / value)

    def validate(self) -> None:
        from aftershock.lsr.model import ModelConfig

        ModelConfig.from_dict(self.model)  # unknown / missing [model] keys, bad kind
        backbone = str(self.model["backbone"])
        hub_like = backbone.count("/") == 1 and not backbone.startswith((".", "/", "~"))  # may be in the HF cache
        check(Path(backbone).is_dir() or hub_like,
              f"model.backbone = {backbone!r} is not a directory; give a Hugging Face masked-LM directory (relative "
              "paths are against the config file's folder) or backbone = \"default\" (the shipped model)")
        d, lo, o, r = self.data, self.loss, self.optim, self.run
        check(bool(d.train), "data.train is not set; give the training JSONL path in [data] train = \"...\"")
        _ints("data", d, n_negatives=0, max_query_length=1, max_doc_length=1)
        check(0.0 <= d.dev_fraction < 1.0, f"data.dev_fraction={d.dev_fraction} must be in [0, 1)")
        for key, w in lo.ranking.items():
            check(key in RANKING_LOSSES,
                  f"unknown ranking loss {key!r} in loss.ranking; valid: {', '.join(RANKING_LOSSES)}")
            check(not isinstance(w, bool) and isinstance(w, (int, float)) and w >= 0 and math.isfinite(w),
                  f"loss.ranking.{key}={w!r} must be a finite number >= 0")
        check(any(w > 0 for w in lo.ranking.values()),
              f"loss.ranking={lo.ranking} has no weight > 0; e.g. ranking = {{ infonce = 1.0 }}")
        check(not (self.uses_teacher and d.n_negatives < 1),
              "loss.ranking kl / margin_mse compare a query's candidates: data.n_negatives must be >= 1")
        for section, name, value in (("loss", "infonce_temperature", lo.infonce_temperature),
                                     ("loss", "kl_temperature", lo.kl_temperature), ("optim", "lr", o.lr)):
            check(value > 0, f"{section}.{name}={value} must be > 0")
        for name in ("flops_doc", "flops_query", "l1_query"):
            check(getattr(lo, name) >= 0, f"loss.{name}={getattr(lo, name)} must be >= 0")
        _ints("loss", lo, reg_warmup_steps=0)
        for name in ("weight_decay", "max_grad_norm"):
            check(getattr(o, name) >= 0, f"optim.{name}={getattr(o, name)} must be >= 0")
        _ints("optim", o, warmup_steps=0, max_steps=0, batch_size=1, grad_accum=1, epochs=1)
        _ints("run", r, log_every=1, keep_checkpoints=1, eval_every=0, checkpoint_every=0)
        check(r.max_seconds >= 0, f"run.max_seconds={r.max_seconds} must be >= 0 (0 = no time budget)")

    @property
    def uses_teacher(self) -> bool:
        return any(self.loss.ranking.get(k, 0) > 0 for k in ("kl", "margin_mse"))


def _section(kind, name: str, table, source: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    valid = [f.name for f in fields(kind)]
    hints = typing.get_type_hints(kind)
    for key, value in table.items():
        if key not in valid:
            raise ConfigError(f"{source}: unknown key {key!r} in [{name}]; valid keys: {', '.join(valid)}")
        allowed = typing.get_args(hints[key]) if isinstance(hints[key], types.UnionType) else (hints[key],)
        if float in allowed:
            allowed = (*allowed, int)
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            names = " or ".join(t.__name__ for t in allowed if t is not type(None))
            raise ConfigError(f"{source}: {name}.{key} = {value!r} has the wrong type; give a {names}")
    return kind(**table)


def _ints(section: str, obj, **low) -> None:
    """Each named field of ``obj`` is an integer >= its lower bound."""
    for name, lo in low.items():
        value = getattr(obj, name)
        check(is_int(value, lo), f"{section}.{name}={value!r} must be an integer >= {lo}")
