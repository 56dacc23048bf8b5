"""Cluster benchmark (issue 17): shards as Ray actors on one machine.

    python benchmarks/cluster/cluster_bench.py --dataset scifact --shards 1,2 --latency-shards 4
    python benchmarks/cluster/cluster_bench.py --dataset lexicon --docs 50000 --queries 500 --shards 1,2

1. **Batch QPS, S shards on S cores**: the cluster with S shards (Ray actors, one search thread each) answers
   one batch of queries (scattered to every shard, merged); QPS_S / (S x QPS_1), where QPS_1 is the 1-shard
   cluster (one actor, one thread: the same transport), target >= 0.8. Beside it, in the same run, the peer
   on one machine: one in-process collection with 1 and with S threads.
2. **Gather overhead at 4 shards**: single-query searches; overhead = request time outside the slowest shard's
   own search (Ray transport, merge); reported as p50(overhead) / p50(latency), target <= 0.15.
3. **Equality**: exact segments (one collection vs the S-shard cluster, same ids and scores) and Seismic
   segments (recall@10 against exact search, the project's `recall_at_k`; target |difference| <= 0.01).

Every shard and the one collection hold Seismic segments (``exact_threshold 0``) built with the same
`SeismicConfig`; searches use the same `SearchParams`. Prints a table and one JSON object (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "splade-tiny"


def rows_of(ext_ids, row_of: dict) -> np.ndarray:
    return np.array([[row_of[x] if x is not None else -1 for x in row] for row in ext_ids], np.int64)


def timed_qps(fn, nq: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return nq / best


def main(argv=None) -> int:
    from aftershock import Collection, CollectionConfig, ExactIndex, SearchParams, SeismicConfig
    from aftershock.cluster import ShardedCollection
    from aftershock.cluster.build import build_cluster
    from aftershock.cluster.ray_shards import init_ray, open_ray, stop_shards
    from aftershock.index import SearchResult, read_ids, read_npz

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--docs", type=int, help="the first N documents only (default: all)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--shards", default="1,2", help="shard counts of the QPS table (S shards on S cores)")
    ap.add_argument("--latency-shards", type=int, default=4)
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--query-cut", type=int, default=10)
    ap.add_argument("--heap-factor", type=float, default=0.8)
    ap.add_argument("--work", help="directory for the collections (default: a temporary one, removed)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    docs = read_npz(VECTORS / f"{args.dataset}.docs.npz", ids=read_ids(VECTORS / f"{args.dataset}.docs.ids.txt"))
    docs = docs[: args.docs] if args.docs else docs
    qs = read_npz(VECTORS / f"{args.dataset}.queries.npz", dim=docs.dim)[: args.queries]
    nq, k = len(qs), 10
    params = SearchParams(query_cut=args.query_cut, heap_factor=args.heap_factor)
    shard_counts = [int(s) for s in args.shards.split(",")]
    cores = len(os.sched_getaffinity(0))
    work = Path(args.work or tempfile.mkdtemp(prefix="cluster-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = CollectionConfig(exact_threshold=0, seismic=SeismicConfig())
    out = {"dataset": args.dataset, "docs": len(docs), "queries": nq, "k": k, "params": params.to_dict(),
           "cores": cores, "machine": platform.processor() or platform.machine(), "load_avg_start": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    def cluster_dir(s: int, exact: bool = False) -> Path:
        p = work / (f"cl{s}" + ("-exact" if exact else ""))
        if not (p / "cluster.json").exists():
            shutil.rmtree(p, ignore_errors=True)
            build_cluster(p, docs, s, config=CollectionConfig(exact_threshold=2**31 - 1) if exact else cfg,
                          use_ray=False, threads_per_shard=cores)
        return p

    one_dir = work / "one"
    if not (one_dir / "CURRENT").exists():
        shutil.rmtree(one_dir, ignore_errors=True)
        with Collection.create(one_dir, dim=docs.dim, config=cfg) as c:
            for a in range(0, len(docs), 10_000):
                c.upsert(docs[a:a + 10_000])
            c.optimize()
    one = Collection.open(one_dir, read_only=True)
    row_of = {d: i for i, d in enumerate(docs.ids)}
    truth = ExactIndex.build(docs).search(qs, 2 * k)

    def recall(res) -> float:
        from aftershock.eval.metrics import recall_at_k  # the one recall definition

        return recall_at_k(truth, SearchResult(res.scores, rows_of(res.ids, row_of)), k)

    # -------------------------------------------------------------- peer: one collection in this process
    one.search(qs[:8], k, params, threads=1)
    peer = {t: timed_qps(lambda t=t: one.search(qs, k, params, threads=t), nq, args.repeat)
            for t in sorted({1, *[s for s in shard_counts if s <= cores]})}
    out["one_collection_qps"] = peer
    out["one_collection_recall"] = recall(one.search(qs, k, params))

    # -------------------------------------------------------------- Ray: S shards on S cores
    init_ray(num_cpus=cores)
    qps, recalls, cpu_per_q = {}, {}, {}
    for s in shard_counts + [args.latency_shards]:
        if s in qps:
            continue
        p = cluster_dir(s)
        sc = open_ray(p, threads=1, deadline=600)
        sc.search(qs[:8], k, params)  # kernels loaded in every actor
        qps[s] = timed_qps(lambda: sc.search(qs, k, params), nq, args.repeat)
        cpu = sc.last_stats["shard_cpu_s"]  # CPU seconds of each shard's process for the last whole batch
        cpu_per_q[s] = {"sum_ms": 1e3 * sum(cpu) / nq, "max_ms": 1e3 * max(cpu) / nq}
        recalls[s] = recall(sc.search(qs, k, params))
        if s == args.latency_shards:
            lat, over, shard_t = [], [], []
            for i in range(min(args.latency_queries, nq)):
                sc.search(qs[i:i + 1], k, params)
                st = sc.last_stats
                lat.append(st["total_s"])
                shard_t.append(st["shard_search_s"])
                over.append(max(st["total_s"] - st["shard_search_s"], 0.0))
            ray = init_ray()
            handles = [c.handles[0] for c in sc.clients]
            noop = []
            for i in range(min(args.latency_queries, nq)):  # the floor: a fan-out of empty actor calls
                t0 = time.perf_counter()
                ray.get([h.pid.remote() for h in handles])
                noop.append(time.perf_counter() - t0)
            one_lat = []
            for i in range(min(args.latency_queries, nq)):
                t0 = time.perf_counter()
                one.search(qs[i:i + 1], k, params, threads=1)
                one_lat.append(time.perf_counter() - t0)
            out["latency"] = {"shards": s, "p50_ms": 1e3 * float(np.median(lat)),
                              "p50_overhead_ms": 1e3 * float(np.median(over)),
                              "p50_shard_search_ms": 1e3 * float(np.median(shard_t)),
                              "overhead_share_of_p50": float(np.median(over) / np.median(lat)),
                              "p99_ms": 1e3 * float(np.percentile(lat, 99)),
                              "one_collection_p50_ms": 1e3 * float(np.median(one_lat)),
                              "noop_fanout_p50_ms": 1e3 * float(np.median(noop))}
        stop_shards(p)
    out["cluster_qps"] = qps
    out["scaling"] = {s: qps[s] / (s * qps[1]) for s in shard_counts if 1 in qps}
    out["shard_cpu_ms_per_query"] = cpu_per_q
    # on S idle cores the batch takes as long as its busiest shard: QPS_S / (S x QPS_1) = cpu_1 / (S x max_s cpu_s)
    out["scaling_from_cpu"] = {s: cpu_per_q[1]["max_ms"] / (s * cpu_per_q[s]["max_ms"]) for s in shard_counts
                               if 1 in cpu_per_q}
    out["cluster_recall"] = recalls
    out["recall_diff_max"] = max(abs(r - out["one_collection_recall"]) for r in recalls.values())

    # -------------------------------------------------------------- exact equality
    s = max(shard_counts)
    exact_one = Collection.create(work / "one-exact-tmp", dim=docs.dim,
                                  config=CollectionConfig(exact_threshold=2**31 - 1)) \
        if not (work / "one-exact-tmp" / "CURRENT").exists() else Collection.open(work / "one-exact-tmp")
    if exact_one.count() == 0:
        for a in range(0, len(docs), 10_000):
            exact_one.upsert(docs[a:a + 10_000])
        exact_one.optimize()
    with ShardedCollection.open_local(cluster_dir(s, exact=True)) as sc:
        a, b = exact_one.search(qs, k), sc.search(qs, k)
        out["exact_equal"] = {"shards": s, "ids": bool(np.array_equal(a.ids, b.ids)),
                              "scores": bool(np.array_equal(a.scores, b.scores))}
    exact_one.close()
    out["load_avg_end"] = os.getloadavg()

    print(f"{args.dataset}: {len(docs)} docs, {nq} queries, k={k}, query_cut={params.query_cut}, "
          f"heap_factor={params.heap_factor}, {cores} cores, load {out['load_avg_start'][0]:.1f}")
    print("| setup | batch QPS (wall) | vs S x 1-shard (wall) | shard CPU ms/query (sum / busiest) | "
          "vs S x 1-shard (CPU) | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in shard_counts:
        c = cpu_per_q[s]
        print(f"| cluster, {s} shard(s), 1 thread each (Ray actors) | {qps[s]:.0f} | {out['scaling'][s]:.2f} | "
              f"{c['sum_ms']:.3f} / {c['max_ms']:.3f} | {out['scaling_from_cpu'][s]:.2f} | {recalls[s]:.4f} |")
    for t, v in peer.items():
        print(f"| one collection, {t} thread(s), in-process | {v:.0f} | | | | {out['one_collection_recall']:.4f} |")
    lt = out["latency"]
    print(f"latency at {lt['shards']} shards: p50 {lt['p50_ms']:.2f} ms (shard search {lt['p50_shard_search_ms']:.2f} "
          f"ms, overhead {lt['p50_overhead_ms']:.2f} ms = {100 * lt['overhead_share_of_p50']:.1f} % of p50); one "
          f"collection in-process p50 {lt['one_collection_p50_ms']:.2f} ms; an empty call to the {lt['shards']} "
          f"actors p50 {lt['noop_fanout_p50_ms']:.2f} ms")
    print(f"exact equality ({out['exact_equal']['shards']} shards): {out['exact_equal']}; recall diff max "
          f"{out['recall_diff_max']:.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    one.close()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
