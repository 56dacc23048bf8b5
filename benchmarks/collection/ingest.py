"""Ingest benchmark: upsert a corpus through a `Collection` in batches (fsync durability by default), background
merges on, then `optimize()`; in the same run a one-shot `SeismicIndex.build` of the same vectors with the same
`SeismicConfig` (the peer).

    python benchmarks/collection/ingest.py --dataset scifact --every 2000 --buffer-docs 1000
    python benchmarks/collection/ingest.py --dataset lexicon --threads 2            # the issue's target run

Reports (JSON on stdout and in --out, a Markdown table on stderr):
* ingest seconds (upserts incl. flushes and merge waits + optimize) / one-shot build seconds (target <= 2);
* after optimize: recall@10 (``aftershock.eval.metrics.recall_at_k`` vs exact) and µs/query at recall 0.90 /
  0.95 read off the Pareto frontier of a ``query_cut:heap_factor`` sweep, 1 search thread, for the optimized
  collection and the one-shot index, swept back to back (target: within 10 %);
* search during ingest: every ``--every`` docs the same sweep over the collection as it is then (segments +
  buffer; background merges paused while it is timed, the wait for a merge in flight counted as ingest time),
  recall against exact search over the docs ingested so far, µs at 0.90 / 0.95 vs the one-shot index over
  the *whole* corpus at the same recall, swept right after it (target <= 2x).
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
SWEEP = "5:0.9,10:0.9,10:0.8,10:0.7,15:0.7,20:0.6"
TARGETS = (0.90, 0.95)


def rows_of(ext_ids, row_of: dict) -> np.ndarray:
    """External ids (None = padding) -> row numbers of the full document set (-1 = padding)."""
    return np.array([[row_of[x] if x is not None else -1 for x in row] for row in ext_ids], np.int64)


def sweep(search, qs, truth, points, k: int, to_rows=None) -> list[dict]:
    """Time ``search(qs, k, query_cut=, heap_factor=, threads=1)`` per sweep point (the best of two runs)."""
    from aftershock.eval.metrics import recall_at_k  # the project's one recall definition

    out = []
    for qc, hf in points:
        best, res = float("inf"), None
        for _ in range(2):
            t0 = time.perf_counter()
            res = search(qs, k, query_cut=qc, heap_factor=hf, threads=1)
            best = min(best, time.perf_counter() - t0)
        ids = to_rows(res.ids) if to_rows else res.ids
        out.append({"query_cut": qc, "heap_factor": hf, "us": round(best / len(qs) * 1e6, 1),
                    "recall": round(recall_at_k(truth, ids, k), 4)})
    return out


def at_targets(points: list[dict]) -> dict:
    from aftershock.eval.metrics import us_at_recall

    pts = [(p["us"], p["recall"]) for p in points]
    return {f"us@{t:.2f}": (round(v, 1) if (v := us_at_recall(pts, t)) is not None else None) for t in TARGETS}


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def main(argv=None) -> int:
    from aftershock import Collection, CollectionConfig, ExactIndex, SeismicConfig, SeismicIndex
    from aftershock.index import read_ids, read_npz

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--n-docs", type=int, default=0, help="use the first N documents (0 = all)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--buffer-docs", type=int, default=10_000)
    ap.add_argument("--exact-threshold", type=int, default=20_000)
    ap.add_argument("--merge-factor", type=int, default=4)
    ap.add_argument("--max-merge-docs", type=int, default=0)
    ap.add_argument("--max-segments", type=int, default=8)
    ap.add_argument("--durability", default="fsync")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--sweep", default=SWEEP, help="comma list of query_cut:heap_factor points")
    ap.add_argument("--every", type=int, default=50_000, help="search-during-ingest checkpoint every N docs")
    ap.add_argument("--threads", type=int, default=None, help="build threads of the one-shot index (merges use "
                    "the same); searches use 1")
    ap.add_argument("--keep", help="copy the optimized collection here (benchmarks/collection/deletes.py --from)")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args(argv)
    from aftershock.seismic.kernels.memory import numba_threads

    docs = read_npz(VECTORS / f"{args.dataset}.docs.npz", ids=read_ids(VECTORS / f"{args.dataset}.docs.ids.txt"))
    if args.n_docs:
        docs = docs[: args.n_docs]
    qs = read_npz(VECTORS / f"{args.dataset}.queries.npz", dim=docs.dim)[: args.queries]
    points = [(int(a), float(b)) for a, b in (p.split(":") for p in args.sweep.split(","))]
    k, seismic = 10, SeismicConfig()
    row_of = {d: i for i, d in enumerate(docs.ids)}

    def to_rows(x):
        return rows_of(x, row_of)

    truth = ExactIndex.build(docs).search(qs, 2 * k)  # 2k deep: ties with the k-th are seen
    warm = SeismicIndex.build(docs[:300], seismic)  # compile the build and search kernels outside the timings
    warm.search(qs[:2], k)
    t0 = time.perf_counter()
    one = SeismicIndex.build(docs, seismic, threads=args.threads)
    build_s = time.perf_counter() - t0
    one.search(qs[:5], k)
    one_pts = sweep(one.search, qs, truth, points, k)
    one_at = at_targets(one_pts)
    print(f"one-shot build {build_s:.1f} s, {one_at}", file=sys.stderr, flush=True)
    out = {"dataset": args.dataset, "docs": len(docs), "queries": len(qs), "batch": args.batch,
           "durability": args.durability, "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                         time.gmtime()),
           "one_shot": {"build_s": round(build_s, 2), "mb": round(one.nbytes() / 1e6, 1), "sweep": one_pts, **one_at},
           "during_ingest": []}
    with tempfile.TemporaryDirectory(prefix="aftershock-ingest-") as tmp:
        cfg = CollectionConfig(durability=args.durability, buffer_docs=args.buffer_docs,
                               exact_threshold=args.exact_threshold, merge_factor=args.merge_factor,
                               max_merge_docs=args.max_merge_docs, max_segments=args.max_segments, seismic=seismic)
        out["config"] = {key: v for key, v in cfg.to_dict().items() if key != "seismic"}
        c = Collection.create(Path(tmp) / "c", dim=docs.dim, config=cfg)
        t_ingest = 0.0
        nxt = args.every
        for a in range(0, len(docs), args.batch):
            t0 = time.perf_counter()
            c.upsert(docs[a:a + args.batch])
            t_ingest += time.perf_counter() - t0
            n = min(a + args.batch, len(docs))
            if n >= nxt or n == len(docs):
                nxt += args.every
                t0 = time.perf_counter()
                with c.merges_paused():  # the wait for a merge in flight is ingest time; the searches are not
                    t_ingest += time.perf_counter() - t0
                    info = c.info()
                    sub_truth = ExactIndex.build(docs[:n]).search(qs, 2 * k)  # rows of docs[:n] = rows of docs
                    pts = sweep(c.search, qs, sub_truth, points, k, to_rows)
                    peer = at_targets(sweep(one.search, qs, truth, points, k))  # side by side: the load drifts
                at = at_targets(pts)
                row = {"docs": n, "ingest_s": round(t_ingest, 1),
                       "segments": [f"{s['kind'][0]}{s['n_docs']}" for s in info["segments"]],
                       "buffer": info["buffer_docs"], "sweep": pts, **at, "one_shot": peer,
                       **{f"x_one_shot@{t:.2f}": ratio(at[f"us@{t:.2f}"], peer[f"us@{t:.2f}"]) for t in TARGETS}}
                out["during_ingest"].append(row)
                print(json.dumps({key: v for key, v in row.items() if key != "sweep"}), file=sys.stderr, flush=True)
        upsert_s = t_ingest
        t0 = time.perf_counter()
        c.optimize()
        opt_s = time.perf_counter() - t0
        c.search(qs[:5], k)
        opt_pts = sweep(c.search, qs, truth, points, k, to_rows)
        one_pts = sweep(one.search, qs, truth, points, k)  # the peer again, side by side: the load drifts
        one_at = at_targets(one_pts)
        out["one_shot_after"] = {"sweep": one_pts, **one_at}
        opt_at = at_targets(opt_pts)
        info = c.info()
        out["collection"] = {"upsert_s": round(upsert_s, 2), "optimize_s": round(opt_s, 2),
                             "total_ingest_s": round(upsert_s + opt_s, 2), "merges": info["merges"],
                             "disk_mb": round(info["disk_bytes"] / 1e6, 1), "sweep": opt_pts, **opt_at}
        out["ingest_over_build"] = ratio(upsert_s + opt_s, build_s)
        out["optimized_over_one_shot"] = {f"@{t:.2f}": ratio(opt_at[f"us@{t:.2f}"], one_at[f"us@{t:.2f}"])
                                          for t in TARGETS}
        c.close()
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(Path(tmp) / "c", args.keep)
    print(report(out), file=sys.stderr)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def report(out: dict) -> str:
    """The Markdown tables of one run."""
    one, col = out["one_shot_after"], out["collection"]
    lines = [f"ingest {out['docs']} docs: {col['total_ingest_s']} s (upserts {col['upsert_s']} s + optimize "
             f"{col['optimize_s']} s) vs one-shot build {out['one_shot']['build_s']} s: **{out['ingest_over_build']}x**",
             "",
             "| after optimize (1 thread, measured back to back) | recall@10 at 10:0.8 | µs @0.90 | µs @0.95 |",
             "|---|---:|---:|---:|"]
    for name, d in (("one-shot SeismicIndex", one), ("collection, optimized", col)):
        r = next((p["recall"] for p in d["sweep"] if (p["query_cut"], p["heap_factor"]) == (10, 0.8)), None)
        lines.append(f"| {name} | {r} | {d['us@0.90']} | {d['us@0.95']} |")
    ratios = out["optimized_over_one_shot"]
    lines += [f"| ratio | | {ratios['@0.90']}x | {ratios['@0.95']}x |", "",
              "| docs ingested | segments (e=exact, s=Seismic) + buffer | µs @0.90 | one-shot | ratio | µs @0.95 | "
              "one-shot | ratio | best recall |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["during_ingest"]:
        best = max(p["recall"] for p in r["sweep"])
        lines.append(f"| {r['docs']:,} | {' '.join(r['segments'])} + {r['buffer']} | {r['us@0.90']} | "
                     f"{r['one_shot']['us@0.90']} | {r['x_one_shot@0.90']}x | {r['us@0.95']} | "
                     f"{r['one_shot']['us@0.95']} | {r['x_one_shot@0.95']}x | {best} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
