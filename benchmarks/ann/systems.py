"""Aftershock's own systems in the ANN benchmark: exact search (the ground truth and a reference line) and
the Seismic index; each runs in a child process (see children.py)."""

from __future__ import annotations

import gc
import time

import numpy as np

from aftershock.eval.metrics import recall_at_k

from .common import N_SCIPY, _call_overhead_us, _empty_query, _log, _stats_us, _time_each, _time_once


def _stat_means(index) -> dict:
    """Per-query means of ``index.last_stats`` (dict name -> per-query array; scalars pass through)."""
    return {key: float(np.mean(v)) for key, v in (getattr(index, "last_stats", None) or {}).items()}


def _child_exact(job, docs, queries) -> dict:
    from aftershock.seismic import ExactIndex, SearchParams

    k, T, nq = job["k"], job["threads"], len(queries)
    p1, pT = SearchParams(threads=1), SearchParams(threads=T)
    name = "exact"
    t0 = time.perf_counter()
    index = ExactIndex.build(docs)
    build_s = time.perf_counter() - t0
    index.search(queries[:1], k, p1)  # JIT warm-up (or cache load)
    index.search(queries[: min(nq, 64)], k, pT)
    batch_s, gt, cores = _time_once(lambda: index.search(queries, k, pT))
    _log(name, f"batch of {nq} queries: {batch_s:.2f} s on {T} thread(s)")
    # the ground truth of recall: 2k deep, so that documents tied with the k-th count (aftershock.eval.metrics)
    truth = index.search(queries, 2 * k, pT)
    n_single = nq if job["timed"] else min(nq, N_SCIPY)
    singles = [queries[i:i + 1] for i in range(n_single)]
    ns, res, single_cores = _time_each(lambda q: index.search(q, k, p1), singles)
    mean_us, p99_us = _stats_us(ns)
    single_ids = np.vstack([r.ids for r in res]) if res else np.zeros((0, k), np.int64)
    _log(name, f"1 thread, one query per call: {mean_us:.1f} µs mean over {n_single} queries")
    empty = _empty_query(docs.dim)
    overhead = _call_overhead_us(lambda: index.search(empty, k, p1))
    batch1_s = cores1 = None
    if job["timed"] and T > 1:
        batch1_s, _, cores1 = _time_once(lambda: index.search(queries, k, p1))

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
        "gt": {"scores": truth.scores, "ids": truth.ids}, "build_s": build_s, "call_overhead_us": overhead, "index_bytes": index.nbytes(),
        "index_bytes_source": "nbytes()",
        "points": [{"knobs": "-", "mean_us": mean_us, "p99_us": p99_us,
                    "n_timed": n_single, "batch_qps": nq / batch_s if batch_s > 0 else float("nan"),
                    "batch_qps_1t": (nq / batch1_s) if batch1_s else None, "batch_cores": cores,
                    "batch_cores_1t": cores1, "single_cores": single_cores, "ids": gt.ids,
                    "single_matches_batch": float(np.mean(single_ids == gt.ids[:n_single])) if n_single else 1.0}],
        "ref": {"aftershock_exact_us": mean_us, "aftershock_exact_p99_us": p99_us, "aftershock_exact_n": n_single,
                "scipy_exact_us": sp_mean, "scipy_exact_p99_us": sp_p99, "scipy_exact_n": n_sp,
                "scipy_recall": recall_at_k(type(truth)(truth.scores[:n_sp], truth.ids[:n_sp]), sp_ids, k)},
    }


def _child_aftershock(job, docs, queries) -> dict:
    from aftershock.seismic import SearchParams, SeismicConfig, SeismicIndex

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
    w1 = SearchParams(query_cut=qc0, heap_factor=hf0, n_knn=n_knn, threads=1)
    for q in singles[:20]:  # warm-up: JIT (or cache load), page faults
        index.search(q, k, w1)
    index.search(queries[: min(nq, 64)], k, w1.with_(threads=T))
    empty = _empty_query(docs.dim)
    overhead = _call_overhead_us(lambda: index.search(empty, k, w1))
    points = []
    for qc, hf in job["sweep"]:
        p1 = SearchParams(query_cut=qc, heap_factor=hf, n_knn=n_knn, threads=1)
        pT = p1.with_(threads=T)
        ns, res, single_cores = _time_each(lambda q: index.search(q, k, p1), singles)
        ids = np.vstack([r.ids for r in res]) if res else np.zeros((0, k), np.int64)
        batch_s, bres, cores = _time_once(lambda: index.search(queries, k, pT))
        stats = _stat_means(index)  # per-query means over the batch
        batch1_s = cores1 = None
        if T > 1:
            batch1_s, _, cores1 = _time_once(lambda: index.search(queries, k, p1))
        mean_us, p99_us = _stats_us(ns)
        points.append({"knobs": f"{qc}:{hf:g}", "query_cut": qc, "heap_factor": hf, "mean_us": mean_us, "p99_us": p99_us, "n_timed": nq,
                       "batch_qps": nq / batch_s, "batch_qps_1t": (nq / batch1_s) if batch1_s else None,
                       "batch_cores": cores, "batch_cores_1t": cores1, "single_cores": single_cores,
                       "ids": ids, "single_matches_batch": float(np.mean(bres.ids == ids)) if nq else 1.0,
                       "search_stats": stats})
        _log(name, f"query_cut={qc} heap_factor={hf}: {mean_us:.1f} µs mean, {nq / batch_s:.0f} QPS on {T} thr")
    return {"build_s": build_s, "index_bytes": index.nbytes(), "index_bytes_source": "nbytes()",
            "n_blocks": index.n_blocks, "points": points, "call_overhead_us": overhead, "config": cfg.to_dict()}
