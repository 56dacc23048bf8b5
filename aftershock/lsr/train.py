"""Train a sparse encoder (`aftershock.lsr.model.SparseModel`) from a TOML config: ``aftershock train
--config config.toml``.

Config (every key optional except ``data.train``; unknown keys raise `ConfigError` listing the valid
ones; relative paths are resolved against the config file's folder)::

    [model]                      # keyword arguments of aftershock.lsr.model.ModelConfig
    backbone = "../shared/models/splade-tiny"
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

Training records (JSONL, one query per line)::

    {"qid": "q1", "query": "...", "doc_ids": ["d1", "d7", ...], "labels": [1, 0, ...], "teacher": [9.1, 3.2, ...]}

``docs: [text, ...]`` may replace ``doc_ids``; ``labels`` defaults to "first document relevant, the
rest not"; ``teacher`` (one ensemble score per document) is needed by the KL and MarginMSE losses.

Each optimizer step takes ``grad_accum`` micro-batches of ``batch_size`` queries; a query brings its
first positive and ``n_negatives`` documents sampled from its non-positives. The loss is
``Σ w_k · ranking_k + warm(flops_doc)·FLOPS(docs) [+ warm(flops_query)·FLOPS(q) + warm(l1_query)·L1(q)]``
(`aftershock.lsr.losses`). The data order is a pure function of (seed, step), so ``resume=True``
continues from the latest checkpoint exactly. Outputs in ``run.output``: ``log.jsonl``,
``checkpoints/step-N/`` (``model/`` + ``trainer.pt``), ``model/`` (best dev MRR@10; the final model
without a dev set) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import time
import tomllib
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aftershock.errors import ConfigError, FormatError

RANKING_LOSSES = ("infonce", "kl", "margin_mse")
_CKPT = re.compile(r"^step-(\d+)$")


# ---------------------------------------------------------------------------------------------- config
@dataclass
class DataConfig:
    train: str = ""
    corpus: str | None = None
    dev: str | None = None
    dev_fraction: float = 0.1
    n_negatives: int = 7
    max_query_length: int = 32
    max_doc_length: int = 256


@dataclass
class LossConfig:
    ranking: dict = field(default_factory=lambda: {"infonce": 1.0})
    infonce_temperature: float = 1.0
    kl_temperature: float = 1.0
    flops_doc: float = 1e-3
    flops_query: float = 0.0
    l1_query: float = 0.0
    reg_warmup_steps: int = 0


@dataclass
class OptimConfig:
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
class RunConfig:
    output: str = "runs/train"
    device: str = "auto"
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2


_SECTIONS = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass
class TrainConfig:
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
        for key in ("backbone", "idf"):  # model paths, when they exist relative to the config file
            value = self.model.get(key)
            if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
                self.model[key] = str(base / value)

    def validate(self) -> None:
        from aftershock.lsr.model import ModelConfig

        ModelConfig.from_dict(self.model)  # unknown / missing [model] keys, bad kind
        d, lo, o, r = self.data, self.loss, self.optim, self.run
        if not d.train:
            raise ConfigError("data.train is not set; give the training JSONL path in [data] train = \"...\"")
        _at_least("data.n_negatives", d.n_negatives, 0)
        _at_least("data.max_query_length", d.max_query_length, 1)
        _at_least("data.max_doc_length", d.max_doc_length, 1)
        if not 0.0 <= d.dev_fraction < 1.0:
            raise ConfigError(f"data.dev_fraction={d.dev_fraction} must be in [0, 1)")
        for key, w in lo.ranking.items():
            if key not in RANKING_LOSSES:
                raise ConfigError(f"unknown ranking loss {key!r} in loss.ranking; valid: {', '.join(RANKING_LOSSES)}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 or not math.isfinite(w):
                raise ConfigError(f"loss.ranking.{key}={w!r} must be a finite number >= 0")
        if not any(w > 0 for w in lo.ranking.values()):
            raise ConfigError(f"loss.ranking={lo.ranking} has no weight > 0; e.g. ranking = {{ infonce = 1.0 }}")
        if self.uses_teacher and d.n_negatives < 1:
            raise ConfigError("loss.ranking kl / margin_mse compare a query's candidates: data.n_negatives must be >= 1")
        for name in ("infonce_temperature", "kl_temperature", "lr"):
            value = getattr(o if name == "lr" else lo, name)
            if not value > 0:
                raise ConfigError(f"{'optim' if name == 'lr' else 'loss'}.{name}={value} must be > 0")
        for name in ("flops_doc", "flops_query", "l1_query"):
            _at_least(f"loss.{name}", getattr(lo, name), 0)
        _at_least("loss.reg_warmup_steps", lo.reg_warmup_steps, 0)
        for name in ("weight_decay", "warmup_steps", "max_steps", "max_grad_norm"):
            _at_least(f"optim.{name}", getattr(o, name), 0)
        for name in ("batch_size", "grad_accum", "epochs"):
            _at_least(f"optim.{name}", getattr(o, name), 1)
        for name in ("log_every", "keep_checkpoints"):
            _at_least(f"run.{name}", getattr(r, name), 1)
        for name in ("eval_every", "checkpoint_every"):
            _at_least(f"run.{name}", getattr(r, name), 0)

    @property
    def uses_teacher(self) -> bool:
        return any(self.loss.ranking.get(k, 0) > 0 for k in ("kl", "margin_mse"))


def _section(kind, name: str, table, source: str):
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    valid = [f.name for f in dataclasses.fields(kind)]
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


def _at_least(name: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{name}={value} must be >= {low}")


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Record:
    qid: str
    query: str
    docs: list          # document texts
    positives: list     # indices into docs (label > 0), in order
    negatives: list     # indices into docs (label <= 0)
    teacher: list | None
    line: int


def _parse_line(path: Path, lineno: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}:{lineno}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{path}:{lineno}: a record must be a JSON object")
    for key, kind in (("qid", (str, int)), ("query", str)):
        if not isinstance(obj.get(key), kind):
            raise FormatError(f"{path}:{lineno}: missing or non-string field {key!r}; a record is "
                              '{"qid", "query", "doc_ids" or "docs", "labels"?, "teacher"?}')
    has_ids, has_docs = isinstance(obj.get("doc_ids"), list), isinstance(obj.get("docs"), list)
    if has_ids == has_docs:
        raise FormatError(f"{path}:{lineno}: give exactly one of 'doc_ids' (ids in data.corpus) or 'docs' (texts)")
    items = obj["doc_ids" if has_ids else "docs"]
    if not all(isinstance(x, (str, int)) if has_ids else isinstance(x, str) for x in items):
        raise FormatError(f"{path}:{lineno}: {'doc_ids' if has_ids else 'docs'} must be a list of strings")
    n = len(items)
    for key, kind in (("labels", (int, float)), ("teacher", (int, float))):
        value = obj.get(key)
        if value is not None and (not isinstance(value, list) or len(value) != n
                                  or not all(isinstance(x, kind) and not isinstance(x, bool) for x in value)):
            raise FormatError(f"{path}:{lineno}: {key!r} must be a list of {n} numbers, one per document")
    return obj


def _read_records(path, corpus, n_negatives: int, *, training: bool) -> tuple[list[Record], dict]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training data {path} does not exist; set [data] train / dev to a JSONL file")
    raw = []
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                raw.append((lineno, _parse_line(path, lineno, line)))
    needed = {str(i) for _, obj in raw for i in obj.get("doc_ids", ())}
    texts = _corpus_texts(corpus, needed, path) if needed else {}
    records, skipped = [], {"no_positive": 0, "too_few_negatives": 0}
    for lineno, obj in raw:
        docs = [texts[str(i)] for i in obj["doc_ids"]] if "doc_ids" in obj else obj["docs"]
        labels = obj["labels"] if obj.get("labels") is not None else [1] + [0] * (len(docs) - 1) if docs else []
        pos = [j for j, y in enumerate(labels) if y > 0]
        neg = [j for j, y in enumerate(labels) if y <= 0]
        if not pos:
            skipped["no_positive"] += 1
        elif training and len(neg) < n_negatives:
            skipped["too_few_negatives"] += 1
        else:
            records.append(Record(str(obj["qid"]), obj["query"], docs, pos, neg, obj.get("teacher"), lineno))
    if any(skipped.values()):
        warnings.warn(f"{path}: skipped {sum(skipped.values())} of {len(raw)} records: {skipped['no_positive']} "
                      f"without a positive label, {skipped['too_few_negatives']} with fewer than "
                      f"n_negatives={n_negatives} non-positive documents", stacklevel=3)
    return records, skipped


def _corpus_texts(corpus, needed: set, source: Path) -> dict:
    from aftershock.lsr.trainset import read_corpus

    if not corpus:
        raise ConfigError(f"{source} gives doc_ids but data.corpus is not set; set [data] corpus = "
                          "\"corpus.jsonl[.gz]\" (BEIR _id/title/text) or give the texts inline as 'docs'")
    texts = read_corpus(corpus, needed)
    missing = needed - texts.keys()
    if missing:
        raise FormatError(f"{source}: {len(missing)} doc ids are not in the corpus {corpus}, e.g. "
                          f"{sorted(missing)[:3]}; check data.corpus")
    return texts


def _in_dev(qid: str, fraction: float) -> bool:
    return int(hashlib.sha1(qid.encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32 < fraction


def load_data(cfg: TrainConfig) -> tuple[list[Record], list[Record], dict]:
    """Training records, dev records (from data.dev or a hash split of the training queries), skip counts."""
    d = cfg.data
    train, skipped = _read_records(d.train, d.corpus, d.n_negatives, training=True)
    if d.dev:
        dev, _ = _read_records(d.dev, d.corpus, d.n_negatives, training=False)
    elif d.dev_fraction > 0:
        dev = [r for r in train if _in_dev(r.qid, d.dev_fraction)]
        train = [r for r in train if not _in_dev(r.qid, d.dev_fraction)]
    else:
        dev = []
    if cfg.uses_teacher:
        for r in train:
            if r.teacher is None:
                raise ConfigError(f"loss.ranking uses kl / margin_mse but {d.train}:{r.line} (qid {r.qid!r}) has no "
                                  "'teacher' scores; add them to every record or set those weights to 0")
    return train, dev, skipped


def _batch(records: list[Record], rng: np.random.Generator, n_negatives: int):
    """Per query: its first positive then ``n_negatives`` sampled non-positives (and their teacher scores)."""
    queries, docs, teacher = [], [], []
    for r in records:
        picks = [r.positives[0], *(r.negatives[j] for j in rng.choice(len(r.negatives), n_negatives, replace=False))]
        queries.append(r.query)
        docs.extend(r.docs[j] for j in picks)
        teacher.append([r.teacher[j] for j in picks] if r.teacher is not None else None)
    return queries, docs, teacher


# ---------------------------------------------------------------------------------------------- trainer
def _build_model(cfg: TrainConfig, device):
    from aftershock.lsr.model import ModelConfig, SparseModel

    return SparseModel.from_config(ModelConfig.from_dict(cfg.model), device=str(device))


def _lr_factor(warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps (step s gets (s+1)/warmup), then linear decay to 0 at ``total``."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return max(0.0, (total - s) / max(1, total - warmup))
    return factor


def _optimizer(model, o: OptimConfig, total: int):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(o.warmup_steps, total))


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)) and (p / "trainer.pt").is_file()]
    return sorted(found)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _save_model(model, final: Path) -> None:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    _replace_dir(tmp, final)


class Trainer:
    """The loop of `train`; holds the model, optimizer, data and counters."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        import torch

        from aftershock.lsr.hf import resolve_device

        self.cfg, o = cfg, cfg.optim
        self.out = Path(cfg.run.output)
        self.ckpt_dir = self.out / "checkpoints"
        existing = _checkpoints(self.ckpt_dir)
        if resume and not existing:
            raise ConfigError(f"resume=True but {self.ckpt_dir} holds no checkpoint; run without --resume")
        if not resume and existing:
            raise ConfigError(f"{self.ckpt_dir} already holds checkpoints (latest step {existing[-1][0]}); "
                              "pass --resume to continue that run or choose another run.output")
        self.device = resolve_device(cfg.run.device)
        torch.manual_seed(o.seed)
        self.train_set, self.dev_set, self.skipped = load_data(cfg)
        self.batches_per_epoch = len(self.train_set) // o.batch_size // o.grad_accum * o.grad_accum
        if self.batches_per_epoch == 0:
            raise ConfigError(f"{len(self.train_set)} usable training queries < batch_size x grad_accum = "
                              f"{o.batch_size * o.grad_accum}; lower optim.batch_size or add data")
        self.total = o.max_steps or o.epochs * self.batches_per_epoch // o.grad_accum
        self.model = _build_model(cfg, self.device)
        lo = cfg.loss
        if not self.model.query_trainable and (lo.flops_query > 0 or lo.l1_query > 0):
            raise ConfigError(f"loss.flops_query={lo.flops_query} / l1_query={lo.l1_query} but the model's query side "
                              "has no trainable parameters (inference-free); set both to 0 (FLOPS applies to documents)")
        self.opt, self.sched = _optimizer(self.model, o, self.total)
        self.bf16 = o.bf16 and self.device.type == "cuda"
        self.step, self.best_mrr, self.best_step, self.last_log = 0, None, None, None
        self._perm_cache: dict[int, np.ndarray] = {}
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load(existing[-1][1])
        self._log_file = self.out / "log.jsonl"
        self._trim_log()

    # -- data order: a pure function of (seed, micro-batch number)
    def _micro_batch(self, micro: int):
        o = self.cfg.optim
        epoch, b = divmod(micro, self.batches_per_epoch)
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([o.seed, epoch]).permutation(len(self.train_set))}
        idx = self._perm_cache[epoch][b * o.batch_size:(b + 1) * o.batch_size]
        rng = np.random.default_rng([o.seed, epoch, b, 1])
        return _batch([self.train_set[i] for i in idx], rng, self.cfg.data.n_negatives)

    def _autocast(self):
        import contextlib

        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def _forward(self, queries, docs, teacher):
        import torch

        from aftershock.lsr import losses

        d_cfg, lo = self.cfg.data, self.cfg.loss
        with self._autocast():
            q = self.model.encode_queries(queries, max_length=d_cfg.max_query_length)
            d = self.model.encode_docs(docs, max_length=d_cfg.max_doc_length)
        q, d = q.float(), d.float()
        n = 1 + d_cfg.n_negatives
        parts = {}
        total = torch.zeros((), device=d.device)
        w = lo.ranking
        if w.get("infonce", 0) > 0:
            pos = torch.arange(len(queries), device=d.device) * n
            parts["infonce"] = losses.infonce(q, d, pos, lo.infonce_temperature)
            total = total + w["infonce"] * parts["infonce"]
        if self.cfg.uses_teacher:
            student = torch.einsum("bv,bnv->bn", q, d.view(len(queries), n, -1))
            t = torch.tensor(teacher, dtype=torch.float32, device=d.device)
            for name, fn in (("kl", lambda: losses.kl_distill(student, t, lo.kl_temperature)),
                             ("margin_mse", lambda: losses.margin_mse(student, t))):
                if w.get(name, 0) > 0:
                    parts[name] = fn()
                    total = total + w[name] * parts[name]
        reg, info = losses.regularizer(d, q if self.model.query_trainable else None, step=self.step,
                                       warmup_steps=lo.reg_warmup_steps, flops_doc=lo.flops_doc,
                                       flops_query=lo.flops_query, l1_query=lo.l1_query)
        total = total + reg
        stats = {k: float(v.detach()) for k, v in parts.items()}
        stats.update(loss=float(total.detach()), flops_doc=info["flops_doc"], nnz_query=float((q > 0).sum(1).float().mean()),
                     nnz_doc=float((d > 0).sum(1).float().mean()))
        if info["flops_query"] is not None:
            stats["flops_query"] = info["flops_query"]
        return total, stats, info["lambda"]

    def _train_step(self):
        import torch

        o = self.cfg.optim
        self.model.train()
        self.model.set_progress(self.step, self.total)
        stats, n_docs = [], 0
        for a in range(o.grad_accum):
            queries, docs, teacher = self._micro_batch(self.step * o.grad_accum + a)
            loss, s, lam = self._forward(queries, docs, teacher)
            if not math.isfinite(s["loss"]):
                raise FloatingPointError(f"loss is {s['loss']} at step {self.step + 1}; lower optim.lr or check the "
                                         "teacher scores")
            (loss / o.grad_accum).backward()
            stats.append(s)
            n_docs += len(docs)
        if o.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], o.max_grad_norm)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return stats, n_docs, lr, lam

    # -- evaluation: MRR@10 reranking each dev query's candidates
    def evaluate(self, docs_per_call: int = 128) -> float | None:
        """Mean reciprocal rank (cut at 10) of each dev query's best positive among its own candidates;
        a tie with a negative counts against the positive. Queries are encoded in groups whose
        candidates fill about ``docs_per_call`` documents."""
        import torch

        if not self.dev_set:
            return None
        d_cfg = self.cfg.data
        self.model.eval()
        rr, groups, size = [], [[]], 0
        for r in self.dev_set:
            if size and size + len(r.docs) > docs_per_call:
                groups.append([])
                size = 0
            groups[-1].append(r)
            size += len(r.docs)
        for group in groups:
            with torch.no_grad(), self._autocast():
                q = self.model.encode_queries([r.query for r in group], max_length=d_cfg.max_query_length)
                d = self.model.encode_docs([t for r in group for t in r.docs], max_length=d_cfg.max_doc_length)
            q, d = q.float(), d.float()  # scores in fp32, outside autocast (as in training)
            with torch.no_grad():
                start = 0
                for i, r in enumerate(group):
                    scores = (d[start:start + len(r.docs)].float() @ q[i]).cpu().numpy()
                    start += len(r.docs)
                    rank = 1 + int((scores[r.negatives] >= scores[r.positives].max()).sum())
                    rr.append(1.0 / rank if rank <= 10 else 0.0)
        return float(np.mean(rr))

    # -- checkpoints
    def _state(self) -> dict:
        import torch

        return {"step": self.step, "epoch": self.step * self.cfg.optim.grad_accum // self.batches_per_epoch,
                "model_state": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "best_mrr": self.best_mrr, "best_step": self.best_step, "total_steps": self.total,
                "last_log": self.last_log}

    def save_checkpoint(self) -> Path:
        import torch

        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_dir / f"step-{self.step}"
        tmp = self.ckpt_dir / f".step-{self.step}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.model.save(str(tmp / "model"))
        torch.save(self._state(), tmp / "trainer.pt")
        _replace_dir(tmp, final)
        for _, old in _checkpoints(self.ckpt_dir)[:-self.cfg.run.keep_checkpoints]:
            shutil.rmtree(old)
        return final

    def _load(self, folder: Path) -> None:
        import torch

        state = torch.load(folder / "trainer.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model_state"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.step, self.best_mrr, self.best_step = state["step"], state["best_mrr"], state["best_step"]
        self.last_log = state.get("last_log")
        print(f"resumed from {folder} at step {self.step}/{self.total}", flush=True)

    def _trim_log(self) -> None:
        """A resumed run rewrites log.jsonl without the lines after its checkpoint's step."""
        lines = self._log_file.read_text().splitlines(keepends=True) if self._log_file.is_file() else []
        self._log_file.write_text("".join(x for x in lines if x.strip() and json.loads(x)["step"] <= self.step))

    def _log(self, record: dict) -> None:
        self.last_log = record
        with open(self._log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        keys = [k for k in record if k not in ("step", "lr", "lambda", "docs_per_s")]
        print(f"step {record['step']}/{self.total}  lr {record['lr']:.2e}  "
              + "  ".join(f"{k} {record[k]:.4g}" for k in keys)
              + f"  lambda {record['lambda']:.2e}  docs/s {record['docs_per_s']:.1f}", flush=True)

    def _maybe_eval(self) -> None:
        mrr = self.evaluate()
        if mrr is None:
            return
        if self.best_mrr is None or mrr > self.best_mrr:
            self.best_mrr, self.best_step = mrr, self.step
            _save_model(self.model, self.out / "model")
        print(f"step {self.step}/{self.total}  dev MRR@10 {mrr:.4f}  (best {self.best_mrr:.4f} at step "
              f"{self.best_step})", flush=True)
        with open(self._log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, "dev_mrr10": mrr}) + "\n")

    def run(self) -> dict:
        r = self.cfg.run
        start = self.step
        window, docs, elapsed = [], 0, 0.0
        print(f"training {len(self.train_set)} queries ({len(self.dev_set)} dev) for {self.total} steps on "
              f"{self.device}; output {self.out}", flush=True)
        if self.step == 0 and self.dev_set:  # the starting point, for reference
            self.model.set_progress(0, self.total)
            self._maybe_eval()
        while self.step < self.total:
            t0 = time.perf_counter()
            stats, n_docs, lr, lam = self._train_step()
            elapsed += time.perf_counter() - t0
            window += stats
            docs += n_docs
            last = self.step == self.total
            if self.step % r.log_every == 0 or last:
                mean = {k: float(np.mean([s[k] for s in window])) for k in window[0]}
                self._log({"step": self.step, "lr": lr, **mean, "lambda": lam, "docs_per_s": docs / max(elapsed, 1e-9)})
                window, docs, elapsed = [], 0, 0.0
            if (r.eval_every and self.step % r.eval_every == 0) or last:
                self._maybe_eval()
            if (r.checkpoint_every and self.step % r.checkpoint_every == 0) or last:
                self.save_checkpoint()
        if not self.dev_set and (self.step > start or not (self.out / "model").exists()):
            _save_model(self.model, self.out / "model")
        summary = {"steps": self.step, "steps_this_run": self.step - start, "best_dev_mrr10": self.best_mrr,
                   "best_step": self.best_step, "final_losses": self.last_log, "train_queries": len(self.train_set),
                   "dev_queries": len(self.dev_set), "skipped": self.skipped, "model": str(self.out / "model"),
                   "config": dataclasses.asdict(self.cfg)}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def train(config: TrainConfig | str | os.PathLike, resume: bool = False) -> dict:
    """Train per ``config`` (a `TrainConfig` or a TOML path); ``resume=True`` continues from the latest
    checkpoint in ``run.output``. Returns the summary also written to ``output/summary.json``."""
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_toml(config)
    return Trainer(config, resume=resume).run()

