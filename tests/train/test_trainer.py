"""`aftershock.train` (config, records, trainer): a tiny training run on CPU from real SciFact training queries (splade-tiny
backbone): the loss decreases, the log has its fields, checkpoints rotate, resume continues exactly at
the checkpoint's step, the dev split and the best model; config and data errors; the CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lsr"))
from _shared import DATA, MODEL, needs_model  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from aftershock.errors import ConfigError, FormatError  # noqa: E402
from aftershock.lsr import StaticEncoder  # noqa: E402
from aftershock.train import TrainConfig, train  # noqa: E402
from aftershock.train.records import load_data  # noqa: E402
from aftershock.train.trainer import _lr_factor  # noqa: E402

SCIFACT = DATA / "scifact"
needs_scifact = pytest.mark.skipif(not (SCIFACT / "corpus.jsonl.gz").is_file(), reason="shared/data/scifact absent")
REPO = Path(__file__).resolve().parents[2]
STEPS = 30
LOG_FIELDS = {"step", "lr", "loss", "infonce", "kl", "flops_doc", "lambda", "nnz_query", "nnz_doc", "docs_per_s"}


def make_scifact_train(folder: Path, n_queries: int = 40, n_negatives: int = 7) -> Path:
    """The first ``n_queries`` SciFact TRAIN queries with their relevant doc, the ``n_negatives`` best
    BM25 non-relevant docs as hard negatives, and the BM25 scores as the teacher (bm25s over the corpus)."""
    bm25s = pytest.importorskip("bm25s")
    queries = {}
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            queries[obj["_id"]] = obj["text"]
    qrels = {}
    with open(SCIFACT / "qrels" / "train.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.split()
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    ids, texts = [], []
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            ids.append(obj["_id"])
            texts.append(f"{obj['title']} {obj['text']}")
    StaticEncoder(MODEL).fit_idf(texts).save_idf_json(folder / "idf.json")  # the inference-free query side
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
    row = {d: i for i, d in enumerate(ids)}
    path = folder / "train.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for qid, relevant in list(qrels.items())[:n_queries]:
            scores = retriever.get_scores(bm25s.tokenize(queries[qid], return_ids=False, show_progress=False)[0])
            ranked = [ids[i] for i in np.argsort(-scores, kind="stable")[:n_negatives + len(relevant)]]
            docs = [sorted(relevant)[0], *[d for d in ranked if d not in relevant][:n_negatives]]
            out.write(json.dumps({"qid": qid, "query": queries[qid], "doc_ids": docs,
                                  "teacher": [round(float(scores[row[d]]), 4) for d in docs]}) + "\n")
    return path


def write_config(folder: Path, train_path: Path, **overrides) -> Path:
    sections = {
        "model": {"backbone": str(MODEL), "kind": "inference-free", "idf": "idf.json"},
        "data": {"train": str(train_path), "corpus": str(SCIFACT / "corpus.jsonl.gz"), "dev_fraction": 0.2,
                 "n_negatives": 2, "max_query_length": 24, "max_doc_length": 32},
        "loss": {"ranking": {"infonce": 1.0, "kl": 1.0}, "flops_doc": 1e-4, "reg_warmup_steps": 5},
        "optim": {"lr": 2e-4, "warmup_steps": 3, "batch_size": 4, "max_steps": STEPS, "seed": 0},
        "run": {"output": "out", "device": "cpu", "log_every": 1, "eval_every": 10, "checkpoint_every": 10,
                "keep_checkpoints": 2},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        sections[section][name] = value
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for k, v in table.items():
            if isinstance(v, dict):
                v = "{ " + ", ".join(f"{a} = {b}" for a, b in v.items()) + " }"
            else:
                v = json.dumps(v)
            lines.append(f"{k} = {v}")
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


pytestmark = [needs_model, needs_scifact]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    cfg_path = write_config(folder, make_scifact_train(folder))
    summary = train(TrainConfig.from_toml(cfg_path))
    return folder, cfg_path, summary


def test_loss_decreases(run):
    folder, _, summary = run
    losses = [r["loss"] for r in read_log(folder / "out") if "loss" in r]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    # each step sees different queries: compare whole epochs (the first against the last 8 steps)
    epoch = summary["train_queries"] // 4
    assert epoch == 8 and np.mean(losses[-epoch:]) < np.mean(losses[:epoch]), losses
    assert summary["steps"] == STEPS and summary["steps_this_run"] == STEPS


def test_log_fields_and_values(run, capsys):
    folder, _, _ = run
    log = read_log(folder / "out")
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for r in steps:
        assert LOG_FIELDS <= r.keys(), r.keys()
        assert r["nnz_query"] > 0 and r["nnz_doc"] > 0 and r["docs_per_s"] > 0 and r["flops_doc"] > 0
    # quadratic regulariser warm-up (T = 5): λ at step index s is 1e-4 · min(1, (s/5)²)
    assert [r["lambda"] for r in steps[:7]] == pytest.approx([1e-4 * min(1, (s / 5) ** 2) for s in range(7)])
    # linear LR warm-up over 3 steps, then linear decay
    lrs = [r["lr"] for r in steps]
    assert lrs[:4] == pytest.approx([2e-4 / 3, 4e-4 / 3, 2e-4, 2e-4])
    assert lrs[-1] == pytest.approx(2e-4 / (STEPS - 3)) and all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    evals = [r for r in log if "dev_mrr10" in r]
    assert [r["step"] for r in evals] == [0, 10, 20, 30] and all(0 < r["dev_mrr10"] <= 1 for r in evals)


def test_outputs(run):
    folder, _, summary = run
    out = folder / "out"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-20", "step-30"]  # keep_checkpoints=2
    assert (out / "checkpoints" / "step-30" / "trainer.pt").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["best_dev_mrr10"] == summary["best_dev_mrr10"] > 0 and saved["best_step"] in (0, 10, 20, 30)
    assert saved["final_losses"]["step"] == STEPS and saved["dev_queries"] > 0
    assert saved["dev_queries"] + saved["train_queries"] == 40
    from aftershock.lsr import load_encoder

    enc = load_encoder(out / "model")
    batch = enc.encode_documents(["Cancer cells divide."])
    assert batch.indptr[-1] > 0


def test_dev_split_is_disjoint_and_from_training_queries(run):
    folder, cfg_path, _ = run
    train_set, dev_set, _ = load_data(TrainConfig.from_toml(cfg_path))
    assert dev_set and not {r.qid for r in train_set} & {r.qid for r in dev_set}


def test_resume_continues_exactly(run, tmp_path):
    folder, cfg_path, _ = run
    original = read_log(folder / "out")
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    shutil.rmtree(out / "checkpoints" / "step-30")  # as if the run had stopped between steps 20 and 30
    cfg = TrainConfig.from_toml(cfg_path)
    cfg.run.output = str(out)
    summary = train(cfg, resume=True)
    assert summary["steps"] == STEPS and summary["steps_this_run"] == 10
    resumed = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))  # log trimmed to step 20, then 21..30
    before = {r["step"]: r for r in original if "loss" in r}
    for r in resumed[20:]:
        assert r["loss"] == pytest.approx(before[r["step"]]["loss"], rel=1e-4, abs=1e-6)
        assert r["lr"] == pytest.approx(before[r["step"]]["lr"])


def test_resume_and_fresh_start_guards(run, tmp_path):
    folder, cfg_path, _ = run
    cfg = TrainConfig.from_toml(cfg_path)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg)  # the fixture's output folder
    cfg.run.output = str(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(cfg, resume=True)


def test_splade_kind_all_losses_grad_accum(run, tmp_path):
    """A trainable query side (kind="splade"): query FLOPS/L1 apply; MarginMSE and gradient accumulation."""
    folder, _, _ = run
    cfg = TrainConfig.from_toml(write_config(tmp_path, folder / "train.jsonl", model__kind="splade",
                                             loss__ranking={"infonce": 1.0, "kl": 0.5, "margin_mse": 0.1},
                                             loss__flops_query=1e-3, loss__l1_query=1e-3, optim__grad_accum=2,
                                             optim__max_steps=1, run__eval_every=0, data__dev_fraction=0.0))
    summary = train(cfg)
    log = [r for r in read_log(tmp_path / "out") if "loss" in r]
    assert [r["step"] for r in log] == [1] and summary["dev_queries"] == 0 and summary["best_dev_mrr10"] is None
    assert {"infonce", "kl", "margin_mse", "flops_query"} <= log[0].keys()
    assert all(np.isfinite(r[k]) for r in log for k in ("loss", "margin_mse", "flops_query"))
    assert (tmp_path / "out" / "model").is_dir()  # no dev set: the final model


def test_bf16_autocast_steps_and_dev_eval(run, tmp_path, monkeypatch):
    """The CUDA path's bf16 autocast, run under CPU autocast: training steps, the literal residual,
    the focusing window and the dev evaluation (whose scores must be fp32 for numpy) all work."""
    import torch

    from aftershock.train import Trainer

    monkeypatch.setattr(Trainer, "_autocast", lambda self: torch.autocast("cpu", dtype=torch.bfloat16))
    folder, _, _ = run
    cfg = TrainConfig.from_toml(write_config(tmp_path, folder / "train.jsonl", model__focus_start_k=16,
                                             model__idf=str(folder / "idf.json"),
                                             optim__max_steps=2, run__eval_every=1, run__checkpoint_every=0))
    summary = train(cfg)
    log = read_log(tmp_path / "out")
    assert [r["step"] for r in log if "dev_mrr10" in r] == [0, 1, 2]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert 0 <= summary["best_dev_mrr10"] <= 1


def test_lr_factor():
    f = _lr_factor(4, 12)
    assert [f(s) for s in range(12)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8,
                                                       2 / 8, 1 / 8])
    assert _lr_factor(0, 4)(0) == 1.0
    total = [12]  # a callable total (a time budget shortens the run): the decay follows it
    g = _lr_factor(4, lambda: total[0])
    assert g(8) == pytest.approx(4 / 8)
    total[0] = 8
    assert g(6) == pytest.approx(2 / 4) and g(8) == 0.0


def test_time_budget_cuts_the_steps(run, tmp_path, monkeypatch):
    """run.max_seconds: after the timed calibration steps the total is cut so training fits the budget
    (2 calibration steps at a pretended 1 s/step and a 5 s budget -> 5 steps, not 40); the log, the LR decay
    and the summary follow the new total."""
    from aftershock.train import trainer as tr

    folder, _, _ = run
    monkeypatch.setattr(tr, "CALIBRATE_STEPS", 2)
    clock = iter(range(0, 10 ** 6))
    monkeypatch.setattr(tr, "_clock", lambda: float(next(clock)))  # each training step takes 1 s
    cfg = TrainConfig.from_toml(write_config(tmp_path, folder / "train.jsonl", optim__max_steps=40,
                                             model__idf=str(folder / "idf.json"),
                                             run__eval_every=0, run__checkpoint_every=0, run__max_seconds=5.0,
                                             data__dev_fraction=0.0, run__log_every=1))
    summary = train(cfg)
    assert summary["steps"] == 5  # 2 calibration steps at 1 s each -> 5 s / 1 s = 5 steps in all
    log = read_log(tmp_path / "out")
    assert log[-1]["step"] == 5 and log[-1]["lr"] > 0


# ---------------------------------------------------------------------------------------------- errors
def _tiny(tmp_path, records=None, **overrides):
    train_path = tmp_path / "t.jsonl"
    records = records or [{"qid": f"q{i}", "query": "heart disease", "docs": ["heart", "lung", "kidney", "liver"]}
                          for i in range(4)]
    train_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    StaticEncoder(MODEL).fit_idf([d for r in records for d in r.get("docs", ())]).save_idf_json(tmp_path / "idf.json")
    overrides.setdefault("loss__ranking", {"infonce": 1.0})
    return write_config(tmp_path, train_path, **overrides)


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    path = _tiny(tmp_path, optim__learning_rate=1e-4)
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rate' in \[optim\]; valid keys: lr, weight_decay"):
        TrainConfig.from_toml(path)
    path.write_text(path.read_text() + "[optimizer]\nlr = 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        TrainConfig.from_toml(path)


def test_bad_values_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr = 'fast' has the wrong type"):
        TrainConfig.from_toml(_tiny(tmp_path, optim__lr="fast"))
    with pytest.raises(ConfigError, match="optim.batch_size=0 must be an integer >= 1"):
        TrainConfig.from_toml(_tiny(tmp_path, optim__batch_size=0))
    with pytest.raises(ConfigError, match="unknown ranking loss 'bce'"):
        TrainConfig.from_toml(_tiny(tmp_path, loss__ranking={"bce": 1.0}))
    with pytest.raises(ConfigError, match="no weight > 0"):
        TrainConfig.from_toml(_tiny(tmp_path, loss__ranking={"infonce": 0.0}))
    with pytest.raises(ConfigError, match="colour"):
        TrainConfig.from_toml(_tiny(tmp_path, model__colour="red"))


def test_teacher_needed_for_kl(tmp_path):
    with pytest.raises(ConfigError, match=r"t.jsonl:1 \(qid 'q0'\) has no 'teacher'"):
        load_data(TrainConfig.from_toml(_tiny(tmp_path, data__dev_fraction=0.0, loss__ranking={"kl": 1.0})))


def test_query_regulariser_on_inference_free_model_is_an_error(tmp_path):
    cfg = TrainConfig.from_toml(_tiny(tmp_path, loss__flops_query=1e-3, data__dev_fraction=0.0, optim__batch_size=2))
    with pytest.raises(ConfigError, match="flops_query"):
        train(cfg)


def test_record_errors_name_the_line(tmp_path):
    good = {"qid": "a", "query": "x", "docs": ["p", "n1", "n2", "n3"]}
    cfg = _tiny(tmp_path, [good, {"qid": "b", "docs": ["p"]}])
    with pytest.raises(FormatError, match=r"t.jsonl:2: missing or non-string field 'query'"):
        load_data(TrainConfig.from_toml(cfg))
    cfg = _tiny(tmp_path, [good, {**good, "labels": [1, 0]}])
    with pytest.raises(FormatError, match=r"t.jsonl:2: 'labels' must be a list of 4 numbers"):
        load_data(TrainConfig.from_toml(cfg))
    cfg = _tiny(tmp_path, [good, {"qid": "c", "query": "y", "doc_ids": ["nope"] * 4}])
    with pytest.raises(FormatError, match="not in the corpus"):
        load_data(TrainConfig.from_toml(cfg))


def test_unusable_records_are_skipped_with_a_count(tmp_path):
    good = {"qid": "a", "query": "x", "docs": ["p", "n1", "n2", "n3"]}
    records = [good, {**good, "qid": "b", "labels": [0, 0, 0, 0]}, {**good, "qid": "c", "docs": ["p", "n"]},
               {**good, "qid": "d", "docs": []}]
    cfg = TrainConfig.from_toml(_tiny(tmp_path, records, data__dev_fraction=0.0))
    with pytest.warns(UserWarning, match="skipped 3 of 4 records: 2 without a positive label, 1 with fewer than "
                                         "n_negatives=2"):
        train_set, _, skipped = load_data(cfg)
    assert [r.qid for r in train_set] == ["a"] and skipped == {"no_positive": 2, "too_few_negatives": 1}


def test_gzipped_records_with_extra_fields(tmp_path):
    """train/dev files may be .jsonl.gz; fields the trainer does not use (e.g. per-teacher "scores") are ignored."""
    cfg = TrainConfig.from_toml(_tiny(tmp_path, data__dev_fraction=0.0))
    rec = {"qid": "g", "query": "heart", "docs": ["heart", "lung", "liver"], "labels": [1, 0, 0],
           "teacher": [3.0, 1.0, 0.5], "scores": {"bm25": [1, 2, 3]}, "source": "test"}
    with gzip.open(tmp_path / "t.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    cfg.data.train = str(tmp_path / "t.jsonl.gz")
    train_set, _, _ = load_data(cfg)
    assert [(r.qid, r.positives, r.negatives, r.teacher) for r in train_set] == [("g", [0], [1, 2], [3.0, 1.0, 0.5])]


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_train(tmp_path):
    cfg = _tiny(tmp_path, data__dev_fraction=0.0, optim__batch_size=2,
                run__checkpoint_every=0, run__eval_every=0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "aftershock", "train", "--config", str(cfg), "--max-steps", "1", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"] == 1 and "step 1/1" in p.stdout and "done: 1 steps" in p.stdout
    assert (tmp_path / "out" / "checkpoints" / "step-1" / "trainer.pt").is_file()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)  # no --resume
    assert p.returncode == 2 and "aftershock: error:" in p.stderr and "--resume" in p.stderr


def test_backbone_defaults_to_the_shipped_model(tmp_path):
    """No `../shared` needed: backbone absent or "default" is the shipped model (a BERT masked LM, issue 15); a
    missing directory is a ConfigError naming model.backbone."""
    from aftershock.lsr.load import default_model_dir
    from aftershock.lsr.model import ModelConfig, sparse_model_class

    path = _tiny(tmp_path)
    path.write_text("\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("backbone")) + "\n")
    cfg = TrainConfig.from_toml(path)
    assert Path(cfg.model["backbone"]) == default_model_dir()
    assert Path(TrainConfig.from_toml(_tiny(tmp_path, model__backbone="default")).model["backbone"]) == \
        default_model_dir()
    model = sparse_model_class()(ModelConfig(backbone=str(default_model_dir())))
    assert model.weight.shape[0] == len(model.vocab)
    with pytest.raises(ConfigError, match=r"model.backbone = '.*no-such-model' is not a directory.*\"default\""):
        TrainConfig.from_toml(_tiny(tmp_path, model__backbone="../no-such-model"))
