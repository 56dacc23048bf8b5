"""Constants, machine facts, timing helpers and data loading of the ANN benchmark."""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from contextlib import contextmanager

import numpy as np

PROG = "aftershock bench ann"
SYSTEMS = ("aftershock", "seismic", "bmp", "exact")
CLUSTERINGS = ("random", "kmeans")
# query_cut:heap_factor, cheapest first: lower heap_factor skips fewer blocks, larger query_cut visits
# more lists; on SPLADE vectors this spans recall@10 of about 0.8 to 0.99.
DEFAULT_SWEEP = "3:0.9,5:0.9,5:0.8,8:0.8,10:0.8,10:0.7,15:0.7,20:0.6,30:0.5,40:0.4"
TARGETS = (0.90, 0.95)
N_SCIPY = 200  # queries timed with scipy for the reference line
SEISMIC_MISSING = "pyseismic-lsr is not installed (pip install 'aftershock[bench]')"
# BMP: alpha:beta points (alpha < 1 terminates earlier, beta < 1 prunes query terms; 1:1 is exact on the
# quantized impacts), and block sizes (one index each)
DEFAULT_BMP_SWEEP = "1:1,0.95:1,0.9:1,0.8:1,0.7:1,0.6:1,0.5:1,0.9:0.9,0.8:0.8,0.7:0.7"
DEFAULT_BMP_BSIZE = "16,32,64"
BMP_MISSING = "bmp is not installed (pip install 'aftershock[bench]')"
BMP_LEVELS = 255  # 8-bit impacts: round(w * 255 / max document weight), zeros dropped


def cpu_count() -> int:
    from aftershock.seismic.config import cpu_count as count

    return count()


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


def _rss_now_kb(field: str = "VmRSS") -> int | None:
    """A kB field of /proc/self/status: VmRSS (now) by default, VmHWM for this process image's peak."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
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

