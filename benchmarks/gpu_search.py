"""GPU search benchmark (issue 4): Aftershock's CUDA kernels vs torch SpMM + topk vs CPU Aftershock, lexicon.

Three steps (only ``run`` needs a GPU):

    # 1. here: re-pack the real vectors compactly (docs + a fresh query sample) for the device carry
    python benchmarks/gpu_search.py pack --docs ../shared/vectors/splade-tiny/lexicon.docs.npz \
        --queries ../shared/vectors/splade-tiny/lexicon.queries.npz --out DIR
    # 2. anywhere: recall of the GPU algorithm via its CPU reference on the *tuning* queries (no GPU)
    python benchmarks/gpu_search.py tune --data DIR --sweep 10:0.7:16,...
    # 3. on the GPU machine, one command: build, float64 truth, exact GPU / blocked GPU / torch / CPU timings
    python benchmarks/gpu_search.py run --data DIR --out OUTDIR --sweep 10:0.7:16,...

Queries: the vectors file's first 2,000 queries tuned the CPU benchmark (benchmarks/ann/); ``pack`` draws
two disjoint random samples from the rest: ``tune`` (knob tuning) and ``bench`` (the measured, fresh set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aftershock import SparseBatch  # noqa: E402
from aftershock.eval.metrics import recall_at_k as recall  # noqa: E402  (the one definition)
from aftershock.index import SearchResult, read_vectors  # noqa: E402


# ------------------------------------------------------------------------------------------- data packing
def _shuffle_bytes(a: np.ndarray) -> bytes:
    """uint16 -> high bytes then low bytes (compresses far better than interleaved)."""
    a = a.view(np.uint16)
    return np.concatenate([(a >> 8).astype(np.uint8), (a & 255).astype(np.uint8)]).tobytes()


def _unshuffle_bytes(b: bytes, n: int) -> np.ndarray:
    u = np.frombuffer(b, np.uint8)
    return (u[:n].astype(np.uint16) << 8) | u[n:].astype(np.uint16)


def pack_docs(batch: SparseBatch, path: Path) -> None:
    """Lossless compact form of float16-exact vectors with uint16 term ids: row lengths, per-row delta-coded
    term ids and float16 bits, byte-shuffled and zlib-compressed."""
    idx = batch.indices.astype(np.int64)
    if batch.dim > 65536:
        raise SystemExit(f"pack needs dim <= 65536, got {batch.dim}")
    vals16 = batch.values.astype(np.float16)
    if not np.array_equal(vals16.astype(np.float32), batch.values):
        raise SystemExit("pack needs float16-exact values (the splade-tiny vectors are)")
    delta = np.diff(idx, prepend=0)
    starts = batch.indptr[:-1][np.diff(batch.indptr) > 0]
    delta[starts] = idx[starts]
    np.savez(path, lengths=np.diff(batch.indptr).astype(np.int32), dim=np.int64(batch.dim),
             idx=np.frombuffer(zlib.compress(_shuffle_bytes(delta.astype(np.uint16)), 9), np.uint8),
             val=np.frombuffer(zlib.compress(_shuffle_bytes(vals16), 9), np.uint8))


def unpack_docs(path: Path) -> SparseBatch:
    with np.load(path) as z:
        lengths = z["lengths"].astype(np.int64)
        n = int(lengths.sum())
        delta = _unshuffle_bytes(zlib.decompress(z["idx"].tobytes()), n).astype(np.int64)
        vals = _unshuffle_bytes(zlib.decompress(z["val"].tobytes()), n).view(np.float16).astype(np.float32)
        dim = int(z["dim"])
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # undo the per-row delta coding: cumulative sum restarted at each row
    csum = np.cumsum(delta)
    row_base = np.repeat(csum[indptr[:-1]] - delta[indptr[:-1]], lengths)
    idx = (csum - row_base).astype(np.int32)
    return SparseBatch.from_arrays(indptr, idx, vals, ids=[str(i) for i in range(len(lengths))], dim=dim, copy=False)


def cmd_pack(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = read_vectors(a.docs, dim=a.dim)
    pack_docs(docs, out / "docs.pack.npz")
    assert np.array_equal(unpack_docs(out / "docs.pack.npz").indices, docs.indices)
    qs = read_vectors(a.queries, dim=docs.dim)
    rng = np.random.default_rng(a.seed)
    pool = rng.permutation(np.arange(a.skip, len(qs)))
    sets = {"bench": np.sort(pool[: a.n_bench]), "tune": np.sort(pool[a.n_bench: a.n_bench + a.n_tune])}
    for name, rows in sets.items():
        q = qs[rows]
        np.savez_compressed(out / f"queries.{name}.npz", indptr=q.indptr, indices=q.indices.astype(np.uint16),
                            values=q.values.astype(np.float16), rows=rows, dim=np.int64(docs.dim))
    print(f"packed {len(docs):,} docs ({docs.nnz:,} nnz), queries bench {len(sets['bench'])} tune "
          f"{len(sets['tune'])} into {out}: " + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB"
                                                         for p in sorted(out.glob('*.npz'))))


def load_queries(data: Path, name: str) -> SparseBatch:
    with np.load(data / f"queries.{name}.npz") as z:
        rows = z["rows"]
        return SparseBatch.from_arrays(z["indptr"], z["indices"].astype(np.int32), z["values"].astype(np.float32),
                                       ids=[str(r) for r in rows], dim=int(z["dim"]))


# ------------------------------------------------------------------------------------------- float64 truth
_TRUTH = {}


def _truth_chunk(bounds):
    a, b = bounds
    d, q, k = _TRUTH["d"], _TRUTH["q"][a:b], _TRUTH["k"]
    s = (q @ d.T).tocsr()
    ids = np.full((b - a, k), -1, np.int64)
    sc = np.full((b - a, k), -np.inf)
    for r in range(b - a):
        lo, hi = s.indptr[r], s.indptr[r + 1]
        cols, vals = s.indices[lo:hi], s.data[lo:hi]
        order = np.lexsort((cols, -vals))[:k]
        ids[r, : order.size] = cols[order]
        sc[r, : order.size] = vals[order]
    return ids, sc


def truth_f64(docs: SparseBatch, queries: SparseBatch, k: int, procs: int):
    """Exact top-k in float64 (scipy), ties by smaller row, over forked worker processes: a SearchResult
    (float64 scores), the ground truth of `aftershock.eval.metrics.recall_at_k`."""
    import multiprocessing as mp

    _TRUTH.update(d=docs.to_scipy().astype(np.float64).tocsr(), q=queries.to_scipy().astype(np.float64).tocsr(), k=k)
    step = 64
    bounds = [(a, min(a + step, len(queries))) for a in range(0, len(queries), step)]
    if procs > 1:
        with mp.get_context("fork").Pool(procs) as pool:
            parts = pool.map(_truth_chunk, bounds)
    else:
        parts = [_truth_chunk(b) for b in bounds]
    return SearchResult(np.concatenate([p[1] for p in parts]), np.concatenate([p[0] for p in parts]))


def _head(truth: SearchResult, n: int) -> SearchResult:
    return SearchResult(truth.scores[:n], truth.ids[:n])


def parse_sweep(s: str):
    out = []
    for item in s.split(","):
        qc, hf, fb = item.split(":")
        out.append((int(qc), float(hf), int(fb)))
    return out


def build_seismic(docs, threads):
    from aftershock.seismic import SeismicIndex

    t = time.perf_counter()
    idx = SeismicIndex.build(docs, threads=threads)
    return idx, time.perf_counter() - t


# ------------------------------------------------------------------------------------------- tune (CPU only)
def cmd_tune(a) -> None:
    """Recall of the GPU algorithm per setting, computed by its CPU reference (no GPU: recall does not depend
    on the hardware). Builds the same index as ``run``."""
    from aftershock.gpu import GpuSeismicIndex

    data = Path(a.data)
    docs = unpack_docs(data / "docs.pack.npz")
    qs = load_queries(data, "tune")[: a.n_queries]
    idx, bt = build_seismic(docs, a.threads)
    print(f"built in {bt:.1f} s; {len(qs)} tuning queries, truth ...", flush=True)
    tids = truth_f64(docs, qs, a.k, a.procs)
    g = GpuSeismicIndex.__new__(GpuSeismicIndex)  # host side only: layout + reference, no device copies
    from aftershock.gpu import layout

    g.host, g.dim, g.n_docs, g.group, g.first_blocks = idx, idx.dim, idx.n_docs, a.group, 16
    g.host_arrays = layout.seismic_layout(idx)
    for qc, hf, fb in parse_sweep(a.sweep):
        t = time.perf_counter()
        r = g.reference(qs, a.k, query_cut=qc, heap_factor=hf, first_blocks=fb)
        st = {name: float(v.mean()) for name, v in g.last_stats.items()}
        print(f"query_cut={qc} heap_factor={hf} first_blocks={fb}: recall@{a.k}={recall(tids, r.ids):.4f} "
              f"blocks {st['blocks_visited']:.0f}/{st['blocks_scored']:.0f} docs {st['docs_scored']:.0f} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)


# ------------------------------------------------------------------------------------------- run (GPU)
def copy_bandwidth(torch) -> float:
    """Device-to-device copy of 2 GiB with CUDA events; bytes read + written per second (median of 10)."""
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    times = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        y.copy_(x)
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3)
    del x, y
    torch.cuda.empty_cache()
    return 2 * (2 << 30) / float(np.median(times))


def time_batches(fn, queries: SparseBatch, batch: int, max_queries: int, repeats: int = 3):
    """Median wall time to answer ``n`` queries in batches of ``batch`` (results back on the host); returns
    (seconds, n)."""
    n = max(batch, min(len(queries), max_queries) // batch * batch)
    parts = [queries[np.arange(a, min(a + batch, n))] for a in range(0, n, batch)]
    fn(parts[0])  # warm-up (compilation, scratch allocation)
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        for p in parts:
            fn(p)
        best.append(time.perf_counter() - t)
    return float(np.median(best)), n


_LAST_BREAKDOWN: dict = {}


def latency_breakdown(g, qs, k, cuda, n: int = 200) -> str:
    """Batch-1 exact search split into its host and device steps (median µs over n single queries)."""
    n = min(n, len(qs))
    one = [qs[np.arange(i, i + 1)] for i in range(n)]
    dq = g._upload(one[0])
    buf = g._launch(dq, 1, k)
    cuda.synchronize()

    def med(fn):
        fn(0)
        ts = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1e6

    steps = {
        "check": med(lambda i: g._check(one[i], k)),
        "upload+sync": med(lambda i: (g._upload(one[i]), cuda.synchronize())),
    }
    dq = g._upload(one[0])  # the upload buffer is reused: re-upload the query the launches below read
    steps |= {
        "empty launch+sync": med(lambda i: (g._launch(dq, 1, k, stages=0), cuda.synchronize())),
        "kernel launch+sync": med(lambda i: (g._launch(dq, 1, k), cuda.synchronize())),
        "download": med(lambda i: g._result(buf)),
        "search() total": med(lambda i: g.search(one[i], k)),
    }
    _LAST_BREAKDOWN.update(steps)
    return "batch-1 exact latency (median us): " + ", ".join(f"{a} {b:.1f}" for a, b in steps.items())


class TorchSpMM:
    """The baseline of the issue: docs as a torch CSR matrix on the GPU, queries densified, D @ Q, topk."""

    def __init__(self, torch, docs: SparseBatch):
        self.torch = torch
        self.dim = docs.dim
        self.D = torch.sparse_csr_tensor(torch.from_numpy(docs.indptr), torch.from_numpy(docs.indices.astype(np.int64)),
                                         torch.from_numpy(docs.values), size=(len(docs), docs.dim), device="cuda")

    def search(self, q: SparseBatch, k: int):
        t = self.torch
        rows = np.repeat(np.arange(len(q)), np.diff(q.indptr))
        dense = t.zeros((self.dim, len(q)), dtype=t.float32, device="cuda")
        terms = t.from_numpy(q.indices.astype(np.int64)).cuda()
        dense[terms, t.from_numpy(rows).cuda()] = t.from_numpy(q.values).cuda()
        s = self.D @ dense
        top = t.topk(s, k, dim=0)
        return top.values.T.cpu().numpy(), top.indices.T.cpu().numpy()


def cmd_run(a) -> None:
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "gpu_search.log", "w")

    def say(msg):
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    from numba import cuda

    from aftershock.gpu import GpuExactIndex, GpuSeismicIndex
    from aftershock.seismic import ExactIndex

    data = Path(a.data)
    k = a.k
    ncpu = len(os.sched_getaffinity(0))
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"none ({cuda.__name__})"
    say(f"device: {dev}, {ncpu} CPU cores, torch {torch.__version__}, numba-cuda "
        f"{getattr(sys.modules.get('numba_cuda'), '__version__', '?')}")
    t = time.perf_counter()
    docs = unpack_docs(data / "docs.pack.npz")
    qs = load_queries(data, "bench")[: a.n_queries]
    say(f"data: {len(docs):,} docs, {docs.nnz:,} nnz, dim {docs.dim}; {len(qs)} fresh queries "
        f"({qs.nnz / len(qs):.1f} nnz/query) ({time.perf_counter() - t:.1f} s)")
    gpu = torch.cuda.is_available()
    bw = copy_bandwidth(torch) if gpu else float("nan")
    say(f"HBM copy bandwidth (read + write): {bw / 1e12:.2f} TB/s")
    t = time.perf_counter()
    tids = truth_f64(docs, qs, k, ncpu)
    tsc = tids.scores
    say(f"float64 truth: {time.perf_counter() - t:.1f} s")
    results = {"device": dev, "copy_bw": bw, "n_docs": len(docs), "nnz": docs.nnz, "n_queries": len(qs),
               "rows": []}
    batches = [int(b) for b in a.batches.split(",")]
    cap = {1: a.max_single, 64: 4096}

    def bench(system, fn, bytes_q, rec, extra=""):
        for b in batches:
            try:
                sec, n = time_batches(fn, qs, b, cap.get(b, len(qs)))
            except Exception as e:  # noqa: BLE001 - keep the other rows
                say(f"{system} batch {b}: FAILED {type(e).__name__}: {e}")
                continue
            qps = n / sec
            gbs = float(bytes_q[:n].sum()) / sec
            row = dict(system=system, batch=b, recall=rec, qps=qps, us=1e6 / qps, bytes_q=float(bytes_q[:n].mean()),
                       gbs=gbs / 1e9, frac=gbs / bw, extra=extra)
            results["rows"].append(row)
            say(f"{system:34s} batch {b:5d}: recall {rec:.4f} {qps:12,.0f} QPS {1e6 / qps:9.2f} us/q "
                f"{bytes_q[:n].mean() / 1e6:7.3f} MB/q {gbs / 1e9:8.1f} GB/s ({100 * gbs / bw:5.1f}% of copy) {extra}")
            (out / "gpu_search.json").write_text(json.dumps(results, indent=1))

    # ---- exact GPU
    t = time.perf_counter()
    gex = GpuExactIndex(ExactIndex.build(docs), tpb=a.tpb, tile=a.tile)
    say(f"exact GPU index: {gex.nbytes() / 1e6:.0f} MB on device, {gex.n_tiles} tiles of {gex.tile} "
        f"({time.perf_counter() - t:.1f} s)")
    r = gex.search(qs, k)
    ok = r.ids >= 0
    rel = np.abs(r.scores[ok] - tsc[ok]).max() / np.abs(tsc[ok]).max() if ok.any() else 0.0
    rec_ex = recall(tids, r.ids)
    say(f"exact GPU vs float64: recall {rec_ex:.4f}, max |score - ref| / max|ref| at the same rank {rel:.2e}")
    bq_exact = gex.bytes_per_query(qs).astype(np.float64)
    bench("exact-gpu (aftershock)", lambda q: gex.search(q, k), bq_exact, rec_ex)

    # ---- where a single query's time goes (exact): host checks, upload, empty launch, kernel, download
    say(latency_breakdown(gex, qs, k, cuda, n=min(200, a.max_single * 40)))
    results["latency_breakdown_us"] = _LAST_BREAKDOWN

    # ---- where the exact kernel's time goes (batch 1024): accumulate only, + tile top-k, full; another tile
    vb = min(1024, len(qs))
    for name, fn in [("exact-gpu stage 1: accumulate only", lambda q: gex._search(q, k, stages=1)),
                     ("exact-gpu stage 2: + tile top-k", lambda q: gex._search(q, k, stages=2))]:
        sec, n = time_batches(fn, qs, vb, vb * 4)
        say(f"variant {name:45s} batch {vb}: {sec / n * 1e6:8.3f} us/q")
        results.setdefault("variants", []).append(dict(name=name, batch=vb, us=sec / n * 1e6))
    if a.tile2:
        g2 = GpuExactIndex(gex.host, tpb=a.tpb, tile=a.tile2)
        sec, n = time_batches(lambda q: g2.search(q, k), qs, vb, vb * 4)
        say(f"variant exact-gpu tile {a.tile2:<33d} batch {vb}: {sec / n * 1e6:8.3f} us/q "
            f"(recall {recall(tids, g2.search(qs, k).ids):.4f})")
        results.setdefault("variants", []).append(dict(name=f"exact tile {a.tile2}", batch=vb, us=sec / n * 1e6))
        del g2

    # ---- torch SpMM + topk
    try:
        if not gpu:
            raise RuntimeError("torch sees no GPU")
        ts = TorchSpMM(torch, docs)
        tr = np.concatenate([ts.search(qs[np.arange(x, min(x + 1024, len(qs)))], k)[1]
                             for x in range(0, len(qs), 1024)])
        bench("torch CSR SpMM + topk", lambda q: ts.search(q, k), bq_exact, recall(tids, tr))
        del ts
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        say(f"torch baseline failed: {type(e).__name__}: {e}")

    # ---- blocked GPU
    t = time.perf_counter()
    sidx, bt = build_seismic(docs, ncpu)
    say(f"Seismic index built on the CPU ({ncpu} threads) in {bt:.1f} s: {sidx.n_blocks:,} blocks")
    gs = GpuSeismicIndex(sidx, tpb=a.tpb, group=a.group)
    say(f"blocked GPU index: {gs.nbytes() / 1e6:.0f} MB on device ({time.perf_counter() - t - bt:.1f} s)")
    for qc, hf, fb in parse_sweep(a.sweep):
        try:
            blocked_setting(a, gs, qs, tids, k, (qc, hf, fb), bench, say, results, vb)
        except Exception as e:  # noqa: BLE001 - keep the other settings
            say(f"blocked setting {(qc, hf, fb)} FAILED: {type(e).__name__}: {e}")

    # ---- CPU Aftershock on this machine's cores
    try:
        cpu_rows(a, docs, sidx, qs, tids, k, ncpu, say, results)
    except Exception as e:  # noqa: BLE001
        say(f"CPU rows FAILED: {type(e).__name__}: {e}")
    (out / "gpu_search.json").write_text(json.dumps(results, indent=1))
    say("\n" + table(results))


def blocked_setting(a, gs, qs, tids, k, setting, bench, say, results, vb):
    qc, hf, fb = setting
    kw = dict(query_cut=qc, heap_factor=hf, first_blocks=fb)
    r = gs.search(qs, k, **kw)
    rec = recall(tids, r.ids)
    bq = gs.bytes_touched().astype(np.float64)
    st = {name: float(v.mean()) for name, v in gs.last_stats.items()}  # per-query means
    # the same algorithm on the CPU (its reference) must give the same ids
    n_ref = min(len(qs), a.n_check)
    ref = gs.reference(qs[np.arange(n_ref)], k, **kw)
    same = float((ref.ids == r.ids[:n_ref]).all(axis=1).mean())
    ok = ref.ids >= 0
    err = float(np.abs(ref.scores[ok] - r.scores[:n_ref][ok]).max()) if ok.any() else 0.0
    say(f"blocked GPU {kw}: recall {rec:.4f}; vs CPU reference on {n_ref} queries: identical ids "
        f"{100 * same:.1f}%, max score diff {err:.2e}; per query: blocks scored {st['blocks_scored']:.0f}, "
        f"visited {st['blocks_visited']:.0f}, docs rescored {st['docs_scored']:.0f}")
    bench(f"blocked-gpu qc={qc} hf={hf} fb={fb}", lambda q, kw=kw: gs._search(q, k, stats=False, **kw), bq,
          rec, f"docs/q {st['docs_scored']:.0f}")
    if setting == parse_sweep(a.sweep)[0]:  # where the blocked kernel's time goes
        for stg, name in [(1, "summary scores only"), (2, "+ phase A (first blocks, theta)")]:
            sec, n = time_batches(lambda q, kw=kw, stg=stg: gs._search(q, k, stages=stg, stats=False, **kw),
                                  qs, vb, vb * 4)
            say(f"variant blocked stage {stg}: {name:32s} batch {vb}: {sec / n * 1e6:8.3f} us/q")
            results.setdefault("variants", []).append(dict(name=f"blocked {kw} stage {stg}", batch=vb,
                                                           us=sec / n * 1e6))


def cpu_rows(a, docs, sidx, qs, tids, k, ncpu, say, results):
    from aftershock.seismic import ExactIndex, SearchParams

    sub = qs[np.arange(min(len(qs), a.cpu_queries))]
    for qc, hf in [tuple(map(float, x.split(":"))) for x in a.cpu_sweep.split(",")]:
        p = SearchParams(query_cut=int(qc), heap_factor=hf, threads=ncpu)
        sidx.search(sub[np.arange(min(64, len(sub)))], k, p)
        t = time.perf_counter()
        r = sidx.search(sub, k, p)
        sec = time.perf_counter() - t
        rec = recall(_head(tids, len(sub)), r.ids)
        p1 = p.with_(threads=1)
        one = sub[np.arange(min(300, len(sub)))]
        sidx.search(one[np.arange(1)], k, p1)  # compiles the single-thread path
        t = time.perf_counter()
        for i in range(len(one)):
            sidx.search(one[np.arange(i, i + 1)], k, p1)
        lat = (time.perf_counter() - t) / len(one)
        row = dict(system=f"cpu seismic qc={int(qc)} hf={hf}", batch=len(sub), recall=rec, qps=len(sub) / sec,
                   us=sec / len(sub) * 1e6, us_1thread=lat * 1e6, threads=ncpu)
        results["rows"].append(row)
        say(f"CPU Aftershock seismic qc={int(qc)} hf={hf}: recall {rec:.4f}, {len(sub) / sec:,.0f} QPS on {ncpu} "
            f"threads (batch {len(sub)}), {lat * 1e6:.0f} us/query on 1 thread")
    ex = ExactIndex.build(docs)
    pe = SearchParams(threads=ncpu)
    ex.search(sub[np.arange(min(64, len(sub)))], k, pe)
    t = time.perf_counter()
    r = ex.search(sub, k, pe)
    sec = time.perf_counter() - t
    results["rows"].append(dict(system="cpu exact", batch=len(sub), recall=recall(_head(tids, len(sub)), r.ids),
                                qps=len(sub) / sec, us=sec / len(sub) * 1e6, threads=ncpu))
    say(f"CPU Aftershock exact: {len(sub) / sec:,.0f} QPS on {ncpu} threads")


def table(results) -> str:
    lines = ["| system | batch | recall@10 | QPS | µs/query | MB/query | GB/s | % of copy BW |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        if "gbs" in r:
            lines.append(f"| {r['system']} | {r['batch']} | {r['recall']:.4f} | {r['qps']:,.0f} | {r['us']:.2f} | "
                         f"{r['bytes_q'] / 1e6:.3f} | {r['gbs']:.0f} | {100 * r['frac']:.1f} |")
        else:
            lines.append(f"| {r['system']} ({r['threads']} CPU threads) | {r['batch']} | {r['recall']:.4f} | "
                         f"{r['qps']:,.0f} | {r['us']:.1f} | - | - | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--docs", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--dim", type=int, default=30522)
    p.add_argument("--out", required=True)
    p.add_argument("--skip", type=int, default=2000, help="leading queries left out (they tuned the CPU benchmark)")
    p.add_argument("--n-bench", type=int, default=8192)
    p.add_argument("--n-tune", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    for name in ("tune", "run"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True)
        p.add_argument("--k", type=int, default=10)
        p.add_argument("--sweep", default="10:0.7:16")
        p.add_argument("--group", type=int, default=8)
        p.add_argument("--n-queries", type=int, default=8192)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--procs", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--batches", default="1,64,1024,8192")
    p.add_argument("--tile", type=int, default=8192)
    p.add_argument("--tile2", type=int, default=4096, help="a second tile size timed as a variant (0: none)")
    p.add_argument("--tpb", type=int, default=256, help="CUDA threads per block")
    p.add_argument("--max-single", type=int, default=500, help="queries timed one by one at batch 1")
    p.add_argument("--n-check", type=int, default=256, help="queries compared with the CPU reference")
    p.add_argument("--cpu-queries", type=int, default=4096)
    p.add_argument("--cpu-sweep", default="10:0.7")
    a = ap.parse_args(argv)
    {"pack": cmd_pack, "tune": cmd_tune, "run": cmd_run}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
