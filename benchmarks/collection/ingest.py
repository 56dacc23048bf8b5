"""Ingest benchmark: upsert a corpus through a `Collection` in batches (fsync durability), searching after
every few batches, then `optimize()`; compared with a one-shot `SeismicIndex.build` of the same vectors.

    python benchmarks/collection/ingest.py --dataset scifact            # 5,183 docs (small, CI-sized)
    python benchmarks/collection/ingest.py --dataset lexicon --exact-threshold 20000

Prints one JSON object: ingest seconds (upserts, optimize, total) vs the one-shot build, recall@10 against
exact search and µs/query of the collection during ingest and after optimize, and of the one-shot index.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "splade-tiny"


def rows_of(ext_ids, row_of: dict) -> np.ndarray:
    """External ids (None = padding) -> row numbers of the full document set (-1 = padding)."""
    return np.array([[row_of[x] if x is not None else -1 for x in row] for row in ext_ids], np.int64)


def main(argv=None) -> int:
    from aftershock import Collection, CollectionConfig, ExactIndex, SearchParams, SeismicIndex
    from aftershock.index import read_ids, read_npz

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--buffer-docs", type=int, default=10_000)
    ap.add_argument("--exact-threshold", type=int, default=2_000)
    ap.add_argument("--durability", default="fsync")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--heap-factor", type=float, default=0.8)
    ap.add_argument("--query-cut", type=int, default=10)
    args = ap.parse_args(argv)
    docs = read_npz(VECTORS / f"{args.dataset}.docs.npz", ids=read_ids(VECTORS / f"{args.dataset}.docs.ids.txt"))
    qs = read_npz(VECTORS / f"{args.dataset}.queries.npz", dim=docs.dim)[: args.queries]
    params = SearchParams(query_cut=args.query_cut, heap_factor=args.heap_factor)
    k = 10
    from aftershock.eval.metrics import recall_at_k  # the project's one recall definition

    row_of = {d: i for i, d in enumerate(docs.ids)}
    truth = ExactIndex.build(docs).search(qs, 2 * k)  # 2k deep: ties with the k-th are seen

    warm = SeismicIndex.build(docs[:300])  # compile the build and search kernels outside the timings
    warm.search(qs[:2], k, params)
    t0 = time.perf_counter()
    one = SeismicIndex.build(docs)
    build_s = time.perf_counter() - t0
    one.search(qs[:1], k, params)
    t0 = time.perf_counter()
    res = one.search(qs, k, params)
    one_us = (time.perf_counter() - t0) / len(qs) * 1e6
    one_recall = recall_at_k(truth, res.ids, k)

    out = {"dataset": args.dataset, "docs": len(docs), "batch": args.batch, "durability": args.durability,
           "one_shot_build_s": round(build_s, 2), "one_shot_us_per_query": round(one_us, 1),
           "one_shot_recall@10": round(one_recall, 4), "one_shot_mb": round(one.nbytes() / 1e6, 1),
           "during_ingest": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectionConfig(durability=args.durability, buffer_docs=args.buffer_docs,
                               exact_threshold=args.exact_threshold)
        c = Collection.create(Path(tmp) / "c", dim=docs.dim, config=cfg)
        t_up = 0.0
        for a in range(0, len(docs), args.batch):
            t0 = time.perf_counter()
            c.upsert(docs[a:a + args.batch])
            t_up += time.perf_counter() - t0
            if (a // args.batch) % 2 == 1 or a + args.batch >= len(docs):
                n = min(a + args.batch, len(docs))
                sub_truth = ExactIndex.build(docs[:n]).search(qs, 2 * k)  # rows of docs[:n] = rows of docs
                t0 = time.perf_counter()
                r = c.search(qs, k, params)
                us = (time.perf_counter() - t0) / len(qs) * 1e6
                out["during_ingest"].append({"docs": n, "segments": len(c.info()["segments"]),
                                             "us_per_query": round(us, 1),
                                             "recall@10": round(recall_at_k(sub_truth, rows_of(r.ids, row_of), k), 4)})
        t0 = time.perf_counter()
        c.optimize()
        opt_s = time.perf_counter() - t0
        c.search(qs[:1], k, params)
        t0 = time.perf_counter()
        r = c.search(qs, k, params)
        us = (time.perf_counter() - t0) / len(qs) * 1e6
        out.update({"upsert_s": round(t_up, 2), "optimize_s": round(opt_s, 2), "total_ingest_s": round(t_up + opt_s, 2),
                    "ingest_over_build": round((t_up + opt_s) / build_s, 2),
                    "optimized_us_per_query": round(us, 1),
                    "optimized_recall@10": round(recall_at_k(truth, rows_of(r.ids, row_of), k), 4),
                    "disk_mb": round(c.info()["disk_bytes"] / 1e6, 1)})
        c.close()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
