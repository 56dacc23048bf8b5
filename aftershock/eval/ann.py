"""Side-by-side ANN benchmark: Aftershock's Seismic index vs pyseismic-lsr (and exact search), same run,
same vectors, same queries.

``aftershock bench ann --docs D --queries Q [...]`` (or ``python benchmarks/ann.py ...``):

* ground truth: Aftershock's exact (Numba) search; recall@k of every sweep point is measured against it;
* per system and (query_cut, heap_factor) sweep point: recall@k, 1-thread latency (one query per call:
  mean and p99 µs), batch QPS on ``--threads`` threads;
* per system: build seconds, index bytes, peak RSS of the process that built and searched it, batch
  speed-up (``--threads`` threads vs 1);
* a Pareto read-off: 1-thread mean µs needed to reach recall 0.90 and 0.95, and the ratio
  Aftershock / pyseismic-lsr at both;
* reference lines: exact search µs/query (Aftershock, 1 thread) and scipy (CSR product + argpartition).

Each system is built and searched in a child process (``fork`` after the parent loaded the vectors, so
its peak RSS includes the vectors, as they would be in any process that builds an index from them).
Output: Markdown tables on stdout, ``<out>/ann_<dataset>.json``, ``<out>/ann_<dataset>.png`` and a
section appended to ``--results`` (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PROG = "aftershock bench ann"
SYSTEMS = ("aftershock", "seismic", "exact")
CLUSTERINGS = ("random", "kmeans")


def _clustering_config(spec: str) -> dict | None:
    """'random' | 'kmeans', optionally ':N' = max_block_size N; None when the spec is not one of those."""
    name, _, size = spec.partition(":")
    if name not in CLUSTERINGS or (size and not size.isdigit()):
        return None
    return {"clustering": name, "max_block_size": int(size or 0)}
# query_cut:heap_factor, cheapest first: lower heap_factor skips fewer blocks, larger query_cut visits
# more lists; on SPLADE vectors this spans recall@10 of about 0.8 to 0.99.
DEFAULT_SWEEP = "3:0.9,5:0.9,5:0.8,8:0.8,10:0.8,10:0.7,15:0.7,20:0.6,30:0.5,40:0.4"
TARGETS = (0.90, 0.95)
N_SCIPY = 200  # queries timed with scipy for the reference line
SEISMIC_MISSING = "pyseismic-lsr is not installed (pip install 'aftershock[bench]')"


# ---------------------------------------------------------------------------------------------- arguments
def _cpu_count() -> int:
    from aftershock.seismic.config import cpu_count

    return cpu_count()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Recall / latency / memory of Aftershock's Seismic index side by side with pyseismic-lsr "
                    "and exact search, on the same vectors in the same run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--docs", required=True, help="document vectors (.npz, .bin, .bin.gz, .parquet, .jsonl)")
    d.add_argument("--queries", required=True, help="query vectors (same formats)")
    d.add_argument("--dim", type=int, default=30522, help="vocabulary size (ignored for .jsonl: its tokens define it)")
    d.add_argument("--n-queries", type=int, default=2000, help="use the first N queries")
    d.add_argument("--n-docs", type=int, default=0, help="use the first N documents (0 = all)")
    d.add_argument("--k", type=int, default=10, help="top-k (recall@k)")
    d.add_argument("--dataset", default=None, help="label for tables and file names (default: docs file stem)")
    b = p.add_argument_group("build (Seismic's names; both systems get the same values)")
    b.add_argument("--n-postings", type=int, default=3500)
    b.add_argument("--max-fraction", type=float, default=1.5)
    b.add_argument("--centroid-fraction", type=float, default=0.1)
    b.add_argument("--min-cluster-size", type=int, default=2)
    b.add_argument("--summary-energy", type=float, default=0.4)
    b.add_argument("--doc-cut", type=int, default=15)
    b.add_argument("--knn", type=int, default=0, help="k-NN graph neighbours per doc (0 = none)")
    b.add_argument("--clustering", default="random",
                   help="Aftershock clustering; a comma list (random,kmeans,random:24) builds one Aftershock index "
                        "each; ':N' splits clusters larger than N docs (max_block_size)")
    s = p.add_argument_group("search")
    s.add_argument("--sweep", default=DEFAULT_SWEEP, help="comma list of query_cut:heap_factor points")
    s.add_argument("--n-knn", type=int, default=0, help="k-NN graph neighbours rescored per result")
    s.add_argument("--threads", type=int, default=None, help="threads for builds and batch QPS (default: all cores)")
    s.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="benchmarks/out", help="directory for ann_<dataset>.json / .png")
    o.add_argument("--results", default="benchmarks/RESULTS.md", help="Markdown file to append a section to")
    o.add_argument("--no-append", action="store_true", help="do not append to --results")
    o.add_argument("--start-method", choices=("auto", "fork", "spawn"), default="auto",
                   help="how the per-system child processes start (auto: fork unless this process already "
                        "runs Numba's threading layer, which cannot survive a fork)")
    return p


def parse_sweep(text: str) -> list[tuple[int, float]]:
    """``"10:0.9,20:0.7"`` -> ``[(10, 0.9), (20, 0.7)]`` (validated, duplicates dropped, order kept)."""
    out: list[tuple[int, float]] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            qc_s, hf_s = part.split(":")
            qc, hf = int(qc_s), float(hf_s)
        except ValueError:
            raise ValueError(f"sweep point {part!r} is not query_cut:heap_factor (e.g. 10:0.8)") from None
        if qc < 1 or not (0 < hf <= 1):
            raise ValueError(f"sweep point {part!r}: query_cut must be >= 1 and heap_factor in (0, 1]")
        if (qc, hf) not in out:
            out.append((qc, hf))
    if not out:
        raise ValueError("--sweep has no points")
    return out


def _split(text: str) -> list[str]:
    out: list[str] = []
    for x in text.split(","):
        x = x.strip().lower()
        if x and x not in out:
            out.append(x)
    return out


def _full_command(parser: argparse.ArgumentParser, args) -> str:
    """The command with every option spelled out (defaults included), so the run can be repeated."""
    parts = PROG.split()
    for act in parser._actions:
        if not act.option_strings or act.dest == "help":
            continue
        opt = next((o for o in act.option_strings if o.startswith("--")), act.option_strings[0])
        v = getattr(args, act.dest)
        if isinstance(act, argparse._StoreTrueAction):
            if v:
                parts.append(opt)
        elif v is not None:
            parts += [opt, str(v)]
    return shlex.join(parts)


# ---------------------------------------------------------------------------------------------- metrics
def recall_vs_exact(exact_ids: np.ndarray, got_ids: np.ndarray) -> float:
    """Mean over queries of the fraction of the exact top-k ids found (-1 padding ignored). A query whose
    exact result has fewer than k hits counts over the hits it has; one with none is left out."""
    vals = []
    for e, g in zip(exact_ids, got_ids):
        e = e[e >= 0]
        if e.size:
            vals.append(np.isin(e, g[g >= 0]).sum() / e.size)
    return float(np.mean(vals)) if vals else 1.0


def pareto_frontier(points) -> list[tuple[float, float]]:
    """The (µs, recall) points no other point beats (as fast or faster with at least the recall), sorted by
    µs; along it recall strictly increases."""
    pts = sorted(((float(u), float(r)) for u, r in points if np.isfinite(u) and np.isfinite(r)),
                 key=lambda p: (p[0], -p[1]))
    front: list[tuple[float, float]] = []
    for u, r in pts:
        if not front or r > front[-1][1]:
            front.append((u, r))
    return front


def us_at_recall(points, target: float) -> float | None:
    """Mean µs needed to reach ``target`` recall: linear interpolation between the two Pareto-frontier
    points around it; the cheapest point's µs if that already reaches it (an upper bound); None if no point
    reaches it."""
    front = pareto_frontier(points)
    if not front or front[-1][1] < target:
        return None
    if front[0][1] >= target:
        return front[0][0]
    for (u0, r0), (u1, r1) in zip(front, front[1:]):
        if r0 < target <= r1:
            return u0 + (target - r0) * (u1 - u0) / (r1 - r0)
    return None  # unreachable: the frontier's recall is increasing


def _stats_us(ns: np.ndarray) -> tuple[float, float]:
    if ns.size == 0:
        return float("nan"), float("nan")
    us = ns / 1e3
    return float(us.mean()), float(np.percentile(us, 99))


# ---------------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _rss_now_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_kb() -> int:
    import resource

    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v // 1024) if sys.platform == "darwin" else int(v)  # bytes on macOS, KB on Linux


# ---------------------------------------------------------------------------------------------- data
def load_data(spec: dict):
    """(docs, queries) from a picklable spec: paths, dim, n_queries, n_docs (0 = all)."""
    from aftershock.index import read_vectors
    from aftershock.index.formats import guess_format

    if guess_format(spec["docs"]) == "jsonl":  # tokens define the ids; queries map through the docs' vocab
        docs = read_vectors(spec["docs"], what="documents")
        queries = read_vectors(spec["queries"], vocab=docs.vocab, unknown="drop", what="queries")
    else:
        docs = read_vectors(spec["docs"], dim=spec["dim"], what="documents")
        queries = read_vectors(spec["queries"], dim=docs.dim, what="queries")
    if spec["n_queries"] < len(queries):
        queries = queries[: spec["n_queries"]]
    if spec.get("n_docs") and spec["n_docs"] < len(docs):
        docs = docs[: spec["n_docs"]]
    return docs, queries


@contextmanager
def _fd1_to(fd: int):
    """Point the C-level stdout (fd 1) at ``fd`` (Rust's println! writes there, not to sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(fd, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _log(name: str, msg: str) -> None:
    print(f"[{name}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _no_gc():
    """Timed loops run without Python's cyclic GC (its pauses would land on whichever query triggers it)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _cpu_s() -> float:
    return time.process_time()  # CPU seconds of all the process's threads (os.times ticks are too coarse)


def _time_each(call, items) -> tuple[np.ndarray, list, float]:
    """(ns of each call, one per item; the results; the loop's CPU/wall ratio = cores kept busy)."""
    pc = time.perf_counter_ns
    ns = np.empty(len(items), np.int64)
    out = []
    with _no_gc():
        c0, w0 = _cpu_s(), time.perf_counter()
        for i, it in enumerate(items):
            t0 = pc()
            r = call(it)
            ns[i] = pc() - t0
            out.append(r)
        wall, cpu = time.perf_counter() - w0, _cpu_s() - c0
    return ns, out, (cpu / wall if wall > 0 else float("nan"))


def _empty_query(dim: int):
    from aftershock.index import SparseBatch

    return SparseBatch(np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                       np.array(["empty"], dtype=object), dim)


def _call_overhead_us(call, n: int = 200) -> float:
    call()
    ns, _, _ = _time_each(lambda _: call(), range(n))
    return float(ns.mean() / 1e3)


def _time_once(call) -> tuple[float, object, float]:
    """(wall seconds of one call, its result, its CPU/wall ratio = cores kept busy on average)."""
    with _no_gc():
        c0 = _cpu_s()
        t0 = time.perf_counter()
        r = call()
        wall = time.perf_counter() - t0
        c1 = _cpu_s()
    return wall, r, ((c1 - c0) / wall if wall > 0 else float("nan"))


# ---------------------------------------------------------------------------------------------- children
def _child_exact(job, docs, queries) -> dict:
    from aftershock.seismic.index import ExactIndex

    k, T, nq = job["k"], job["threads"], len(queries)
    name = "exact"
    t0 = time.perf_counter()
    index = ExactIndex.build(docs)
    build_s = time.perf_counter() - t0
    index.search(queries[:1], k, threads=1)  # JIT warm-up (or cache load)
    index.search(queries[: min(nq, 64)], k, threads=T)
    batch_s, gt, cores = _time_once(lambda: index.search(queries, k, threads=T))
    _log(name, f"ground truth for {nq} queries: {batch_s:.2f} s on {T} thread(s)")
    n_single = nq if job["timed"] else min(nq, N_SCIPY)
    singles = [queries[i:i + 1] for i in range(n_single)]
    ns, res, single_cores = _time_each(lambda q: index.search(q, k, threads=1), singles)
    mean_us, p99_us = _stats_us(ns)
    single_ids = np.vstack([r.ids for r in res]) if res else np.zeros((0, k), np.int64)
    _log(name, f"1 thread, one query per call: {mean_us:.1f} µs mean over {n_single} queries")
    empty = _empty_query(docs.dim)
    overhead = _call_overhead_us(lambda: index.search(empty, k, threads=1))
    batch1_s = cores1 = None
    if job["timed"] and T > 1:
        batch1_s, _, cores1 = _time_once(lambda: index.search(queries, k, threads=1))

    # scipy reference: one query at a time, D^T precomputed as CSR (term -> docs), top-k by argpartition
    n_sp = min(nq, N_SCIPY)
    dt = docs.to_scipy().T.tocsr()
    qcsr = queries[:n_sp].to_scipy().tocsr()
    qrows = [qcsr[i] for i in range(n_sp)]

    def scipy_topk(q):
        s = q @ dt
        data, idx = s.data, s.indices
        if data.size > k:
            p = np.argpartition(-data, k - 1)[:k]
            data, idx = data[p], idx[p]
        return idx[np.argsort(-data, kind="stable")]

    scipy_topk(qrows[0]) if qrows else None
    sp_ns, sp_res, _ = _time_each(scipy_topk, qrows)
    sp_ids = np.full((n_sp, k), -1, np.int64)
    for i, r in enumerate(sp_res):
        sp_ids[i, : r.size] = r
    sp_mean, sp_p99 = _stats_us(sp_ns)
    _log(name, f"scipy: {sp_mean:.1f} µs/query over {n_sp} queries")
    return {
        "gt_ids": gt.ids, "build_s": build_s, "call_overhead_us": overhead, "index_bytes": index.nbytes(),
        "index_bytes_source": "nbytes()",
        "points": [{"query_cut": None, "heap_factor": None, "mean_us": mean_us, "p99_us": p99_us,
                    "n_timed": n_single, "batch_qps": nq / batch_s if batch_s > 0 else float("nan"),
                    "batch_qps_1t": (nq / batch1_s) if batch1_s else None, "batch_cores": cores,
                    "batch_cores_1t": cores1, "single_cores": single_cores, "ids": gt.ids,
                    "single_matches_batch": float(np.mean(single_ids == gt.ids[:n_single])) if n_single else 1.0}],
        "ref": {"aftershock_exact_us": mean_us, "aftershock_exact_p99_us": p99_us, "aftershock_exact_n": n_single,
                "scipy_exact_us": sp_mean, "scipy_exact_p99_us": sp_p99, "scipy_exact_n": n_sp,
                "scipy_recall": recall_vs_exact(gt.ids[:n_sp], sp_ids)},
    }


def _child_aftershock(job, docs, queries) -> dict:
    from aftershock.seismic.config import SeismicConfig
    from aftershock.seismic.index import SeismicIndex

    k, T, nq, name, n_knn = job["k"], job["threads"], len(queries), job["name"], job["n_knn"]
    cfg = SeismicConfig(**job["config"])
    # compile (or load from Numba's cache) the build kernels on a few docs, so "build s" is build time only
    SeismicIndex.build(docs[: min(len(docs), 256)], cfg, threads=T)
    gc.collect()
    t0 = time.perf_counter()
    index = SeismicIndex.build(docs, cfg, threads=T)
    build_s = time.perf_counter() - t0
    _log(name, f"built in {build_s:.2f} s: {index.n_blocks} blocks, {index.nbytes() / 1e6:.1f} MB")
    singles = [queries[i:i + 1] for i in range(nq)]
    qc0, hf0 = job["sweep"][0]
    for q in singles[:20]:  # warm-up: JIT (or cache load), page faults
        index.search(q, k, query_cut=qc0, heap_factor=hf0, n_knn=n_knn, threads=1)
    index.search(queries[: min(nq, 64)], k, query_cut=qc0, heap_factor=hf0, n_knn=n_knn, threads=T)
    empty = _empty_query(docs.dim)
    overhead = _call_overhead_us(lambda: index.search(empty, k, query_cut=qc0, heap_factor=hf0, n_knn=n_knn,
                                                      threads=1))
    points = []
    for qc, hf in job["sweep"]:
        knobs = dict(query_cut=qc, heap_factor=hf, n_knn=n_knn)
        ns, res, single_cores = _time_each(lambda q: index.search(q, k, threads=1, **knobs), singles)
        ids = np.vstack([r.ids for r in res]) if res else np.zeros((0, k), np.int64)
        batch_s, bres, cores = _time_once(lambda: index.search(queries, k, threads=T, **knobs))
        stats = {n: float(v.mean()) for n, v in index.last_stats.items()}  # per-query means over the batch
        batch1_s = cores1 = None
        if T > 1:
            batch1_s, _, cores1 = _time_once(lambda: index.search(queries, k, threads=1, **knobs))
        mean_us, p99_us = _stats_us(ns)
        points.append({"query_cut": qc, "heap_factor": hf, "mean_us": mean_us, "p99_us": p99_us, "n_timed": nq,
                       "batch_qps": nq / batch_s, "batch_qps_1t": (nq / batch1_s) if batch1_s else None,
                       "batch_cores": cores, "batch_cores_1t": cores1, "single_cores": single_cores,
                       "ids": ids, "single_matches_batch": float(np.mean(bres.ids == ids)) if nq else 1.0,
                       "search_stats": stats})
        _log(name, f"query_cut={qc} heap_factor={hf}: {mean_us:.1f} µs mean, {nq / batch_s:.0f} QPS on {T} thr")
    return {"build_s": build_s, "index_bytes": index.nbytes(), "index_bytes_source": "nbytes()",
            "n_blocks": index.n_blocks, "points": points, "call_overhead_us": overhead, "config": cfg.to_dict()}


def _seismic_bytes(index, tmpdir: str) -> tuple[int | None, str]:
    """Bytes from print_space_usage_byte()'s "Total: N Bytes" line (C-level stdout captured), else the size
    of a save()d file."""
    cap = os.path.join(tmpdir, "space_usage.txt")
    text = ""
    try:
        with open(cap, "w+b") as f:
            with _fd1_to(f.fileno()):
                index.print_space_usage_byte()
            f.seek(0)
            text = f.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - fall back to the saved file
        pass
    m = re.search(r"Total:\s*([0-9]+)\s*Bytes", text)
    if m:
        return int(m.group(1)), "print_space_usage_byte() Total"
    prefix = os.path.join(tmpdir, "saved")
    try:
        with _fd1_to(2):
            index.save(prefix)
        files = [os.path.join(tmpdir, f) for f in os.listdir(tmpdir) if f.startswith("saved")]
        return sum(os.path.getsize(f) for f in files), "save()d file size"
    except Exception as e:  # noqa: BLE001
        return None, f"unknown ({type(e).__name__}: {e})"


def _child_seismic(job, docs, queries) -> dict:
    os.environ["RAYON_NUM_THREADS"] = str(job["threads"])  # the build's global Rayon pool: same threads as ours
    import seismic

    from aftershock.index import SparseBatch, write_bin

    k, T, nq, name, n_knn = job["k"], job["threads"], len(queries), job["name"], job["n_knn"]
    tmpdir = job["tmpdir"]
    with _fd1_to(2):  # its build progress goes to stderr, not into our tables
        t0 = time.perf_counter()
        index = seismic.SeismicIndexRaw.build(job["docs_bin"], **job["build_kw"])
        build_s = time.perf_counter() - t0
    nbytes, source = _seismic_bytes(index, tmpdir)
    _log(name, f"built in {build_s:.2f} s, {nbytes / 1e6 if nbytes else float('nan'):.1f} MB ({source})")
    # pyseismic's dim is the largest document term id + 1 and it panics on larger query ids; such terms
    # match no document, so dropping them changes no score
    sdim = int(index.dim)
    keep = queries.indices < sdim
    dropped = int((~keep).sum())
    counts = np.add.reduceat(keep.astype(np.int64), queries.indptr[:-1]) if nq else np.zeros(0, np.int64)
    counts[np.diff(queries.indptr) == 0] = 0
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    q = SparseBatch(indptr, queries.indices[keep], queries.values[keep], queries.ids, queries.dim)
    q_bin = os.path.join(tmpdir, "queries.bin")
    write_bin(q, q_bin)
    qs = [(np.ascontiguousarray(q.indices[q.indptr[i]:q.indptr[i + 1]], dtype=np.int32),
           np.ascontiguousarray(q.values[q.indptr[i]:q.indptr[i + 1]], dtype=np.float32)) for i in range(nq)]

    def to_ids(results) -> np.ndarray:
        ids = np.full((len(results), k), -1, np.int64)
        for i, r in enumerate(results):
            row = [int(d) for _, d in r][:k]
            ids[i, : len(row)] = row
        return ids

    qc0, hf0 = job["sweep"][0]
    for c, v in qs[:20]:  # warm-up: page faults, caches
        index.search(c, v, k, qc0, hf0, n_knn, True)
    index.batch_search(q_bin, k, qc0, hf0, n_knn, True, num_threads=T)
    ec, ev = np.zeros(0, np.int32), np.zeros(0, np.float32)
    overhead = _call_overhead_us(lambda: index.search(ec, ev, k, qc0, hf0, n_knn, True))
    points = []
    for qc, hf in job["sweep"]:
        ns, res, single_cores = _time_each(lambda cv: index.search(cv[0], cv[1], k, qc, hf, n_knn, True), qs)
        ids = to_ids(res)
        batch_s, bres, cores = _time_once(lambda: index.batch_search(q_bin, k, qc, hf, n_knn, True, num_threads=T))
        batch1_s = cores1 = None
        if T > 1:  # pyseismic-lsr 0.5.4 seems to ignore num_threads (global Rayon pool): see batch_cores_1t
            batch1_s, _, cores1 = _time_once(lambda: index.batch_search(q_bin, k, qc, hf, n_knn, True,
                                                                        num_threads=1))
        bids = to_ids(bres) if len(bres) == nq else None
        mean_us, p99_us = _stats_us(ns)
        points.append({"query_cut": qc, "heap_factor": hf, "mean_us": mean_us, "p99_us": p99_us, "n_timed": nq,
                       "batch_qps": nq / batch_s, "batch_qps_1t": (nq / batch1_s) if batch1_s else None,
                       "batch_cores": cores, "batch_cores_1t": cores1, "single_cores": single_cores,
                       "ids": ids, "batch_ids": bids,
                       "single_matches_batch": float(np.mean(bids == ids)) if bids is not None and nq else None})
        _log(name, f"query_cut={qc} heap_factor={hf}: {mean_us:.1f} µs mean, {nq / batch_s:.0f} QPS on {T} thr")
    return {"build_s": build_s, "index_bytes": nbytes, "index_bytes_source": source, "points": points,
            "call_overhead_us": overhead,
            "config": dict(job["build_kw"]), "dim": sdim, "query_terms_dropped": dropped,
            "version": _seismic_version()}


def _seismic_available() -> bool:
    """Whether pyseismic-lsr can be found (not imported here: its Rayon threads must not exist before a fork).

    A bare namespace package named `seismic` (e.g. a tests/seismic folder on sys.path) has no origin
    and does not count."""
    import importlib.util

    spec = importlib.util.find_spec("seismic")
    return spec is not None and spec.origin is not None


def _seismic_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pyseismic-lsr")
    except Exception:  # noqa: BLE001
        return None


_CHILDREN = {"exact": _child_exact, "aftershock": _child_aftershock, "seismic": _child_seismic}


def _child_entry(conn, job, data) -> None:
    """Runs in the child: (re)load the data if it was not inherited, run the system, send the result."""
    try:
        rss_start = _rss_now_kb()
        if data is None:
            data = load_data(job["load"])
            rss_start = _rss_now_kb()
        docs, queries = data
        out = _CHILDREN[job["kind"]](job, docs, queries)
        out["rss_start_kb"] = rss_start
        out["peak_rss_kb"] = _peak_rss_kb()
        conn.send(out)
    except BaseException as e:  # noqa: BLE001 - report anything (a Rust panic is a BaseException)
        try:
            conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def _numba_threads_running() -> bool:
    try:
        from numba.np.ufunc import parallel

        return bool(getattr(parallel, "_is_initialized", False))
    except Exception:  # noqa: BLE001
        return False


def _run_child(ctx, job, data) -> dict:
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(child_conn, job, data if ctx.get_start_method() == "fork" else None),
                       name=f"bench-{job['name']}")
    main_mod = sys.modules.get("__main__")
    main_file = getattr(main_mod, "__file__", None)
    hide = ctx.get_start_method() != "fork" and main_file is not None and not os.path.isfile(main_file)
    if hide:  # e.g. `python - < script`: spawn would try to re-run "<stdin>" in the child
        del main_mod.__file__
    try:
        proc.start()
    finally:
        if hide:
            main_mod.__file__ = main_file
    child_conn.close()
    try:
        out = parent_conn.recv()
    except EOFError:
        out = None
    finally:
        parent_conn.close()
    proc.join()
    if out is None:
        out = {"error": f"the child process died without a result (exit code {proc.exitcode})"}
    return out


# ---------------------------------------------------------------------------------------------- reporting
def _f(x, fmt: str, na: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return na
    return format(x, fmt)


# pyseismic's "1-thread" batch that kept more cores busy did not run on one thread (num_threads ignored).
# Not applied to Numba: set_num_threads(1) is reliable there, and OpenMP workers left spinning by the
# previous T-thread call add CPU time to a short 1-thread call.
ONE_THREAD_MAX_CORES = 1.3


def _speedup(points, check_cores: bool = False) -> tuple[float | None, float | None, float | None]:
    """Median (min, max) over sweep points of batch QPS on T threads / on 1 thread; with ``check_cores``
    points whose 1-thread batch was not single-threaded (CPU/wall > ONE_THREAD_MAX_CORES) are left out."""
    r = [p["batch_qps"] / p["batch_qps_1t"] for p in points
         if p.get("batch_qps_1t") and (not check_cores or (p.get("batch_cores_1t") or 0) <= ONE_THREAD_MAX_CORES)]
    if not r:
        return None, None, None
    return float(np.median(r)), float(min(r)), float(max(r))


def _not_single_threaded(points) -> float | None:
    c = [p["batch_cores_1t"] for p in points if p.get("batch_qps_1t") and p.get("batch_cores_1t") is not None]
    return float(np.median(c)) if c and all(x > ONE_THREAD_MAX_CORES for x in c) else None


def _tables(report: dict) -> str:
    k, T = report["k"], report["threads"]
    lines = [f"| system | query_cut | heap_factor | recall@{k} | mean µs (1 thr) | p99 µs (1 thr) | "
             f"batch QPS ({T} thr) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["systems"].items():
        if "error" in s:
            continue
        for p in s["points"]:
            qc = "-" if p["query_cut"] is None else p["query_cut"]
            hf = "-" if p["heap_factor"] is None else f"{p['heap_factor']:g}"
            lines.append(f"| {name} | {qc} | {hf} | {p['recall']:.4f} | {_f(p['mean_us'], '.1f')} | "
                         f"{_f(p['p99_us'], '.1f')} | {_f(p['batch_qps'], ',.0f')} |")
    lines += ["", f"| system | build s | index MB | peak RSS MB (process, incl. loaded vectors) | start RSS MB | "
                  f"batch speed-up ({T} vs 1 thr) | notes |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, s in report["systems"].items():
        if "error" in s:
            lines.append(f"| {name} | failed | | | | | {s['error'].splitlines()[0][:200]} |")
            continue
        check = name == "seismic"
        med, lo, hi = _speedup(s["points"], check_cores=check)
        busy = _not_single_threaded(s["points"]) if check else None
        if med is not None:
            sp = f"{med:.2f}x" if lo == hi else f"{med:.2f}x ({lo:.2f}-{hi:.2f})"
        elif busy is not None:
            sp = f"n/a: its 1-thread batch kept {busy:.1f} cores busy"
        else:
            sp = "n/a (1 thread)"
        notes = [f"bytes: {s['index_bytes_source']}"]
        if s.get("clustering"):
            notes.append(f"clustering={s['clustering']}")
        if s.get("query_terms_dropped"):
            notes.append(f"{s['query_terms_dropped']} query terms beyond its dim dropped")
        if s.get("batch_order_note"):
            notes.append(s["batch_order_note"])
        cores = [p["batch_cores"] for p in s["points"] if p.get("batch_cores") is not None]
        if cores and T > 1:
            notes.append(f"batch kept {np.median(cores):.1f} of {T} cores busy (CPU/wall)")
        sc = [p["single_cores"] for p in s["points"] if p.get("single_cores") is not None]
        if sc and np.median(sc) > ONE_THREAD_MAX_CORES:
            notes.append(f"WARNING: its one-query-per-call loop kept {np.median(sc):.1f} cores busy")
        if s.get("call_overhead_us") is not None:
            notes.append(f"empty-query call {s['call_overhead_us']:.1f} µs")
        rss, rss0 = s.get("peak_rss_kb"), s.get("rss_start_kb")
        lines.append(f"| {name} | {_f(s['build_s'], '.2f')} | "
                     f"{_f(s['index_bytes'] / 1e6 if s.get('index_bytes') else None, '.1f')} | "
                     f"{_f(rss * 1024 / 1e6 if rss else None, '.0f')} | "
                     f"{_f(rss0 * 1024 / 1e6 if rss0 else None, '.0f')} | "
                     f"{sp} | {'; '.join(notes)} |")
    lines += ["", "| system | " + " | ".join(f"mean µs @ recall {t:.2f}" for t in TARGETS) + " |",
              "|---|" + "---:|" * len(TARGETS)]
    for name, pr in report["pareto"].items():
        cells = []
        for t in TARGETS:
            v = pr[f"{t:.2f}"]
            cells.append("n/a" if v["us"] is None else ("≤" if v["upper_bound"] else "") + f"{v['us']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["ratios"]:
        lines.append("")
        for name, r in report["ratios"].items():
            parts = [f"recall {t}: {'n/a' if v is None else f'{v:.2f}x'}" for t, v in r.items()]
            lines.append(f"- µs ratio {name} / seismic (< 1: {name} faster): " + ", ".join(parts))
    return "\n".join(lines)


def _header(report: dict) -> str:
    d = report["data"]
    ref = report.get("exact_ref") or {}
    lines = [f"- data: {d['n_docs']:,} docs ({d['nnz_per_doc']:.1f} nnz/doc), {d['n_queries']:,} queries "
             f"({d['nnz_per_query']:.1f} nnz/query), dim {d['dim']}; k={report['k']}; threads={report['threads']}",
             "- build: " + ", ".join(f"{a}={b}" for a, b in report["build_params"].items()),
             f"- each system runs in its own child process ({report['start_method']}); its RSS at start "
             "(the loaded vectors, inherited) and its peak RSS are in the second table"]
    if ref:
        lines.append(f"- exact, Aftershock (1 thread, one query per call): {ref['aftershock_exact_us']:.1f} µs/query "
                     f"(p99 {ref['aftershock_exact_p99_us']:.1f}) over {ref['aftershock_exact_n']} queries")
        lines.append("- exact, scipy (1 query @ D^T as CSR + argpartition top-k): "
                     f"{ref['scipy_exact_us']:.1f} µs/query "
                     f"over the first {ref['scipy_exact_n']} queries (recall {ref['scipy_recall']:.4f})")
    for n in report["notes"]:
        lines.append(f"- note: {n}")
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return f"no plot: matplotlib unavailable ({e})"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = iter("os^Dvx<>P*")
    for name, s in report["systems"].items():
        if "error" in s or name == "exact":
            continue
        pts = [(p["mean_us"], p["recall"]) for p in s["points"]]
        m = next(markers, "o")
        xs, ys = zip(*pts)
        line, = ax.plot(*zip(*pareto_frontier(pts)), "-", label=f"{name} (frontier)", lw=1.5)
        ax.plot(xs, ys, m, color=line.get_color(), ms=5, alpha=0.8)
        for p in s["points"]:
            ax.annotate(f"{p['query_cut']}:{p['heap_factor']:g}", (p["mean_us"], p["recall"]), fontsize=6,
                        color=line.get_color(), xytext=(3, -8), textcoords="offset points")
    ref = report.get("exact_ref") or {}
    if ref:
        ax.axvline(ref["aftershock_exact_us"], color="k", ls="-", lw=1, label=f"exact (Aftershock) "
                   f"{ref['aftershock_exact_us']:.0f} µs")
        ax.axvline(ref["scipy_exact_us"], color="grey", ls="--", lw=1,
                   label=f"exact (scipy) {ref['scipy_exact_us']:.0f} µs")
    for t in TARGETS:
        ax.axhline(t, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if str(f"{x:g}")[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("mean µs per query (1 thread, one query per call; log scale)")
    ax.set_ylabel(f"recall@{report['k']} vs exact")
    ax.set_title(f"{report['dataset']}: {report['data']['n_docs']:,} docs, {report['data']['n_queries']:,} queries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _append_results(path: Path, report: dict, body: str, png: Path | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    m = report["machine"]
    sec = [f"## ANN: {report['dataset']} ({report['date']})", "",
           f"- machine: nproc {m['nproc']} (os.cpu_count {m['cpu_count']}), CPU {m['cpu_model']}, "
           f"Python {m['python']}, pyseismic-lsr {m.get('pyseismic_lsr') or 'n/a'}",
           f"- command: `{report['command']}`"]
    if report["invoked"] != report["command"]:
        sec.append(f"- invoked as: `{report['invoked']}`")
    sec += [_header(report), "", body, ""]
    if png is not None:
        try:
            rel = os.path.relpath(png.resolve(), path.resolve().parent)
        except ValueError:
            rel = str(png.resolve())
        sec += [f"plot: `{png}`", "", f"![recall vs latency, {report['dataset']}]({rel})", ""]
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("# Benchmark results\n\n")
        elif not path.read_text(encoding="utf-8").endswith("\n\n"):
            f.write("\n")
        f.write("\n".join(sec) + "\n")


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    import multiprocessing as mp

    import numba

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sweep = parse_sweep(args.sweep)
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
        SeismicConfig(n_postings=args.n_postings, max_fraction=args.max_fraction,
                      centroid_fraction=args.centroid_fraction, min_cluster_size=args.min_cluster_size,
                      summary_energy=args.summary_energy, doc_cut=args.doc_cut, knn=args.knn)
    except ConfigError as e:
        parser.error(str(e))
    limit = numba.config.NUMBA_NUM_THREADS
    if args.threads is None:
        args.threads = min(_cpu_count(), limit)
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

    build_params = {"n_postings": args.n_postings, "max_fraction": args.max_fraction,
                    "centroid_fraction": args.centroid_fraction, "min_cluster_size": args.min_cluster_size,
                    "summary_energy": args.summary_energy, "doc_cut": args.doc_cut, "knn": args.knn}
    base = {"k": args.k, "threads": T, "sweep": sweep, "n_knn": args.n_knn, "load": load_spec}
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

    results: dict[str, dict] = {}
    baseline = None
    with tempfile.TemporaryDirectory(prefix="aftershock-bench-") as tmp:
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
    gt = gt_res.pop("gt_ids")
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
            p["recall"] = recall_vs_exact(gt, p.pop("ids"))
            bids = p.pop("batch_ids", None)
            if bids is not None:
                p["batch_recall"] = recall_vs_exact(gt, bids)
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
    ratios: dict[str, dict] = {}
    if "seismic" in pareto:
        for name in pareto:
            if name.startswith("aftershock"):
                ratios[name] = {}
                for t in TARGETS:
                    a, b = pareto[name][f"{t:.2f}"]["us"], pareto["seismic"][f"{t:.2f}"]["us"]
                    ratios[name][f"{t:.2f}"] = (a / b) if a is not None and b else None

    nproc = _cpu_count()
    report = {
        "dataset": dataset, "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": command, "invoked": invoked, "args": vars(args), "k": args.k, "threads": T,
        "sweep": sweep, "build_params": build_params, "start_method": method,
        "machine": {"nproc": nproc, "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
                    "python": platform.python_version(), "numba": numba.__version__,
                    "pyseismic_lsr": _seismic_version() if "seismic" in results else None},
        "data": {"docs": str(args.docs), "queries": str(args.queries), "n_docs": len(docs), "dim": docs.dim,
                 "nnz_per_doc": docs.nnz / len(docs), "n_queries": len(queries),
                 "nnz_per_query": queries.nnz / len(queries),
                 "queries_without_exact_hits": int(np.sum((gt >= 0).sum(axis=1) == 0))},
        "parent_rss_kb_at_fork": baseline, "exact_ref": exact_ref, "systems": results, "pareto": pareto,
        "ratios": ratios, "notes": notes,
        "definitions": {
            "recall": f"mean over queries of |exact top-{args.k} ∩ returned| / |exact top-{args.k}| "
                      "(-1 padding ignored; queries with no exact hit left out)",
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
    if not args.no_append:
        _append_results(Path(args.results), report, body, png)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
