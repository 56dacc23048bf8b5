"""Teacher quality and the KL diagnosis on the training dev split (never test data).

For each dev query of ``train-data prepare`` (positives + BM25-mined negatives) this scores every candidate
with each teacher (BM25 from the records, a dense bi-encoder, sparse models) and a student (a trained
`SparseModel`, e.g. the old shipped default), then reports:

* dev MRR@10 of each teacher, of ensembles of them (min-max per query, mean) and of the student, with the
  trainer's tie rule (a negative tied with the best positive ranks above it);
* the score scale of each (mean over queries of the per-query standard deviation of candidate scores);
* KL(softmax(teacher / tau_t) || softmax(a * student)) over a grid of student scale factors ``a``: if the KL
  falls a lot as ``a`` shrinks, a student can lower the loss by flattening its scores without reordering
  anything (the diagnosis of why KL never raised dev MRR);
* the same KL with both sides standardised per query (z-scores), which no rescaling can lower.

    python benchmarks/train/teacher_dev.py --data benchmarks/data/train/td --dense benchmarks/data/train/minilm-mlm \
        --sparse splade-tiny=../shared/models/splade-tiny --student old-default=default \
        --json benchmarks/out/train/w3/teacher_dev.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np


def mrr10(scores: list[np.ndarray], labels: list[np.ndarray]) -> float:
    rr = []
    for s, y in zip(scores, labels):
        pos, neg = s[y > 0], s[y <= 0]
        rank = 1 + int((neg >= pos.max()).sum())
        rr.append(1.0 / rank if rank <= 10 else 0.0)
    return float(np.mean(rr))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def kl(teacher: list[np.ndarray], student: list[np.ndarray]) -> float:
    out = []
    for t, s in zip(teacher, student):
        lp, lq = log_softmax(t), log_softmax(s)
        out.append(float((np.exp(lp) * (lp - lq)).sum()))
    return float(np.mean(out))


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of train-data prepare (dev.jsonl.gz, corpus.jsonl.gz)")
    p.add_argument("--dense", action="append", default=[], metavar="[NAME=]DIR", help="dense teacher (cosine)")
    p.add_argument("--sparse", action="append", default=[], metavar="NAME=DIR", help="sparse teacher (load_encoder)")
    p.add_argument("--student", action="append", default=[], metavar="NAME=DIR", help="sparse student model")
    p.add_argument("--max-queries", type=int, default=0)
    p.add_argument("--scale", type=float, default=10.0, help="ensemble scale (the trainer's KL targets)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)

    from aftershock.index import read_corpus
    from aftershock.train.data import ensemble, find_split
    from aftershock.train.teachers import make_teacher, score_records

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = Path(args.data)
    from aftershock.index import iter_jsonl_records

    records = list(iter_jsonl_records(find_split(data, "dev")))
    if args.max_queries:
        records = records[:args.max_queries]
    doc_text = read_corpus(find_split(data, "corpus"), {d for r in records for d in r["doc_ids"]})
    specs = ([f"{s.partition('=')[0] if '=' in s else 'minilm'}=dense:{s.partition('=')[2] or s}" for s in args.dense]
             + [f"{s.partition('=')[0]}=sparse:{s.partition('=')[2]}" for s in args.sparse + args.student])
    t0 = time.perf_counter()
    score_records(records, doc_text, [make_teacher(s, batch_size=32) for s in specs], args.scale)
    seconds = time.perf_counter() - t0
    labels = [np.asarray(r["labels"]) for r in records]
    students = [s.partition("=")[0] for s in args.student]
    teachers = [n for n in records[0]["scores"] if n not in students]
    get = {n: [np.asarray(r["scores"][n], dtype=np.float64) for r in records] for n in records[0]["scores"]}
    out = {"queries": len(records), "docs": len(doc_text), "seconds": round(seconds, 1), "mrr10": {}, "scale": {}}
    for n, s in get.items():
        out["mrr10"][n] = mrr10(s, labels)
        out["scale"][n] = {"mean_std": float(np.mean([x.std() for x in s])),
                           "mean_range": float(np.mean([x.max() - x.min() for x in s]))}
    for k in range(2, len(teachers) + 1):
        for combo in itertools.combinations(teachers, k):
            ens = [ensemble({n: get[n][i] for n in combo}, args.scale) for i in range(len(records))]
            out["mrr10"]["+".join(combo)] = mrr10(ens, labels)
    ens_all = [ensemble({n: get[n][i] for n in teachers}, args.scale) for i in range(len(records))]
    out["scale"]["ensemble"] = {"mean_std": float(np.mean([x.std() for x in ens_all])),
                                "mean_range": float(np.mean([x.max() - x.min() for x in ens_all]))}
    diag = {}
    for st in students:
        s = get[st]
        grid = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02]
        diag[st] = {"kl_tau1_by_student_scale": {str(a): kl(ens_all, [a * x for x in s]) for a in grid},
                    "kl_z_tau": {str(tau): kl([zscore(t) / tau for t in ens_all], [zscore(x) / tau for x in s])
                                 for tau in (0.5, 1.0)},
                    "mrr10": out["mrr10"][st]}
    out["kl_diagnosis"] = diag
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
