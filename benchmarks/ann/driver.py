"""``aftershock bench ann``: parse, load, run one child per system, measure recall with the one metric
(`aftershock.eval.metrics.recall_at_k`), write the JSON, the plot and (with --results) a RESULTS section."""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aftershock.eval.metrics import DEFINITION, pareto_frontier, recall_at_k, us_at_recall
from aftershock.index import SearchResult

from .args import (BUILD_FIELDS, _clustering_config, _full_command, _split, build_parser, parse_bmp_sweep,
                   parse_sizes, parse_sweep)
from .children import _numba_threads_running, _run_child
from .common import (BMP_LEVELS, BMP_MISSING, CLUSTERINGS, PROG, SEISMIC_MISSING, SYSTEMS, TARGETS, _cpu_model, _log,
                     _rss_now_kb, cpu_count, load_data)
from .peers import _bmp_version, _seismic_available, _seismic_version, bmp_available
from .report import _append_results, _header, _json_default, _not_single_threaded, _plot, _tables

def main(argv: list[str] | None = None) -> int:
    import multiprocessing as mp

    import numba

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sweep = parse_sweep(args.sweep)
        bmp_sweep = parse_bmp_sweep(args.bmp_sweep)
        bmp_sizes = parse_sizes(args.bmp_bsize)
    except ValueError as e:
        parser.error(str(e))
    systems = _split(args.systems)
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        parser.error(f"--systems {args.systems!r}: unknown {bad}; choose from {', '.join(SYSTEMS)}")
    clusterings = _split(args.clustering)
    bad = [c for c in clusterings if _clustering_config(c) is None]
    if bad or not clusterings:
        parser.error(f"--clustering {args.clustering!r}: unknown {bad}; choose from {', '.join(CLUSTERINGS)}, "
                     "optionally with ':N' to split clusters larger than N docs (e.g. random:24)")
    if args.k < 1 or args.n_queries < 1:
        parser.error("--k and --n-queries must be >= 1")
    if args.n_docs < 0:
        parser.error(f"--n-docs {args.n_docs} must be >= 0 (0 = all documents)")
    if args.n_knn and not args.knn:
        parser.error(f"--n-knn {args.n_knn} needs a k-NN graph: pass --knn > 0")
    from aftershock.errors import ConfigError
    from aftershock.seismic.config import SeismicConfig

    try:  # Aftershock's checks of the build parameters, before any data is read
        SeismicConfig(**{f: getattr(args, f) for f in BUILD_FIELDS})
    except ConfigError as e:
        parser.error(str(e))
    limit = numba.config.NUMBA_NUM_THREADS
    if args.threads is None:
        args.threads = min(cpu_count(), limit)
    elif args.threads < 1:
        parser.error("--threads must be >= 1")
    elif args.threads > limit:
        print(f"{PROG}: note: --threads {args.threads} capped at Numba's {limit}", file=sys.stderr)
        args.threads = limit
    T = args.threads
    dataset = args.dataset or Path(args.docs).name.split(".")[0]
    args.dataset = dataset
    tag = re.sub(r"[^\w.-]+", "_", dataset)
    out_dir = Path(args.out)
    command = _full_command(parser, args)
    invoked = shlex.join(PROG.split() + argv)
    notes: list[str] = []

    if "seismic" in systems and not _seismic_available():
        msg = f"seismic skipped: {SEISMIC_MISSING}"
        print(f"{PROG}: note: {msg}", file=sys.stderr)
        notes.append(msg)
        systems.remove("seismic")
    if "bmp" in systems and not bmp_available():
        msg = f"bmp skipped: {BMP_MISSING}"
        print(f"{PROG}: note: {msg}", file=sys.stderr)
        notes.append(msg)
        systems.remove("bmp")

    load_spec = {"docs": str(args.docs), "queries": str(args.queries), "dim": args.dim, "n_queries": args.n_queries,
                 "n_docs": args.n_docs}
    t0 = time.perf_counter()
    docs, queries = load_data(load_spec)
    print(f"{PROG}: {dataset}: {len(docs):,} docs (nnz {docs.nnz:,}), {len(queries):,} queries, dim {docs.dim}; "
          f"loaded in {time.perf_counter() - t0:.1f} s; {T} thread(s)", file=sys.stderr)
    if len(docs) == 0 or len(queries) == 0:
        print(f"{PROG}: error: need at least one document and one query", file=sys.stderr)
        return 2

    method = args.start_method
    if method == "auto":
        method = "spawn" if _numba_threads_running() else "fork"
        if method == "spawn":
            notes.append("children started by spawn (this process already ran Numba's threading layer, which "
                         "does not survive a fork); each child re-read the vectors")
    ctx = mp.get_context(method)

    build_params = {f: getattr(args, f) for f in BUILD_FIELDS}
    base = {"k": args.k, "threads": T, "sweep": sweep, "n_knn": args.n_knn, "load": load_spec,
            "bmp_sweep": bmp_sweep}
    jobs = [dict(base, kind="exact", name="exact", timed="exact" in systems)]
    for s in systems:
        if s == "aftershock":
            for c in clusterings:
                name = "aftershock" if len(clusterings) == 1 else f"aftershock-{c}"
                jobs.append(dict(base, kind="aftershock", name=name, clustering=c,
                                 config=dict(build_params, **_clustering_config(c))))
        elif s == "seismic":
            jobs.append(dict(base, kind="seismic", name="seismic",
                             build_kw={"n_postings": args.n_postings, "centroid_fraction": args.centroid_fraction,
                                       "min_cluster_size": args.min_cluster_size,
                                       "summary_energy": args.summary_energy, "max_fraction": args.max_fraction,
                                       "doc_cut": args.doc_cut, "nknn": args.knn}))
        elif s == "bmp":
            for b in bmp_sizes:
                jobs.append(dict(base, kind="bmp", name=f"bmp-b{b}", bsize=b))

    results: dict[str, dict] = {}
    baseline = None
    with tempfile.TemporaryDirectory(prefix="aftershock-bench-") as tmp:
        for j in jobs:
            if j["kind"] == "bmp":
                j["tmpdir"] = tempfile.mkdtemp(dir=tmp)
        if any(j["kind"] == "seismic" for j in jobs):
            from aftershock.index import write_bin

            docs_bin = os.path.join(tmp, "docs.bin")
            write_bin(docs, docs_bin)  # uncompressed Seismic .bin, written before any child starts
            for j in jobs:
                if j["kind"] == "seismic":
                    j["docs_bin"] = docs_bin
                    j["tmpdir"] = tempfile.mkdtemp(dir=tmp)
        gc.collect()
        baseline = _rss_now_kb()
        data = (docs, queries)
        for j in jobs:
            _log(j["name"], "starting")
            t0 = time.perf_counter()
            res = _run_child(ctx, j, data)
            if "error" in res:
                print(f"{PROG}: {j['name']} failed: {res['error']}\n{res.get('traceback', '')}", file=sys.stderr)
                notes.append(f"{j['name']} failed: {res['error'].splitlines()[0][:300]}")
            else:
                _log(j["name"], f"done in {time.perf_counter() - t0:.1f} s, peak RSS "
                                f"{res['peak_rss_kb'] / 1024:.0f} MiB")
            if j.get("clustering"):
                res["clustering"] = j["clustering"]
            results[j["name"]] = res

    gt_res = results["exact"]
    if "error" in gt_res:
        print(f"{PROG}: error: exact search (the ground truth) failed; no recall can be measured", file=sys.stderr)
        return 1
    gt_d = gt_res.pop("gt")
    truth = SearchResult(gt_d["scores"], gt_d["ids"])
    gt = truth.ids
    exact_ref = gt_res.pop("ref")
    if "exact" not in systems:
        results.pop("exact")
    order = [j["name"] for j in jobs if j["name"] in results]
    order = [n for n in order if n != "exact"] + (["exact"] if "exact" in results else [])
    results = {n: results[n] for n in order}

    for name, s in results.items():
        if "error" in s:
            continue
        for p in s["points"]:
            p["recall"] = recall_at_k(truth, p.pop("ids"), args.k)
            bids = p.pop("batch_ids", None)
            if bids is not None:
                p["batch_recall"] = recall_at_k(truth, bids, args.k)
        if name == "seismic":
            m = [p["single_matches_batch"] for p in s["points"] if p.get("single_matches_batch") is not None]
            if m and min(m) < 1.0:
                s["batch_order_note"] = (f"batch_search ids match single search for {min(m):.1%} of slots "
                                         "at worst (QPS only from batch)")

    s = results.get("seismic")
    if s and "error" not in s and _not_single_threaded(s["points"]) is not None:
        notes.append("pyseismic-lsr's batch_search(num_threads=1) still ran on several cores (its global Rayon "
                     f"pool, RAYON_NUM_THREADS={T} in its process), so its batch speed-up cannot be measured here; "
                     "its batch QPS is on that pool")
    pareto: dict[str, dict] = {}
    for name, s in results.items():
        if "error" in s:
            continue
        pts = [(p["mean_us"], p["recall"]) for p in s["points"]]
        front = pareto_frontier(pts)
        pareto[name] = {f"{t:.2f}": {"us": us_at_recall(pts, t),
                                     "upper_bound": bool(front and front[0][1] > t)} for t in TARGETS}
    ratios: dict[str, dict] = {}  # "aftershock / peer" -> target -> µs ratio (< 1: Aftershock faster)
    peers = [n for n in pareto if n == "seismic" or n.startswith("bmp")]
    for name in pareto:
        if not name.startswith("aftershock"):
            continue
        for peer in peers:
            r = ratios[f"{name} / {peer}"] = {}
            for t in TARGETS:
                a, b = pareto[name][f"{t:.2f}"]["us"], pareto[peer][f"{t:.2f}"]["us"]
                r[f"{t:.2f}"] = (a / b) if a is not None and b else None

    nproc = cpu_count()
    report = {
        "dataset": dataset, "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": command, "invoked": invoked, "args": vars(args), "k": args.k, "threads": T,
        "sweep": sweep, "build_params": build_params, "start_method": method,
        "machine": {"nproc": nproc, "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
                    "python": platform.python_version(), "numba": numba.__version__,
                    "pyseismic_lsr": _seismic_version() if "seismic" in results else None,
                    "bmp": _bmp_version() if any(n.startswith("bmp") for n in results) else None},
        "data": {"docs": str(args.docs), "queries": str(args.queries), "n_docs": len(docs), "dim": docs.dim,
                 "nnz_per_doc": docs.nnz / len(docs), "n_queries": len(queries),
                 "nnz_per_query": queries.nnz / len(queries),
                 "queries_without_exact_hits": int(np.sum((gt >= 0).sum(axis=1) == 0))},
        "parent_rss_kb_at_fork": baseline, "exact_ref": exact_ref, "systems": results, "pareto": pareto,
        "ratios": ratios, "notes": notes,
        "definitions": {
            "recall": DEFINITION + f" (k={args.k}; exact searched {2 * args.k} deep for ties; "
                      "aftershock.eval.metrics.recall_at_k)",
            "bmp": f"BMP indexes 8-bit impacts round(w x {BMP_LEVELS} / max document weight) of the same documents; "
                   "queries keep float weights (BMP quantizes them itself); recall against exact float search",
            "mean_us/p99_us": "1 thread, one search call per query, Python call overhead included, GC off",
            "batch_qps": f"one call over all queries on {T} thread(s) (pyseismic: batch_search on a .bin file, "
                         "its read included)",
            "peak_rss": "ru_maxrss of the child process that built and searched the index; it includes the "
                        "vectors loaded by the parent before the fork (rss_start_kb: the child's RSS when it started; "
                        "parent_rss_kb_at_fork also counts the parent's shared-library pages, which a child only "
                        "counts once it touches them)",
            "batch_cores/batch_cores_1t/single_cores": "process CPU seconds / wall seconds during the T-thread batch "
                                                       "call, the 1-thread batch call, the 1-query-per-call loop",
            "call_overhead_us": "mean µs of a search call with an empty query (1 thread): the fixed per-call cost",
            "pareto": "mean µs to reach a recall: linear interpolation on the Pareto frontier of (µs, recall)",
        },
    }

    body = _tables(report)
    png = out_dir / f"ann_{tag}.png"
    err = _plot(report, png)
    if err:
        notes.append(err)
        png = None
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"ann_{tag}.json"
    js.write_text(json.dumps(report, indent=1, default=_json_default, ensure_ascii=False), encoding="utf-8")

    print(f"\n### ANN: {dataset}\n")
    print(_header(report))
    print()
    print(body)
    print(f"\njson: {js}" + (f"\nplot: {png}" if png else ""))
    if args.results:  # only a file the user named is ever appended to
        _append_results(Path(args.results), report, body, png)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

