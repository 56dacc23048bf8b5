"""``aftershock bench scale``: grow real vectors to each N, build and search Aftershock and pyseismic-lsr side by
side in the same run, and report cost against N (tables, log-log slopes, a plot, JSON)."""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aftershock.eval.metrics import (
    DEFINITION,
    pareto_frontier,
    recall_at_k,
    us_at_recall,
)
from aftershock.index import SearchResult, SparseBatch, write_bin, write_npz
from benchmarks.ann.args import BUILD_FIELDS
from benchmarks.ann.common import TARGETS, _cpu_model, cpu_count
from benchmarks.ann.peers import _seismic_available
from benchmarks.ann.report import _json_default

from . import generate as gen
from .report import plot, ratio_table, slope_table, slopes, table
from .systems import run_child

PROG = "aftershock bench scale"
DEFAULT_SIZES = "268640,1000000,3000000"
DEFAULT_SWEEP = "5:0.8,8:0.8,10:0.8,10:0.7,15:0.7,20:0.6,30:0.5,50:0.4"
SYSTEMS = ("aftershock", "seismic")


def parse_sizes(text: str) -> list[int]:
    """``"268640,1M,3.5M,500k"`` -> sorted document counts."""
    out = []
    for part in (x.strip().lower() for x in text.split(",")):
        if not part:
            continue
        mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(part[-1], 1)
        try:
            n = int(round(float(part[:-1] if mult > 1 else part) * mult))
        except ValueError:
            raise ValueError(f"--sizes: {part!r} is not a document count (e.g. 268640, 1M, 500k)") from None
        if n < 1:
            raise ValueError(f"--sizes: {part!r} must be >= 1")
        out.append(n)
    if not out:
        raise ValueError("--sizes has no sizes")
    return sorted(set(out))


def build_parser() -> argparse.ArgumentParser:
    from aftershock.cli.common import add_config_flags
    from aftershock.seismic.config import SeismicConfig

    p = argparse.ArgumentParser(prog=PROG, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Scale benchmark: real vectors grown to N documents (term ids remapped "
                                            "within document-frequency bands, benchmarks/scale/generate.py); for "
                                            "each N, Aftershock and pyseismic-lsr built and searched side by side.")
    d = p.add_argument_group("data (either --docs/--queries or --seed)")
    d.add_argument("--docs", help="source document vectors (e.g. ../shared/vectors/splade-tiny/lexicon.docs.npz)")
    d.add_argument("--queries", help="source query vectors")
    d.add_argument("--seed-file", help="a compact seed written by `python -m benchmarks.scale.generate seed`")
    d.add_argument("--dim", type=int, default=30522)
    d.add_argument("--sizes", default=DEFAULT_SIZES, help="documents to grow to (1M, 500k and plain counts)")
    d.add_argument("--n-queries", type=int, default=1000, help="queries (ground truth, recall, batch QPS)")
    d.add_argument("--n-timed", type=int, default=500, help="of which timed one per call on 1 thread")
    d.add_argument("--gen-seed", type=int, default=gen.SEED, help="seed of the generator's permutations")
    d.add_argument("--k", type=int, default=10)
    b = p.add_argument_group("build (Seismic's names; both systems get the same values)")
    add_config_flags(b, SeismicConfig, BUILD_FIELDS, defaults=True)
    b.add_argument("--clustering", default="random", help="Aftershock's clustering ('random' = Seismic's)")
    b.add_argument("--max-block-size", type=int, default=0, help="Aftershock: split clusters larger than this")
    s = p.add_argument_group("search")
    s.add_argument("--sweep", default=DEFAULT_SWEEP, help="query_cut:heap_factor points, both systems")
    s.add_argument("--threads", type=int, default=None, help="build and batch threads (default: all cores)")
    s.add_argument("--systems", default=",".join(SYSTEMS))
    o = p.add_argument_group("output")
    o.add_argument("--out", default="aftershock-bench-out", help="folder for scale.json / scale.png")
    o.add_argument("--tag", default="scale", help="file stem of the outputs")
    o.add_argument("--tmp", default=None, help="folder for the generated vector files (default: a temp dir)")
    o.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                   help="instead of running: merge the rows of earlier runs' JSON files (e.g. one size per device "
                        "call) into one table, slopes and plot under --out/--tag")
    o.add_argument("--budget-s", type=float, default=0.0,
                   help="skip a size whose estimated time (the last size's, scaled by N) would end past this "
                        "many seconds from the start (0 = no limit)")
    return p


def _load_source(args):
    """(docs CSR + dim, queries CSR, provenance) from --docs/--queries or --seed-file."""
    if args.seed_file:
        docs, queries, meta = gen.unpack_seed(args.seed_file)
        return docs, queries, {"seed_file": os.path.basename(args.seed_file), "seed_meta": meta}
    from aftershock.index import read_vectors

    d = read_vectors(args.docs, dim=args.dim, what="documents")
    q = read_vectors(args.queries, dim=args.dim, what="queries")[: args.n_queries]
    return ((d.indptr, d.indices, d.values, d.dim), (q.indptr, q.indices, q.values, q.dim),
            {"docs": str(args.docs), "queries": str(args.queries)})


def _row(n, name, res, truth, k, nq) -> dict:
    row = {"n_docs": n, "system": name}
    if "error" in res:
        row.update(error=res["error"], wall_s=res.get("wall_s"))
        return row
    pts = res["points"]
    for p in pts:  # recall of the 1-thread results (timed queries) and of the batch (all queries)
        p["recall_timed"] = recall_at_k(SearchResult(truth.scores[: p["n_timed"]], truth.ids[: p["n_timed"]]),
                                        p.pop("ids"), k)
        p["recall"] = recall_at_k(truth, p.pop("batch_ids"), k)
    cost = [(p["mean_us"], p["recall"]) for p in pts]
    front = pareto_frontier(cost)
    row.update(version=res.get("version"), build_s=res["build_s"], peak_rss_mb=res["peak_rss_kb"] / 1024,
               peak_rss_build_mb=res["peak_rss_build_kb"] / 1024, rss_before_build_mb=res["rss_before_build_kb"] / 1024,
               index_mb=(res["index_bytes"] or 0) / 1e6 or None, index_bytes_source=res["index_bytes_source"],
               bytes_per_doc=(res["index_bytes"] or 0) / n or None, best_recall=max(p["recall"] for p in pts),
               wall_s=res["wall_s"], points=pts, config=res.get("config"), read_s=res.get("read_s"),
               n_blocks=res.get("n_blocks"), query_terms_dropped=res.get("query_terms_dropped"))
    for t in TARGETS:
        key = f"{t:.2f}"
        row[f"us_{key}"] = us_at_recall(cost, t)
        row[f"us_{key}_upper_bound"] = bool(front and front[0][1] > t)
        ok = [p for p in pts if p["recall"] >= t]
        row[f"batch_qps_{key}"] = max((p["batch_qps"] for p in ok), default=None)
    return row


def _write(report, out_dir: Path, tag: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{tag}.json"
    js.write_text(json.dumps(report, indent=1, default=_json_default, ensure_ascii=False), encoding="utf-8")
    return js


def main(argv: list[str] | None = None) -> int:
    import numba

    from aftershock.errors import ConfigError
    from aftershock.seismic.config import SeismicConfig
    from benchmarks.ann.args import parse_sweep

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.tag, shlex.join(PROG.split() + argv))
    if not args.seed_file and not (args.docs and args.queries):
        parser.error("give --docs and --queries, or --seed-file")
    try:
        sizes = parse_sizes(args.sizes)
        sweep = parse_sweep(args.sweep)
    except ValueError as e:
        parser.error(str(e))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or any(s not in SYSTEMS for s in systems):
        parser.error(f"--systems {args.systems!r}: choose from {', '.join(SYSTEMS)}")
    if args.n_queries < 1 or args.n_timed < 1 or args.k < 1:
        parser.error("--n-queries, --n-timed and --k must be >= 1")
    build_params = {f: getattr(args, f) for f in BUILD_FIELDS}
    try:
        cfg = SeismicConfig(**build_params, clustering=args.clustering, max_block_size=args.max_block_size)
    except ConfigError as e:
        parser.error(str(e))
    T = min(args.threads or cpu_count(), numba.config.NUMBA_NUM_THREADS)
    notes: list[str] = []
    if "seismic" in systems and not _seismic_available():
        notes.append("pyseismic-lsr is not installed: its rows are missing")
        print(f"{PROG}: note: {notes[-1]}", file=sys.stderr)
        systems.remove("seismic")
    start = time.perf_counter()
    t0 = time.perf_counter()
    (ip, ind, val, dim), (qip, qind, qval, qdim), source = _load_source(args)
    qip = qip[: args.n_queries + 1]
    nq = qip.shape[0] - 1
    n_timed = min(args.n_timed, nq)
    n_src = ip.shape[0] - 1
    band = gen.df_bands(gen.term_df(ip, ind, dim))
    src_stats = gen.set_stats(ip, ind, val, dim)
    print(f"{PROG}: source {n_src:,} docs ({int(ip[-1]):,} nnz), {nq:,} queries; loaded in "
          f"{time.perf_counter() - t0:.1f} s; {T} threads; sizes {', '.join(f'{n:,}' for n in sizes)}",
          file=sys.stderr, flush=True)
    out_dir = Path(args.out)
    report = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "invoked": shlex.join(PROG.split() + argv), "args": vars(args), "threads": T, "k": args.k,
        "sweep": sweep, "build_params": cfg.to_dict(), "source": source, "source_stats": src_stats,
        "generator": {"band_ratio": gen.BAND_RATIO, "seed": args.gen_seed, "n_queries": nq, "n_timed": n_timed},
        "machine": {"nproc": cpu_count(), "cpu_model": _cpu_model(), "python": platform.python_version(),
                    "numba": numba.__version__, "mem_total_gb": _mem_total_gb()},
        "sizes": [], "rows": [], "notes": notes,
        "definitions": {
            "recall": DEFINITION + f" (k={args.k}; exact searched {2 * args.k} deep for ties)",
            "build_s": "wall seconds from the input file on disk to a searchable index (Aftershock: read its "
                       ".npz + SeismicIndex.build; pyseismic-lsr: SeismicIndexRaw.build on the same docs as .bin)",
            "peak_rss": "ru_maxrss (VmHWM) of a fresh spawned process that read the input, built the index and "
                        "searched it; peak_rss_build_mb: the same just after the build",
            "us": "mean µs/query, 1 thread, one call per query (first n_timed queries), at the recall read off "
                  "the Pareto frontier of (µs, recall over all queries) by linear interpolation",
            "batch_qps": f"all queries in one call on {T} threads, at the cheapest sweep point reaching the recall",
        },
    }
    py_ver = sys.version_info
    with tempfile.TemporaryDirectory(prefix="aftershock-scale-", dir=args.tmp) as tmp:
        last = None  # (n, seconds) of the last size
        for n in sizes:
            if args.budget_s and last:
                est = last[1] * n / last[0]
                left = args.budget_s - (time.perf_counter() - start)
                if est > left:
                    notes.append(f"N={n:,} skipped: estimated {est:.0f} s (the last size's time scaled by N) > "
                                 f"{left:.0f} s left of --budget-s {args.budget_s:g}")
                    print(f"{PROG}: {notes[-1]}", file=sys.stderr, flush=True)
                    continue
            t_n = time.perf_counter()
            size = _make_size(n, (ip, ind, val, dim), (qip, qind, qval, qdim), band, args, tmp, src_stats)
            report["sizes"].append(size["info"])
            job = {"dim": dim, "k": args.k, "threads": T, "queries": size["queries"], "docs_npz": size["docs_npz"],
                   "docs_bin": size["docs_bin"], "sweep": sweep, "n_timed": n_timed, "tmpdir": tmp,
                   "config": cfg.to_dict(),
                   "build_kw": {"n_postings": args.n_postings, "centroid_fraction": args.centroid_fraction,
                    "min_cluster_size": args.min_cluster_size, "summary_energy": args.summary_energy,
                    "max_fraction": args.max_fraction, "doc_cut": args.doc_cut, "nknn": args.knn}}
            warm_s = 0.0
            if "warmup" not in report:
                report["warmup"] = run_child("warmup", job)
                warm_s = report["warmup"]["wall_s"]
                if "error" in report["warmup"]:
                    print(f"{PROG}: error: the warm-up failed: {report['warmup']['error']}\n"
                          f"{report['warmup'].get('traceback', '')}", file=sys.stderr)
                    return 1
            tr = run_child("truth", job)
            if "error" in tr:
                print(f"{PROG}: error: ground truth at N={n:,} failed: {tr['error']}\n{tr.get('traceback', '')}",
                      file=sys.stderr)
                return 1
            size["info"]["truth"] = {k: tr[k] for k in ("build_s", "search_s", "qps", "peak_rss_kb", "wall_s")}
            truth = SearchResult(tr["scores"], tr["ids"])
            for s in systems:
                print(f"[{s}] N={n:,}: starting", file=sys.stderr, flush=True)
                res = run_child(s, job)
                if "error" in res:
                    print(f"{PROG}: {s} at N={n:,} failed: {res['error']}\n{res.get('traceback', '')}",
                          file=sys.stderr)
                row = _row(n, s, res, truth, args.k, nq)
                report["rows"].append(row)
                _write(report, out_dir, args.tag)
            for f in (size["docs_npz"], size["docs_bin"]):
                os.remove(f)
            last = (n, time.perf_counter() - t_n - warm_s)  # the one-off compile does not grow with N
            size["info"]["wall_s"] = last[1]
            print(f"\n### N = {n:,} ({last[1]:.0f} s)\n\n{table([r for r in report['rows'] if r['n_docs'] == n])}\n",
                  flush=True)
    report["total_s"] = time.perf_counter() - start
    _finish(report, out_dir, args.tag, f"{T} threads, Python {py_ver.major}.{py_ver.minor}")
    return 0


def _finish(report: dict, out_dir: Path, tag: str, what: str) -> None:
    """Slopes, plot, JSON and the printed tables."""
    notes = report["notes"]
    report["slopes"] = slopes(report["rows"])
    png = out_dir / f"{tag}.png"
    out_dir.mkdir(parents=True, exist_ok=True)
    err = plot(report["rows"], png, f"lexicon grown to N docs: build on {report['threads']} threads, µs on 1 thread "
                                    f"({report['machine']['cpu_model']}, {report['date']})")
    if err:
        notes.append(err)
    js = _write(report, out_dir, tag)
    print(f"\n## Scale ({report['date']}, {what})\n")
    print(table(report["rows"]))
    print("\nAftershock / pyseismic-lsr (< 1: Aftershock cheaper; QPS > 1: Aftershock faster):\n")
    print(ratio_table(report["rows"]))
    print("\nlog-log slope against N (1.0 = linear):\n")
    print(slope_table(report["slopes"]))
    print(f"\njson: {js}" + ("" if err else f"\nplot: {png}") + "".join(f"\nnote: {x}" for x in notes))


def merge(files: list[str], out_dir: Path, tag: str, invoked: str) -> int:
    """One report from the rows of several runs (each row keeps the run it came from)."""
    runs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    rows, sizes = [], []
    for f, r in zip(files, runs):
        for row in r["rows"]:
            rows.append(dict(row, run=Path(f).name, run_date=r["date"]))
        sizes += [dict(x, run=Path(f).name) for x in r["sizes"]]
    rows.sort(key=lambda r: (r["n_docs"], r["system"]))
    machines = {json.dumps(r["machine"], sort_keys=True) for r in runs}
    notes = [f"merged from {', '.join(Path(f).name for f in files)}"]
    if len(machines) > 1:
        notes.append("the runs' machine descriptions differ: " + "; ".join(sorted(machines)))
    report = dict(runs[-1], date=" / ".join(r["date"] for r in runs), invoked=invoked, rows=rows, sizes=sizes,
                  notes=notes + [f"{Path(f).name}: {n}" for f, r in zip(files, runs) for n in r.get("notes", [])],
                  runs=[{"file": Path(f).name, "date": r["date"], "invoked": r["invoked"]} for f, r in zip(files, runs)])
    report.pop("warmup", None)
    _finish(report, out_dir, tag, f"{report['threads']} threads, merged from {len(runs)} runs")
    return 0


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            return int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _make_size(n, docs, queries, band, args, tmp, src_stats) -> dict:
    """Generate N docs + the remapped queries; write docs.npz (Aftershock), docs.bin (pyseismic-lsr) and
    queries.npz; the statistics check against the source."""
    ip, ind, val, dim = docs
    qip, qind, qval, qdim = queries
    n_src = ip.shape[0] - 1
    t0 = time.perf_counter()
    g = gen.grow_docs(ip, ind, val, dim, n, args.gen_seed, band=band)
    gen_s = time.perf_counter() - t0
    stats = gen.set_stats(*g, dim, copies=n / n_src)
    (qp, qi, qv), copy = gen.remap_queries(qip, qind[: qip[-1]], qval[: qip[-1]], band, n_src, n, args.gen_seed)
    t1 = time.perf_counter()
    batch = SparseBatch.from_arrays(*g, dim=dim, what="documents", copy=False)
    del g
    docs_npz, docs_bin = os.path.join(tmp, f"docs-{n}.npz"), os.path.join(tmp, f"docs-{n}.bin")
    write_npz(batch, docs_npz)
    write_bin(batch, docs_bin)
    qb = SparseBatch.from_arrays(qp, qi, qv, dim=max(qdim, dim), what="queries", copy=False)
    q_npz = os.path.join(tmp, f"queries-{n}.npz")
    write_npz(qb, q_npz)
    write_s = time.perf_counter() - t1
    del batch
    gc.collect()
    print(f"\n### generated N = {n:,} in {gen_s:.1f} s (+ {write_s:.1f} s writing)\n\n"
          f"{gen.stats_table(src_stats, stats)}\n", file=sys.stderr, flush=True)
    info = {"n_docs": n, "generate_s": gen_s, "write_s": write_s, "stats": stats,
            "queries_per_copy": np.bincount(copy).tolist()}
    return {"info": info, "docs_npz": docs_npz, "docs_bin": docs_bin, "queries": q_npz}
