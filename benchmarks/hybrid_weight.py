"""Choose the convex weight of hybrid search (BM25 + a learned model) on training dev data only.

Two dev sets, never a test qrel:
  * ``scifact-train``: SciFact's *train* qrels (809 real queries over the full SciFact corpus). The shipped
    model trained on most of these queries, so this set flatters the learned side;
  * ``title-dev``: the dev split of ``aftershock train-data prepare`` for the title sources (titles as
    queries, the title-less documents as the corpus, per source: scifact, cranfield, cisi (not ADI, whose
    documents the shipped model never saw and stay unseen); 3 % of the
    queries by qid hash, held out of the model's training).
For each set the script sweeps the learned side's weight w (BM25 gets 1 - w) over 0, 0.05, ..., 1 and
reports nDCG@10 (and RRF for comparison); the chosen weight maximises the mean of the sets' nDCG@10 (each
set's score is its queries' mean; the title-dev sources are pooled). Usage (from a clone, ../shared beside it):

    python benchmarks/hybrid_weight.py --data ../shared/data --model default --depth 1000 \
        --json benchmarks/out/hybrid_weight.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aftershock.eval.beir import Dataset, load_beir  # noqa: E402
from aftershock.eval.effectiveness import _exact_system, to_run  # noqa: E402
from aftershock.index import iter_jsonl_records  # noqa: E402
from aftershock.index.fusion import fuse  # noqa: E402

WEIGHTS = [round(x, 2) for x in np.arange(0, 1.0001, 0.05)]


def title_dev_sets(data: Path, work: Path) -> list[Dataset]:
    """The title sources' dev split, one Dataset per source (corpus = that source's title-less documents)."""
    from aftershock.cli import main

    out = work / "td"
    rc = main(["train-data", "prepare", "--data", str(data), "--output", str(out), "--no-gzip",
               "--sources", "scifact-title,cranfield-title,cisi-title"])
    if rc != 0:
        raise SystemExit(f"train-data prepare failed ({rc})")
    corpus = defaultdict(lambda: ([], []))
    for rec in iter_jsonl_records(out / "corpus.jsonl"):
        prefix = rec["_id"].split("/", 1)[0]
        ids, texts = corpus[prefix]
        ids.append(rec["_id"])
        texts.append(f"{rec.get('title') or ''} {rec.get('text') or ''}".strip())
    queries = defaultdict(list)
    for rec in iter_jsonl_records(out / "dev.jsonl"):
        pos = [d for d, lab in zip(rec["doc_ids"], rec["labels"]) if lab > 0]
        queries[pos[0].split("/", 1)[0]].append((rec["qid"], rec["query"], pos))
    sets = []
    for prefix, qs in sorted(queries.items()):
        ids, texts = corpus[prefix]
        sets.append(Dataset(f"title-dev:{prefix}", ids, texts, [q for q, _, _ in qs], [t for _, t, _ in qs],
                            {q: {d: 1 for d in pos} for q, _, pos in qs}))
    return sets


def per_query(run, qrels) -> dict:
    import ir_measures

    m = ir_measures.parse_measure("nDCG@10")
    return {r.query_id: r.value for r in ir_measures.iter_calc([m], qrels, run)}


def sweep(ds: Dataset, model: str, depth: int, log, vectors_dir=None, encoder_kwargs=None) -> dict:
    """Per-query nDCG@10 of bm25, the model, each convex weight and RRF on ``ds``."""
    stage = lambda line: log(f"  {line}")  # noqa: E731
    lex = _exact_system(ds, "bm25", depth, None, None, stage)[1]
    lrn = _exact_system(ds, model, depth, {"progress": False, **(encoder_kwargs or {})}, None, stage, vectors_dir)[1]
    k = min(depth, len(ds.doc_ids))
    out = {"queries": ds.query_ids, "bm25": per_query(to_run(lex, ds.query_ids, ds.doc_ids), ds.qrels),
           "model": per_query(to_run(lrn, ds.query_ids, ds.doc_ids), ds.qrels)}
    for w in WEIGHTS:
        f = fuse([lex, lrn], "convex", [1 - w, w], k)
        out[f"convex={w}"] = per_query(to_run(f, ds.query_ids, ds.doc_ids), ds.qrels)
    out["rrf"] = per_query(to_run(fuse([lex, lrn], "rrf", None, k), ds.query_ids, ds.doc_ids), ds.qrels)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="the shared BEIR folders (scifact/ with qrels/train.tsv)")
    p.add_argument("--model", default="default", help="the learned system (default: the shipped model)")
    p.add_argument("--depth", type=int, default=1000, help="hits per system fused (default 1000, as aftershock eval)")
    p.add_argument("--sets", default="scifact-train,title-dev", help="dev sets to sweep (default both)")
    p.add_argument("--vectors-dir", help="document vectors stored by `aftershock eval --vectors-dir` (read, and "
                   "written when absent)")
    p.add_argument("--json", help="write the sweep here")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (the model's document encoding)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="the model's dtype (as aftershock eval)")
    args = p.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    data = Path(args.data)
    scores = {}  # set name -> method -> mean nDCG@10
    with tempfile.TemporaryDirectory() as tmp:
        wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
        make = {"scifact-train": lambda: [load_beir(data / "scifact", split="train")],
                "title-dev": lambda: title_dev_sets(data, Path(tmp))}
        sets = {name: make[name]() for name in wanted}
        for name, parts in sets.items():
            pooled = defaultdict(list)
            for ds in parts:
                log(f"{ds.name}: {len(ds.query_ids)} queries over {len(ds.doc_ids)} documents")
                res = sweep(ds, args.model, args.depth, log, args.vectors_dir, {"device": args.device, "dtype": args.dtype})
                for method, per_q in res.items():
                    if method != "queries":
                        pooled[method] += [per_q.get(q, 0.0) for q in res["queries"]]
            scores[name] = {m: float(np.mean(v)) for m, v in pooled.items()}
            scores[name]["n_queries"] = len(pooled["bm25"])
    methods = ["bm25", "model"] + [f"convex={w}" for w in WEIGHTS] + ["rrf"]
    mean = {m: float(np.mean([scores[s][m] for s in scores])) for m in methods}
    best = max(WEIGHTS, key=lambda w: (round(mean[f"convex={w}"], 6), -abs(w - 0.5)))
    print(f"{'nDCG@10':<12}" + "".join(f"{s:>15}" for s in scores) + f"{'mean':>10}")
    for m in methods:
        print(f"{m:<12}" + "".join(f"{scores[s][m]:>15.4f}" for s in scores) + f"{mean[m]:>10.4f}"
              + ("   <- chosen" if m == f"convex={best}" else ""))
    print(f"chosen convex weight of the learned system: {best} (BM25 {1 - best:.2f}); "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "model": args.model,
                                               "depth": args.depth, "scores": scores, "mean": mean,
                                               "chosen_weight": best}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
