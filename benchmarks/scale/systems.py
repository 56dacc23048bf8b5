"""The scale benchmark's child processes: ground truth (exact search), Aftershock's Seismic index and
pyseismic-lsr. Each child starts fresh (``spawn``), reads its input from the files the driver wrote (Aftershock
its own CSR ``.npz``, pyseismic-lsr the same documents as a Seismic ``.bin``), so its peak RSS (``ru_maxrss``
= ``VmHWM``) is what building and searching that index costs, input included, and nothing else."""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.ann.children import run_process, send_result
from benchmarks.ann.common import (
    _fd1_to,
    _log,
    _rss_now_kb,
    _stats_us,
    _time_each,
    _time_once,
)
from benchmarks.ann.peers import _seismic_bytes, _seismic_version, seismic_queries


def _peak_rss_kb() -> int | None:
    """This process's peak RSS (VmHWM). Not ru_maxrss: after a spawn (fork + exec) Linux keeps the parent's
    peak in it, so every child would report at least the driver's memory."""
    return _rss_now_kb("VmHWM")


def _queries(job):
    from aftershock.index import read_vectors

    return read_vectors(job["queries"], dim=job["dim"], what="queries")


def _points(name, job, nq, single, batch, ids_of) -> list[dict]:
    """Sweep: 1-thread latency over the first ``n_timed`` queries (one per call), batch QPS on all of them."""
    points = []
    for qc, hf in job["sweep"]:
        ns, res, _ = _time_each(lambda i: single(i, qc, hf), range(job["n_timed"]))
        batch_s, bres, cores = _time_once(lambda: batch(qc, hf))
        mean_us, p99_us = _stats_us(ns)
        points.append({"knobs": f"{qc}:{hf:g}", "query_cut": qc, "heap_factor": hf, "mean_us": mean_us,
                       "p99_us": p99_us, "n_timed": job["n_timed"], "batch_qps": nq / batch_s,
                       "batch_cores": cores, "ids": ids_of(res, job["n_timed"]), "batch_ids": ids_of(bres, nq)})
        _log(name, f"{qc}:{hf:g}: {mean_us:.0f} µs (1 thr), {nq / batch_s:,.0f} QPS ({job['threads']} thr)")
    return points


def child_truth(job) -> dict:
    """Exact top-2k of every query on all threads (documents tied with the k-th count, see recall_at_k)."""
    from aftershock.index import read_vectors
    from aftershock.seismic import ExactIndex, SearchParams

    docs = read_vectors(job["docs_npz"], dim=job["dim"], what="documents")
    queries = _queries(job)
    t0 = time.perf_counter()
    index = ExactIndex.build(docs)
    index.search(queries[:2], job["k"], SearchParams(threads=job["threads"]))  # JIT / cache load
    t1 = time.perf_counter()
    truth = index.search(queries, 2 * job["k"], SearchParams(threads=job["threads"]))
    search_s = time.perf_counter() - t1
    _log("exact", f"ground truth of {len(queries)} queries in {search_s:.1f} s on {job['threads']} threads")
    return {"scores": truth.scores, "ids": truth.ids, "build_s": t1 - t0, "search_s": search_s,
            "qps": len(queries) / search_s}


def child_warmup(job) -> dict:
    """Compile Aftershock's build, search and exact kernels into Numba's cache once, before anything is
    measured, so no measured child pays (in time or peak memory) for the compiler."""
    from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex

    t0 = time.perf_counter()
    queries = _queries(job)
    small = queries[: min(len(queries), 256)]
    for T in sorted({1, job["threads"]}):
        index = SeismicIndex.build(small, SeismicConfig(**job["config"]), threads=T)
        index.search(small[:64], job["k"], SearchParams(threads=T))
        index.search(small[:1], job["k"], SearchParams(threads=T))
        ExactIndex.build(small).search(small[:64], 2 * job["k"], SearchParams(threads=T))
    _log("warm-up", f"kernels compiled (or loaded from Numba's cache) in {time.perf_counter() - t0:.1f} s")
    return {"seconds": time.perf_counter() - t0}


def child_aftershock(job) -> dict:
    from aftershock.index import read_vectors
    from aftershock.seismic import SearchParams, SeismicConfig, SeismicIndex

    k, T, name = job["k"], job["threads"], "aftershock"
    cfg = SeismicConfig(**job["config"])
    queries = _queries(job)
    # compile (or load from Numba's cache) the build and search kernels on a few queries' worth of docs first
    warm = SeismicIndex.build(queries[: min(len(queries), 256)], cfg, threads=T)
    warm.search(queries[:4], k, SearchParams(threads=1))
    warm.search(queries[:64], k, SearchParams(threads=T))
    del warm
    rss_before = _rss_now_kb()
    t0 = time.perf_counter()
    docs = read_vectors(job["docs_npz"], dim=job["dim"], what="documents")
    read_s = time.perf_counter() - t0
    index = SeismicIndex.build(docs, cfg, threads=T)
    build_s = time.perf_counter() - t0
    del docs
    peak_build = _peak_rss_kb()
    _log(name, f"read + built in {build_s:.1f} s ({read_s:.1f} s reading): {index.n_blocks:,} blocks, "
               f"{index.nbytes() / 1e6:,.0f} MB, peak RSS {peak_build / 1024:,.0f} MiB")
    singles = [queries[i:i + 1] for i in range(len(queries))]
    p1 = SearchParams(threads=1)
    for q in singles[:20]:  # warm-up: page faults
        index.search(q, k, p1)
    params = {(qc, hf): (SearchParams(query_cut=qc, heap_factor=hf, threads=1),
                         SearchParams(query_cut=qc, heap_factor=hf, threads=T)) for qc, hf in job["sweep"]}

    def ids_of(res, n):
        if isinstance(res, list):
            return np.vstack([r.ids for r in res]) if res else np.zeros((0, k), np.int64)
        return res.ids

    points = _points(name, job, len(queries),
                     lambda i, qc, hf: index.search(singles[i], k, params[qc, hf][0]),
                     lambda qc, hf: index.search(queries, k, params[qc, hf][1]),
                     ids_of)
    return {"build_s": build_s, "read_s": read_s, "index_bytes": index.nbytes(), "index_bytes_source": "nbytes()",
            "n_blocks": index.n_blocks, "rss_before_build_kb": rss_before, "peak_rss_build_kb": peak_build,
            "points": points, "config": cfg.to_dict(), "version": _aftershock_version()}


def child_seismic(job) -> dict:
    os.environ["RAYON_NUM_THREADS"] = str(job["threads"])  # its global Rayon pool: the same threads as ours
    import seismic

    k, T, name = job["k"], job["threads"], "pyseismic-lsr"
    queries = _queries(job)
    rss_before = _rss_now_kb()
    with _fd1_to(2):  # its build progress goes to stderr
        t0 = time.perf_counter()
        index = seismic.SeismicIndexRaw.build(job["docs_bin"], **job["build_kw"])
        build_s = time.perf_counter() - t0
    peak_build = _peak_rss_kb()
    nbytes, source = _seismic_bytes(index, job["tmpdir"])
    _log(name, f"read + built in {build_s:.1f} s, {(nbytes or 0) / 1e6:,.0f} MB, peak RSS {peak_build / 1024:,.0f} MiB")
    qs, q_bin, dropped = seismic_queries(queries, int(index.dim), job["tmpdir"])
    for c, v in qs[:20]:
        index.search(c, v, k, 10, 0.7, 0, True)

    def ids_of(res, n):
        ids = np.full((n, k), -1, np.int64)
        for i, r in enumerate(res[:n]):
            row = [int(d) for _, d in r][:k]
            ids[i, : len(row)] = row
        return ids

    points = _points(name, job, len(queries),
                     lambda i, qc, hf: index.search(qs[i][0], qs[i][1], k, qc, hf, 0, True),
                     lambda qc, hf: index.batch_search(q_bin, k, qc, hf, 0, True, num_threads=T), ids_of)
    return {"build_s": build_s, "index_bytes": nbytes, "index_bytes_source": source,
            "rss_before_build_kb": rss_before, "peak_rss_build_kb": peak_build, "points": points,
            "config": dict(job["build_kw"]), "query_terms_dropped": dropped, "version": _seismic_version()}


def _aftershock_version() -> str:
    import aftershock

    return getattr(aftershock, "__version__", "?")


CHILDREN = {"warmup": child_warmup, "truth": child_truth, "aftershock": child_aftershock, "seismic": child_seismic}


def _entry(conn, kind, job) -> None:
    send_result(conn, lambda: dict(CHILDREN[kind](job), peak_rss_kb=_peak_rss_kb()))


def run_child(kind: str, job: dict) -> dict:
    """Run one system in a fresh (spawned) process; its result, with ``peak_rss_kb`` and ``wall_s``."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    out, code = run_process(mp.get_context("spawn"), _entry, (kind, job), f"scale-{kind}")
    if out is None:
        out = {"error": f"the {kind} child died without a result (exit code {code}; killed for memory?)"}
    out["wall_s"] = time.perf_counter() - t0
    return out
