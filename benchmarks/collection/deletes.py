"""Deletes benchmark: delete a fraction (default 30 %) of a collection's documents, run many searches (default
100,000, the queries cycled) and count deleted ids returned (must be 0); then `optimize()` and compare the
directory's bytes before / after with the expected shrink (bytes x live / total).

    python benchmarks/collection/deletes.py --dataset lexicon                       # builds the collection
    python benchmarks/collection/deletes.py --dataset lexicon --from /tmp/lexicon-coll   # a copy of one built
                                                            # by benchmarks/collection/ingest.py --keep

Also reported: recall@10 (``aftershock.eval.metrics.recall_at_k``) of the first ``--recall-queries`` queries
against exact search over the surviving documents, with deletions pending and after optimize, and µs/query.
Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "splade-tiny"


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(argv=None) -> int:
    from aftershock import Collection, CollectionConfig, ExactIndex
    from aftershock.index import read_ids, read_npz

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="lexicon")
    ap.add_argument("--from", dest="src", help="an existing collection of the dataset to copy (else one is built)")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--searches", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="queries per search call and ids per delete call")
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    docs = read_npz(VECTORS / f"{args.dataset}.docs.npz", ids=read_ids(VECTORS / f"{args.dataset}.docs.ids.txt"))
    qs = read_npz(VECTORS / f"{args.dataset}.queries.npz", dim=docs.dim)
    k = 10
    out = {"dataset": args.dataset, "docs": len(docs), "fraction": args.fraction, "searches": args.searches,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="aftershock-deletes-") as tmp:
        path = Path(tmp) / "c"
        t0 = time.perf_counter()
        if args.src:
            shutil.copytree(args.src, path)
            c = Collection.open(path)
        else:
            c = Collection.create(path, dim=docs.dim, config=CollectionConfig(durability="none"))
            for a in range(0, len(docs), 10_000):
                c.upsert(docs[a:a + 10_000])
            c.optimize()
        out["setup_s"] = round(time.perf_counter() - t0, 1)
        assert c.count() == len(docs), (c.count(), len(docs))
        out["bytes_before"] = dir_bytes(path)
        rng = np.random.default_rng(args.seed)
        dead_rows = np.sort(rng.choice(len(docs), int(round(args.fraction * len(docs))), replace=False))
        dead = [str(docs.ids[r]) for r in dead_rows]
        dead_set = set(dead)
        t0 = time.perf_counter()
        n_del = sum(c.delete(dead[a:a + args.batch]) for a in range(0, len(dead), args.batch))
        out["delete_s"] = round(time.perf_counter() - t0, 2)
        out["deleted"] = n_del
        c.flush()  # deletion bitmaps written, the log rotated
        out["count_after_delete"] = c.count()
        out["bytes_after_delete"] = dir_bytes(path)
        keep = np.setdiff1d(np.arange(len(docs)), dead_rows)
        nq = min(args.recall_queries, len(qs))
        truth = ExactIndex.build(docs[keep]).search(qs[:nq], 2 * k)  # row r of docs[keep] = docs row keep[r]
        row_of = {str(docs.ids[r]): j for j, r in enumerate(keep)}

        def recall(res) -> float:
            from aftershock.eval.metrics import recall_at_k  # the one recall definition

            ids = np.array([[row_of.get(x, -2) if x is not None else -1 for x in row] for row in res.ids])
            return round(recall_at_k(truth, ids, k), 4)

        returned_dead, hits, done, t_search = 0, 0, 0, 0.0
        while done < args.searches:
            a = done % len(qs)
            b = min(a + args.batch, len(qs), a + args.searches - done)
            t0 = time.perf_counter()
            res = c.search(qs[a:b], k)
            t_search += time.perf_counter() - t0
            flat = [x for x in res.ids.ravel() if x is not None]
            hits += len(flat)
            returned_dead += sum(1 for x in flat if x in dead_set)
            done += b - a
        out.update({"deleted_ids_returned": returned_dead, "hits_returned": hits,
                    "us_per_query_pending": round(t_search / done * 1e6, 1)})
        res = c.search(qs[:nq], k)
        out["recall@10_pending"] = recall(res)
        t0 = time.perf_counter()
        c.optimize()
        out["optimize_s"] = round(time.perf_counter() - t0, 1)
        out["bytes_after_optimize"] = dir_bytes(path)
        out["expected_bytes"] = int(out["bytes_before"] * len(keep) / len(docs))
        out["after_over_expected"] = round(out["bytes_after_optimize"] / out["expected_bytes"], 3)
        t0 = time.perf_counter()
        res = c.search(qs[:nq], k)
        out["us_per_query_optimized"] = round((time.perf_counter() - t0) / nq * 1e6, 1)
        out["recall@10_optimized"] = recall(res)
        out["deleted_ids_returned_optimized"] = sum(1 for x in res.ids.ravel() if x is not None and x in dead_set)
        out["info"] = {key: v for key, v in c.info().items() if key in ("count", "segments", "disk_bytes")}
        c.close()
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0 if out["deleted_ids_returned"] == 0 and out["deleted_ids_returned_optimized"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
