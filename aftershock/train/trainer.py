"""The training loop: ``train(config)`` trains a sparse encoder (`aftershock.lsr.model.SparseModel`) per a
`TrainConfig` (``aftershock train --config config.toml``; the keys are in `aftershock.train.config`, the
record format in `aftershock.train.records`).

Each optimizer step takes ``grad_accum`` micro-batches of ``batch_size`` queries; a query brings its
first positive and ``n_negatives`` documents sampled from its non-positives. The loss is
``Σ w_k · ranking_k + warm(flops_doc)·FLOPS(docs) [+ warm(flops_query)·FLOPS(q) + warm(l1_query)·L1(q)]``
(`aftershock.train.losses`). The data order is a pure function of (seed, step), so ``resume=True``
continues from the latest checkpoint exactly. Outputs in ``run.output``: ``log.jsonl``,
``checkpoints/step-N/`` (``model/`` + ``trainer.pt``), ``model/`` (best dev MRR@10; the final model
without a dev set) and ``summary.json``.
"""


from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from aftershock.errors import ConfigError
from aftershock.train.config import OptimConfig, TrainConfig
from aftershock.train.records import load_data, sample_batch

_CKPT = re.compile(r"^step-(\d+)$")
CALIBRATE_STEPS = 20  # steps timed before run.max_seconds sets the number of steps
_clock = time.perf_counter


def build_model(model_cfg, device: str = "cpu"):
    """A `SparseModel` for training: a fresh one over ``model_cfg.backbone``, or, when the backbone is a
    saved `SparseModel` directory, that model (to continue training it; its kind and literal residual
    must agree with the config)."""
    from aftershock.lsr.model import ModelConfig, sparse_model_class
    from aftershock.lsr.hf import model_dir
    from aftershock.lsr.splade import META_FILE

    cfg = ModelConfig.from_dict(model_cfg) if isinstance(model_cfg, dict) else model_cfg
    cls = sparse_model_class()
    path = model_dir(cfg.backbone)
    if not (path / META_FILE).is_file():
        return cls(cfg, device=str(device))
    model = cls.load(path, device=str(device))
    if model.cfg.kind != cfg.kind or model.cfg.literal_residual != cfg.literal_residual:
        raise ConfigError(f"{path} is a saved {model.cfg.kind} model (literal_residual="
                          f"{model.cfg.literal_residual}); the config asks for {cfg.kind} "
                          f"(literal_residual={cfg.literal_residual}); make them agree")
    model.cfg = cfg
    return model


def _lr_factor(warmup: int, total):
    """Linear warm-up over ``warmup`` steps (step s gets (s+1)/warmup), then linear decay to 0 at ``total``
    (an int, or a callable read at each step: a time budget may shorten the run)."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        end = total() if callable(total) else total
        return max(0.0, (end - s) / max(1, end - warmup))
    return factor


def _optimizer(model, o: OptimConfig, total):
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
        self.model = build_model(cfg.model, self.device)
        lo = cfg.loss
        if not self.model.query_trainable and (lo.flops_query > 0 or lo.l1_query > 0):
            raise ConfigError(f"loss.flops_query={lo.flops_query} / l1_query={lo.l1_query} but the model's query side "
                              "has no trainable parameters (inference-free); set both to 0 (FLOPS applies to documents)")
        self.opt, self.sched = _optimizer(self.model, o, lambda: self.total)
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
        return sample_batch([self.train_set[i] for i in idx], rng, self.cfg.data.n_negatives)

    def _autocast(self):
        import contextlib

        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def _forward(self, queries, docs, teacher):
        import torch

        from aftershock.train import losses

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
            for name, fn in (("kl", lambda: losses.kl_distill(student, t, lo.kl_temperature, lo.kl_normalize)),
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
        if not self.dev_set:
            return None
        from aftershock.lsr.model import focus_k

        self.model.eval()
        training_window = self.model.window  # score dev as the saved model will infer (the final window)
        self.model.window = focus_k(self.model.cfg, 1.0, len(self.model.vocab))
        try:
            return self._dev_mrr(docs_per_call)
        finally:
            self.model.window = training_window

    def _dev_mrr(self, docs_per_call: int) -> float:
        import torch

        d_cfg = self.cfg.data
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

    def _fit_budget(self, step_s: float, start: int) -> None:
        """``run.max_seconds``: cut the total so the training steps end within the budget (evaluation time
        not counted); the LR decay and the focusing window follow the new total."""
        fit = start + int(self.cfg.run.max_seconds / max(step_s, 1e-9))
        if fit < self.total:
            print(f"time budget {self.cfg.run.max_seconds:.0f} s at {step_s:.3f} s/step: {self.total} -> {fit} steps",
                  flush=True)
            self.total = max(fit, self.step + 1)

    def run(self) -> dict:
        r = self.cfg.run
        start = self.step
        window, docs, elapsed, train_s = [], 0, 0.0, 0.0
        print(f"training {len(self.train_set)} queries ({len(self.dev_set)} dev) for {self.total} steps on "
              f"{self.device}; output {self.out}", flush=True)
        if self.step == 0 and self.dev_set:  # the starting point, for reference
            self.model.set_progress(0, self.total)
            self._maybe_eval()
        while self.step < self.total:
            t0 = _clock()
            stats, n_docs, lr, lam = self._train_step()
            dt = _clock() - t0
            elapsed += dt
            train_s += dt
            if r.max_seconds and self.step - start == CALIBRATE_STEPS:
                self._fit_budget(train_s / CALIBRATE_STEPS, start)
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
                   "config": self.cfg.to_dict()}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def train(config: TrainConfig | str | os.PathLike, resume: bool = False) -> dict:
    """Train per ``config`` (a `TrainConfig` or a TOML path); ``resume=True`` continues from the latest
    checkpoint in ``run.output``. Returns the summary also written to ``output/summary.json``."""
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_toml(config)
    return Trainer(config, resume=resume).run()
