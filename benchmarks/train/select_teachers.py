"""Choose the distillation teacher on the training dev split: dev MRR@10 of each teacher and of each ensemble
of them (min-max per query, mean, x scale), then rewrite every record's ``teacher`` scores as the best one.

    python benchmarks/train/select_teachers.py --data DIR [--json teachers.json]

Reads and rewrites ``DIR/train.jsonl.gz`` and ``DIR/dev.jsonl.gz`` (records of ``aftershock train-data``
with ``scores`` per teacher). Only dev queries (a hash split of the training queries) choose.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--json")
    args = p.parse_args(argv)

    from aftershock.index import iter_jsonl_records, write_jsonl_records
    from aftershock.train.data import ensemble, find_split, round_scores

    sys_path = Path(__file__).resolve().parent
    import sys

    sys.path.insert(0, str(sys_path))
    from teacher_dev import mrr10

    splits = {s: list(iter_jsonl_records(find_split(Path(args.data), s))) for s in ("train", "dev")}
    dev = splits["dev"]
    names = list(dev[0]["scores"])
    labels = [np.asarray(r["labels"]) for r in dev]
    table = {}
    for k in range(1, len(names) + 1):
        for combo in itertools.combinations(names, k):
            rows = [ensemble({n: r["scores"][n] for n in combo}, args.scale) for r in dev]
            table["+".join(combo)] = mrr10(rows, labels)
    best = max(table, key=table.get)
    for s, recs in splits.items():
        for r in recs:
            r["teacher"] = round_scores(ensemble(r["scores"], args.scale, best.split("+")))
        write_jsonl_records(find_split(Path(args.data), s), recs)
    out = {"dev_queries": len(dev), "dev_mrr10": table, "chosen": best}
    print(json.dumps(out, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
