"""Device-side top-k selection shared by the CUDA kernels (block-wide reductions, ranking, a tile's top k).

Only block-level primitives (shared memory, ``syncthreads``, atomics), so they run under Numba's CUDA
simulator too. Ranking: score descending, then id ascending (as the CPU heaps).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda

NEG = np.float32(-np.inf)
POS = np.float32(np.inf)
BIG = np.int64(2**62)


@cuda.jit(device=True, inline=True)
def _better(s1, i1, s2, i2):
    """(s1, i1) ranks above (s2, i2)."""
    return s1 > s2 or (s1 == s2 and i1 < i2)


@cuda.jit(device=True)
def _block_best(s, i, red_s, red_i, tpb):
    """Block-wide best (score, id) over every thread's candidate; all threads get it (tpb a power of 2)."""
    tid = cuda.threadIdx.x
    red_s[tid] = s
    red_i[tid] = i
    cuda.syncthreads()
    step = tpb // 2
    while step > 0:
        if tid < step:
            if _better(red_s[tid + step], red_i[tid + step], red_s[tid], red_i[tid]):
                red_s[tid] = red_s[tid + step]
                red_i[tid] = red_i[tid + step]
        cuda.syncthreads()
        step //= 2
    s = red_s[0]
    i = red_i[0]
    cuda.syncthreads()
    return s, i


@cuda.jit(device=True)
def _select(vals, ids, n, direct, k, base, out_s, out_i, red_s, red_i, tpb):
    """The k best (score, id) among vals[:n] into out_*[:k] (ids[x], or base + x when ``direct``; entries with
    id < 0, or score <= 0 when direct, are skipped), by k non-destructive block-wide rounds; returns the k-th
    score (-inf when fewer than k). Unfilled slots get -inf / -1."""
    tid = cuda.threadIdx.x
    ps = POS
    pi = np.int64(-1)
    kth = NEG
    for r in range(k):
        bs = NEG
        bi = BIG
        for x in range(tid, n, tpb):
            s = vals[x]
            if direct:
                d = base + x
                ok = s > 0
            else:
                d = np.int64(ids[x])
                ok = d >= 0
            if ok and _better(ps, pi, s, d) and _better(s, d, bs, bi):
                bs = s
                bi = d
        bs, bi = _block_best(bs, bi, red_s, red_i, tpb)
        if bi == BIG:
            for x in range(r + tid, k, tpb):
                out_s[x] = NEG
                out_i[x] = -1
            break
        if tid == 0:
            out_s[r] = bs
            out_i[r] = bi
        ps = bs
        pi = bi
        if r == k - 1:
            kth = bs
    return kth


@cuda.jit(device=True)
def _rank_select(vals, ids, n, k, out_s, out_i, tpb):
    """The entry of rank r < k among (vals[x], ids[x]), x < n (ids >= 0 valid, unique), goes to out_*[r]: each
    thread counts the entries ranking above its own (O(n^2 / tpb) reads, no rounds, no barriers). The caller
    pads out_* and synchronizes before and after."""
    for x in range(cuda.threadIdx.x, n, tpb):
        s = vals[x]
        d = np.int64(ids[x])
        if d < 0:
            continue
        r = 0
        for y in range(n):
            dy = np.int64(ids[y])
            if dy >= 0 and _better(vals[y], dy, s, d):
                r += 1
                if r >= k:
                    break
        if r < k:
            out_s[r] = s
            out_i[r] = d


@lru_cache(maxsize=None)
def tile_topk(tpb: int, cand: int = 1024):
    """A device function ``(acc, n, k, base, out_s, out_i, red_s, red_i)``: the top k of a shared accumulator
    (touched <=> > 0) in two passes: theta = the k-th best of the threads' own maxima bounds the k-th score
    from below; the entries reaching it (at most 32 k when each thread holds n / tpb <= 32 entries) are
    compacted into ``cand`` shared slots and ranked there. Falls back to k block-wide rounds over acc when
    they overflow. ``red_s``/``red_i`` are the caller's ``tpb``-sized reduction scratch."""

    @cuda.jit(device=True)
    def _tile_topk(acc, n, k, base, out_s, out_i, red_s, red_i):
        cs = cuda.shared.array(cand, np.float32)
        ci = cuda.shared.array(cand, np.int32)
        ccnt = cuda.shared.array(1, np.int32)
        th_s = cuda.shared.array(1, np.float32)
        th_i = cuda.shared.array(1, np.int64)
        _topk_body(acc, n, k, base, out_s, out_i, red_s, red_i, cs, ci, ccnt, th_s, th_i, tpb)

    return _tile_topk


@cuda.jit(device=True)
def _topk_body(acc, n, k, base, out_s, out_i, red_s, red_i, cs, ci, ccnt, th_s, th_i, tpb):
    tid = cuda.threadIdx.x
    cap = cs.shape[0]
    m = NEG
    mi = BIG
    for x in range(tid, n, tpb):
        s = acc[x]
        if s > 0 and _better(s, np.int64(x), m, mi):
            m = s
            mi = np.int64(x)
    red_s[tid] = m
    red_i[tid] = mi
    for x in range(tid, k, tpb):
        out_s[x] = NEG
        out_i[x] = -1
    if tid == 0:
        ccnt[0] = 0
        th_s[0] = 0.0  # fewer than k threads touched anything: every touched entry is a candidate
        th_i[0] = BIG
    cuda.syncthreads()
    if mi != BIG:
        r = 0
        for y in range(tpb):
            if red_i[y] != BIG and _better(red_s[y], red_i[y], m, mi):
                r += 1
        if r == k - 1:
            th_s[0] = m
            th_i[0] = mi
    cuda.syncthreads()
    ts = th_s[0]
    ti = th_i[0]
    for x in range(tid, n, tpb):
        s = acc[x]
        if s > 0 and not _better(ts, ti, s, np.int64(x)):
            c = cuda.atomic.add(ccnt, 0, 1)
            if c < cap:
                cs[c] = s
                ci[c] = base + x
    cuda.syncthreads()
    nc = ccnt[0]
    if nc <= cap:
        _rank_select(cs, ci, nc, k, out_s, out_i, tpb)
    else:
        _select(acc, ci, n, True, k, base, out_s, out_i, red_s, red_i, tpb)


@cuda.jit(device=True, inline=True)
def load4(ids, vals, p, stride, end):
    """Entries p, p + stride, p + 2 stride and p + 3 stride of (ids, vals), every load issued before the
    caller uses any (memory-level parallelism); those at or past ``end`` repeat entry p (callers skip them)."""
    i0 = ids[p]
    v0 = vals[p]
    i1 = i0
    v1 = v0
    i2 = i0
    v2 = v0
    i3 = i0
    v3 = v0
    if p + stride < end:
        i1 = ids[p + stride]
        v1 = vals[p + stride]
    if p + 2 * stride < end:
        i2 = ids[p + 2 * stride]
        v2 = vals[p + 2 * stride]
    if p + 3 * stride < end:
        i3 = ids[p + 3 * stride]
        v3 = vals[p + 3 * stride]
    return i0, v0, i1, v1, i2, v2, i3, v3
