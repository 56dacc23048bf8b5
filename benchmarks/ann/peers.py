"""Peer systems of the ANN benchmark, each in a child process: pyseismic-lsr (Seismic's Rust
implementation) and BMP (block-max pruning, Mallia, Suel and Tonellotto, SIGIR 2024). A peer that is not
installed is skipped with a note."""

from __future__ import annotations

import os
import re
import time

import numpy as np

from .common import BMP_LEVELS, _call_overhead_us, _fd1_to, _log, _stats_us, _time_each, _time_once

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


def seismic_queries(queries, sdim: int, tmpdir: str) -> tuple[list, str, int]:
    """The queries as pyseismic-lsr takes them: (components int32, values float32) per query, the same as a
    .bin file in ``tmpdir`` (for batch_search), and how many terms were dropped.

    pyseismic's dim is the largest document term id + 1 and it panics on larger query ids; such terms match
    no document, so dropping them changes no score."""
    from aftershock.index import SparseBatch, write_bin

    nq = len(queries)
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
    return qs, q_bin, dropped


def _child_seismic(job, docs, queries) -> dict:
    os.environ["RAYON_NUM_THREADS"] = str(job["threads"])  # the build's global Rayon pool: same threads as ours
    import seismic

    k, T, nq, name, n_knn = job["k"], job["threads"], len(queries), job["name"], job["n_knn"]
    tmpdir = job["tmpdir"]
    with _fd1_to(2):  # its build progress goes to stderr, not into our tables
        t0 = time.perf_counter()
        index = seismic.SeismicIndexRaw.build(job["docs_bin"], **job["build_kw"])
        build_s = time.perf_counter() - t0
    nbytes, source = _seismic_bytes(index, tmpdir)
    _log(name, f"built in {build_s:.2f} s, {nbytes / 1e6 if nbytes else float('nan'):.1f} MB ({source})")
    sdim = int(index.dim)
    qs, q_bin, dropped = seismic_queries(queries, sdim, tmpdir)

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
        points.append({"knobs": f"{qc}:{hf:g}", "query_cut": qc, "heap_factor": hf, "mean_us": mean_us,
                       "p99_us": p99_us, "n_timed": nq, "batch_qps": nq / batch_s, "batch_qps_1t": (nq / batch1_s) if batch1_s else None,
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


# ---------------------------------------------------------------------------------------------- BMP
def bmp_available() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("bmp")
    return spec is not None and spec.origin is not None


def _bmp_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("bmp")
    except Exception:  # noqa: BLE001
        return None


def quantize_impacts(values: np.ndarray, max_weight: float, levels: int = BMP_LEVELS) -> np.ndarray:
    """Integer impacts for BMP: ``round(w * levels / max_weight)`` (8-bit for levels 255); 0 = dropped.

    BMP 0.2.8 stores impacts as u8 (an impact of 256 wraps to 0, checked), so 8 bits is the most it holds;
    the global maximum maps to 255 (linear, as PISA/BMP quantize learned-sparse impacts)."""
    scale = levels / max_weight if max_weight > 0 else 0.0
    return np.clip(np.rint(np.asarray(values, np.float64) * scale), 0, levels).astype(np.int64)


def _child_bmp(job, docs, queries) -> dict:
    """BMP (PyPI ``bmp``) at one block size: an index of 8-bit impacts of the same documents, searched with
    float query weights (BMP quantizes queries itself) at each alpha:beta point. Recall is measured by the
    driver against exact float search, like the others."""
    import bmp

    k, nq, name, bsize = job["k"], len(queries), job["name"], job["bsize"]
    max_w = float(docs.values.max()) if docs.nnz else 1.0
    imp = quantize_impacts(docs.values, max_w)
    path = os.path.join(job["tmpdir"], f"bmp-b{bsize}.idx")
    t0 = time.perf_counter()
    indexer = bmp.Indexer(path, bsize=bsize, compress_range=False)
    ptr, ind = docs.indptr, docs.indices
    for i in range(len(docs)):
        a, b = ptr[i], ptr[i + 1]
        keep = imp[a:b] > 0
        indexer.add_document(str(i), dict(zip(ind[a:b][keep].astype(str).tolist(), imp[a:b][keep].tolist())))
    indexer.finish()
    searcher = bmp.Searcher(path)
    build_s = time.perf_counter() - t0
    nbytes = os.path.getsize(path)
    _log(name, f"built in {build_s:.2f} s (Python add_document loop included), {nbytes / 1e6:.1f} MB")
    # BMP panics on a query term no document has: such terms change no score, so they are dropped
    present = np.zeros(max(docs.dim, queries.dim), bool)
    present[ind[imp > 0]] = True
    qs, dropped = [], 0
    for i in range(nq):
        t, v = queries.row(i)
        keep = present[t] & (v > 0)
        dropped += int((~keep).sum())
        qs.append(dict(zip(t[keep].astype(str).tolist(), v[keep].astype(float).tolist())))

    def one(q, alpha, beta):
        if not q:
            return [], []
        return searcher.search(q, k=k, alpha=alpha, beta=beta)

    def to_ids(results) -> np.ndarray:
        ids = np.full((len(results), k), -1, np.int64)
        for i, (names, _) in enumerate(results):
            row = [int(d) for d in names][:k]
            ids[i, : len(row)] = row
        return ids

    a0, b0 = job["bmp_sweep"][0]
    for q in qs[:20]:  # warm-up: page faults, caches
        one(q, a0, b0)
    points = []
    for alpha, beta in job["bmp_sweep"]:
        ns, res, single_cores = _time_each(lambda q: one(q, alpha, beta), qs)
        mean_us, p99_us = _stats_us(ns)
        total = float(ns.sum()) / 1e9
        points.append({"knobs": f"{alpha:g}:{beta:g}", "alpha": alpha, "beta": beta, "bsize": bsize,
                       "mean_us": mean_us, "p99_us": p99_us, "n_timed": nq,
                       "batch_qps": nq / total if total > 0 else float("nan"), "batch_qps_1t": None,
                       "batch_cores": single_cores, "batch_cores_1t": None, "single_cores": single_cores,
                       "ids": to_ids(res), "single_matches_batch": None})
        _log(name, f"alpha={alpha:g} beta={beta:g}: {mean_us:.1f} µs mean")
    return {"build_s": build_s, "index_bytes": nbytes, "index_bytes_source": "index file size", "points": points,
            "call_overhead_us": None, "config": {"bsize": bsize, "compress_range": False,
                                                      "impacts": f"round(w x {BMP_LEVELS} / {max_w:.6g})"},
            "query_terms_dropped": dropped, "version": _bmp_version(),
            "batch_note": "BMP's Python API searches one query per call: batch QPS = the 1-thread loop"}
