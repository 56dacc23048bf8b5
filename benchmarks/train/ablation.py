"""Train the shipped model and its ablations, then evaluate each next to BM25 and SPLADE-tiny.

    python benchmarks/train/ablation.py --config benchmarks/train/default.toml --device cuda \
        --variants default,distill,no-literal,no-focus,no-idf-aware --baselines bm25,../shared/models/splade-tiny \
        --datasets ../shared/data/{scifact,cranfield,cisi,medline,adi,vaswani-npl} --out runs/ablation

Each variant is the base config with a few keys changed (`VARIANTS`); it trains into
``OUT/<variant>/`` (skipped when its ``summary.json`` exists), then `aftershock.eval` scores its
``model/`` on every dataset (nDCG@10 etc. through ir-measures). The baselines are evaluated in the same
run. Rows go to ``OUT/results.tsv`` as they come, so a run stopped by ``--deadline`` keeps what it did.
Model selection uses only the dev MRR@10 of the training split (``summary.json``), never test qrels.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import tomllib
from pathlib import Path

VARIANTS = {
    "default": {},                                                   # the shipped recipe (default.toml)
    "distill": {"loss": {"ranking": {"kl": 1.0, "infonce": 0.1}}},   # ensemble-teacher KL (+ a little InfoNCE)
    "distill-mix": {"loss": {"ranking": {"infonce": 1.0, "kl": 0.5}}},
    "no-literal": {"model": {"literal_residual": False}},            # PROSPER literal residual off
    "no-focus": {"model": {"focus_start_k": 0}},                     # PROSPER focusing window off
    "no-idf-aware": {"model": {"idf_aware": False}},                 # binary query weights in training
    "learned-qw": {"model": {"learn_query_weights": True}},          # IDF x learned per-token factor
    "long": {"optim": {"epochs": 4}},                                # twice the steps
    # wave 3 (default.toml on the MiniLM backbone; infonce = the shipped recipe)
    "infonce": {"loss": {"ranking": {"infonce": 1.0}}},              # no distillation
    "kl-norm": {"loss": {"ranking": {"infonce": 1.0, "kl": 1.0}, "kl_normalize": True}},
    "kl-raw": {"loss": {"ranking": {"infonce": 1.0, "kl": 1.0}, "kl_normalize": False}},  # the old KL
    "kl-norm-no-literal": {"loss": {"ranking": {"infonce": 1.0, "kl": 1.0}, "kl_normalize": True},
                           "model": {"literal_residual": False}},
    "kl-norm-no-focus": {"loss": {"ranking": {"infonce": 1.0, "kl": 1.0}, "kl_normalize": True},
                         "model": {"focus_start_k": 0}},
}
FIELDS = ("system", "dataset", "nDCG@10", "MRR@10", "R@100", "R@1000", "nnz_per_query", "nnz_per_doc", "flops",
          "encode_docs_s", "dev_mrr10", "train_s")


def merged(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for section, values in over.items():
        out.setdefault(section, {}).update(values)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="base training config (TOML)")
    p.add_argument("--variants", default="default", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--baselines", default="", help="systems evaluated once, e.g. bm25,../shared/models/splade-tiny")
    p.add_argument("--datasets", nargs="+", required=True, help="BEIR folders")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-steps", type=int, help="override [optim] max_steps (smoke runs)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key for every variant (VALUE in TOML syntax, e.g. model.backbone='\"dir\"')")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch size in the evaluation")
    p.add_argument("--deadline", type=float, default=0, help="seconds: start no variant expected to end later")
    args = p.parse_args(argv)

    from aftershock.eval.beir import load_beir
    from aftershock.eval.effectiveness import evaluate
    from aftershock.train import TrainConfig, train

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_dir = Path(args.config).resolve().parent
    with open(args.config, "rb") as f:
        base = tomllib.load(f)
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        base.setdefault(section, {})[name] = tomllib.loads(f"v = {value}")["v"]
    datasets = [load_beir(d) for d in args.datasets]
    enc_kw = {"device": args.device, "batch_size": args.batch_size}
    table = out / "results.tsv"
    if not table.exists():
        table.write_text("\t".join(FIELDS) + "\n")

    def record(system: str, extra: dict, kw: dict) -> None:
        for ds in datasets:
            for row in evaluate(ds, [system], k=1000, encoder_kwargs=kw):
                if row["index"] != "exact":
                    continue
                row = {**row, **extra, "system": extra.get("name", row["system"])}
                with open(table, "a") as f:
                    f.write("\t".join(str(row.get(k, "")) for k in FIELDS) + "\n")

    for system in filter(None, args.baselines.split(",")):
        record(system, {"name": Path(system).name or system}, {} if system == "bm25" else enc_kw)

    last = 0.0
    for name in filter(None, args.variants.split(",")):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        elapsed = time.perf_counter() - t_start
        if args.deadline and elapsed + last > args.deadline:
            print(f"[ablation] stop before {name}: {elapsed:.0f} s used, the last variant took {last:.0f} s, "
                  f"deadline {args.deadline:.0f} s", flush=True)
            break
        t0 = time.perf_counter()
        raw = merged(base, VARIANTS[name])
        raw.setdefault("run", {})["output"] = str((out / name).resolve())
        raw["run"]["device"] = args.device
        if args.max_steps:
            raw.setdefault("optim", {})["max_steps"] = args.max_steps
        summary_file = out / name / "summary.json"
        if not summary_file.exists():
            (out / name).mkdir(parents=True, exist_ok=True)
            (out / name / "variant.json").write_text(json.dumps(raw, indent=1, default=str))
            train(TrainConfig.from_dict(raw, base_dir=base_dir, source=f"{args.config} [{name}]"))
        summary = json.loads(summary_file.read_text())
        train_s = time.perf_counter() - t0
        print(f"[ablation] {name}: trained in {train_s:.0f} s, best dev MRR@10 {summary.get('best_dev_mrr10')}",
              flush=True)
        record(str(out / name / "model"), {"name": name, "dev_mrr10": summary.get("best_dev_mrr10"),
                                           "train_s": round(train_s, 1)}, enc_kw)
        last = time.perf_counter() - t0
    print(f"[ablation] done in {time.perf_counter() - t_start:.0f} s -> {table}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
