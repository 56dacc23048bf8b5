"""Numba-CUDA kernels: exact search (tiled inverted-index scatter-add) and blocked approximate search.

Only block-level primitives are used (shared memory, ``syncthreads``, atomics): no warp shuffles, so the
same kernels run under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) in CI. Kernels are built by
factories whose arguments (threads per block, tile size, ...) are compile-time constants; the tests build
tiny variants, the device uses the defaults. The CPU reference of the blocked algorithm is
``aftershock.gpu.reference``; the exact kernel's reference is ``ExactIndex``.

Ranking everywhere: score descending, then id ascending (as the CPU heaps).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import cuda

from aftershock.gpu.device import NEG, POS, _better, _rank_select, _select, load4, tile_topk


# ------------------------------------------------------------------------------------------- exact
@lru_cache(maxsize=None)
def exact_kernel(tpb: int = 256, tile: int = 8192, cand: int = 1024):
    """grid (n_tiles, n_queries): block (tile j, query q) scatter-adds q's postings that fall in tile j into
    a shared accumulator, keeps the tile's top k, and the last block of q to finish merges the tiles.
    ``stages`` < 3 stops early (for timing the parts): 0 = nothing (launch cost), 1 = accumulate only,
    2 = + the tile's top k. Shared-memory float atomics are compare-and-swap loops on sm_90, but postings of one
    term never collide, so they rarely retry."""
    assert tpb >= 32 and tpb & (tpb - 1) == 0
    ngroups = tpb // 32
    topk = tile_topk(tpb, cand)

    @cuda.jit
    def kernel(tile_ptr, post_doc, post_val, n_tiles, q_ptr, q_idx, q_val, q0, k, part_s, part_i, counter,
               out_s, out_i, stages):
        j = cuda.blockIdx.x
        qq = cuda.blockIdx.y
        q = q0 + qq
        tid = cuda.threadIdx.x
        lane = tid & 31
        grp = tid >> 5
        acc = cuda.shared.array(tile, np.float32)
        red_s = cuda.shared.array(tpb, np.float32)
        red_i = cuda.shared.array(tpb, np.int64)
        last = cuda.shared.array(1, np.int32)
        if stages == 0:
            return
        for x in range(tid, tile, tpb):
            acc[x] = 0.0
        cuda.syncthreads()
        stride = n_tiles + 1
        for a in range(q_ptr[q] + grp, q_ptr[q + 1], ngroups):  # a group of 32 threads per query term
            t = np.int64(q_idx[a])
            w = q_val[a]
            p1 = tile_ptr[t * stride + j + 1]
            for p in range(tile_ptr[t * stride + j] + lane, p1, 128):
                # four postings per lane per step, all loads issued before the adds (memory-level parallelism)
                d0, v0, d1, v1, d2, v2, d3, v3 = load4(post_doc, post_val, p, 32, p1)
                cuda.atomic.add(acc, np.int32(d0), w * np.float32(v0))
                if p + 32 < p1:
                    cuda.atomic.add(acc, np.int32(d1), w * np.float32(v1))
                if p + 64 < p1:
                    cuda.atomic.add(acc, np.int32(d2), w * np.float32(v2))
                if p + 96 < p1:
                    cuda.atomic.add(acc, np.int32(d3), w * np.float32(v3))
        cuda.syncthreads()
        if stages == 1:
            if tid == 0:
                part_s[qq, j * k] = acc[0]
            return
        topk(acc, tile, k, np.int64(j) * tile, part_s[qq, j * k:(j + 1) * k], part_i[qq, j * k:(j + 1) * k],
             red_s, red_i)
        if stages == 2:
            return
        # the last tile block of this query to finish merges all tiles' candidates
        cuda.threadfence()
        cuda.syncthreads()
        if tid == 0:
            last[0] = 1 if cuda.atomic.add(counter, qq, 1) == n_tiles - 1 else 0
        cuda.syncthreads()
        if last[0] == 0:
            return
        cuda.threadfence()
        n = n_tiles * k
        if n <= 4096:
            for x in range(tid, k, tpb):
                out_s[q, x] = NEG
                out_i[q, x] = -1
            cuda.syncthreads()
            _rank_select(part_s[qq], part_i[qq], n, k, out_s[q], out_i[q], tpb)
        else:
            _select(part_s[qq], part_i[qq], n, False, k, 0, out_s[q], out_i[q], red_s, red_i, tpb)
        if tid == 0:
            counter[qq] = 0  # ready for the next launch

    return kernel


# ------------------------------------------------------------------------------------------- blocked (Seismic)
@cuda.jit(device=True, inline=True)
def _qweight(t, qbits, qpos, qv):
    """The query's weight of term t (0 when absent): bitmap test, then rank of t among the query's terms."""
    w = t >> 5
    bits = qbits[w]
    m = np.uint32(1) << np.uint32(t & 31)
    if (bits & m) == 0:
        return np.float32(0.0)
    return qv[qpos[w] + cuda.popc(bits & (m - np.uint32(1)))]


@lru_cache(maxsize=None)
def seismic_kernel(tpb: int = 256, group: int = 8, max_q: int = 1024, dim_words: int = 2048, max_cut: int = 64,
                   max_bl: int = 1024):
    """grid (n_queries,): one block per query runs the whole batch-first blocked search:

    1. the ``query_cut`` heaviest query terms pick posting lists (at most ``max_bl`` blocks each); every
       block of those lists gets its summary score, adding the query's terms in ascending order as the CPU;
    2. phase A: the ``first_blocks`` best-scoring blocks' documents are rescored exactly from the forward
       index; their k-th best score is the threshold theta;
    3. phase B: every other block with summary score >= heap_factor * theta is visited; its documents not
       seen before (a visited bitmap per query) are rescored and kept when >= theta;
    4. the k best (score desc, doc asc) are written out.
    Documents are rescored by ``group`` threads each (entries strided by ``group``, partial sums added in
    member order: deterministic, mirrored by the CPU reference). ``stats[q]`` = (blocks scored, summary
    entries read, blocks visited, docs rescored, forward entries read, postings visited).
    ``stages`` < 3 stops early (for timing the parts): 1 = summary scores only, 2 = + phase A.
    """
    assert tpb >= 32 and tpb & (tpb - 1) == 0 and tpb % group == 0
    slots = tpb // group
    topk = tile_topk(tpb)
    cut1 = max_cut + 1

    @cuda.jit(device=True)
    def _collect(b, blk_doc_ptr, blk_docs, visited, qq, todo, cnt):
        """Queue block b's documents not visited yet (todo row qq, counter cnt[0])."""
        p0 = blk_doc_ptr[b]
        p1 = blk_doc_ptr[b + 1]
        for p in range(p0, p1):
            d = blk_docs[p]
            m = np.uint32(1) << np.uint32(d & 31)
            old = cuda.atomic.or_(visited, (qq, d >> 5), m)
            if (old & m) == 0:
                todo[qq, cuda.atomic.add(cnt, 0, 1)] = d
        cuda.atomic.add(cnt, 3, p1 - p0)

    @cuda.jit(device=True)
    def _rescore(n, theta, fwd_ptr, fwd_idx, fwd_val, qbits, qpos, qv, qq, todo, cand_s, cand_i, cnt, part):
        """Score todo[qq, :n] exactly; append those >= theta to cand_* (counter cnt[1])."""
        tid = cuda.threadIdx.x
        slot = tid // group
        mem = tid % group
        for r0 in range(0, n, slots):
            x = r0 + slot
            s = np.float32(0.0)
            if x < n:
                d = todo[qq, x]
                e1 = fwd_ptr[d + 1]
                step = 4 * group
                for e in range(fwd_ptr[d] + mem, e1, step):
                    # four entries per member per step, loads first (memory-level parallelism); the adds keep
                    # the order e, e + group, ... of the CPU reference
                    t0, v0, t1, v1, t2, v2, t3, v3 = load4(fwd_idx, fwd_val, e, group, e1)
                    s += _qweight(np.int32(t0), qbits, qpos, qv) * np.float32(v0)
                    if e + group < e1:
                        s += _qweight(np.int32(t1), qbits, qpos, qv) * np.float32(v1)
                    if e + 2 * group < e1:
                        s += _qweight(np.int32(t2), qbits, qpos, qv) * np.float32(v2)
                    if e + 3 * group < e1:
                        s += _qweight(np.int32(t3), qbits, qpos, qv) * np.float32(v3)
                if mem == 0:
                    cuda.atomic.add(cnt, 2, e1 - fwd_ptr[d])
            part[tid] = s
            cuda.syncthreads()
            if mem == 0 and x < n:
                tot = np.float32(0.0)
                for g in range(group):
                    tot += part[tid + g]
                if tot >= theta:
                    c = cuda.atomic.add(cnt, 1, 1)
                    cand_s[qq, c] = tot
                    cand_i[qq, c] = todo[qq, x]
            cuda.syncthreads()

    @cuda.jit
    def kernel(q_ptr, q_idx, q_val, q0, term_blk_ptr, blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val,
               comp_list_ptr, comp_ids, comp_ent_ptr, ent_blk, ent_code, sum_min, sum_step, k, query_cut,
               heap_factor, first_blocks,
               blk_score, blk_id, visited, todo, cand_s, cand_i, out_s, out_i, stats, stages):
        qq = cuda.blockIdx.x
        q = q0 + qq
        tid = cuda.threadIdx.x
        qbits = cuda.shared.array(dim_words, np.uint32)
        qpos = cuda.shared.array(dim_words, np.int32)
        qv = cuda.shared.array(max_q, np.float32)
        cut_t = cuda.shared.array(max_cut, np.int64)
        cut_off = cuda.shared.array(cut1, np.int64)
        red_s = cuda.shared.array(tpb, np.float32)
        red_i = cuda.shared.array(tpb, np.int64)
        part = cuda.shared.array(tpb, np.float32)
        # cnt: 0 todo, 1 candidates, 2 forward entries, 3 postings visited, 4 summary entries, 5 blocks visited,
        # 6 docs rescored in phase A
        cnt = cuda.shared.array(8, np.int64)
        crng = cuda.shared.array(max_q, np.int32)
        acc_dot = cuda.shared.array(max_bl, np.float32)
        acc_q = cuda.shared.array(max_bl, np.float32)
        if stages == 0:
            return
        a = q_ptr[q]
        nq = q_ptr[q + 1] - a
        for w in range(tid, dim_words, tpb):
            qbits[w] = 0
        for w in range(tid, visited.shape[1], tpb):
            visited[qq, w] = 0
        if tid < 8:
            cnt[tid] = 0
        cuda.syncthreads()
        for j in range(tid, nq, tpb):
            t = q_idx[a + j]
            qv[j] = q_val[a + j]
            cuda.atomic.or_(qbits, t >> 5, np.uint32(1) << np.uint32(t & 31))
        for w in range(tid, dim_words, tpb):  # qpos[w]: query terms with id < 32 w (ids ascend in a row)
            lo = np.int64(0)
            hi = nq
            while lo < hi:
                mid = (lo + hi) // 2
                if q_idx[a + mid] < w * 32:
                    lo = mid + 1
                else:
                    hi = mid
            qpos[w] = lo
        cuda.syncthreads()
        ncut = min(query_cut, nq)
        for j in range(tid, nq, tpb):  # rank by weight desc, position asc (a stable sort, as the CPU)
            v = qv[j]
            r = 0
            for x in range(nq):
                vx = qv[x]
                if vx > v or (vx == v and x < j):
                    r += 1
            if r < ncut:
                cut_t[r] = q_idx[a + j]
        cuda.syncthreads()
        if tid == 0:
            off = np.int64(0)
            for c in range(ncut):
                cut_off[c] = off
                off += term_blk_ptr[cut_t[c] + 1] - term_blk_ptr[cut_t[c]]
            cut_off[ncut] = off
        cuda.syncthreads()
        nb = cut_off[ncut]
        # 1. summary scores of every block of the selected lists, list by list. A list's summaries are stored
        # component-major (per summary term, its (block, code) entries), so only the entries of the query's
        # own terms are read: query term by query term (ascending, as the CPU adds them), all threads over
        # that term's entries; a block appears once per term, so the shared accumulators need no atomics.
        for c in range(ncut):
            t = cut_t[c]
            b0 = term_blk_ptr[t]
            nbl = term_blk_ptr[t + 1] - b0
            c0 = comp_list_ptr[t]
            c1 = comp_list_ptr[t + 1]
            for j in range(tid, nq, tpb):  # the query term's component in this list (binary search)
                u = q_idx[a + j]
                lo = c0
                hi = c1
                while lo < hi:
                    mid = (lo + hi) // 2
                    if np.int64(comp_ids[mid]) < u:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < c1 and np.int64(comp_ids[lo]) == u:
                    crng[j] = lo
                else:
                    crng[j] = -1
            for x in range(tid, nbl, tpb):
                acc_dot[x] = 0.0
                acc_q[x] = 0.0
            cuda.syncthreads()
            for j in range(nq):
                g = crng[j]
                if g >= 0:
                    w = qv[j]
                    e1 = comp_ent_ptr[g + 1]
                    for e in range(comp_ent_ptr[g] + tid, e1, tpb):
                        bl = ent_blk[e]
                        acc_dot[bl] += w * np.float32(ent_code[e])
                        acc_q[bl] += w
                    if tid == 0:
                        cnt[4] += e1 - comp_ent_ptr[g]
                    cuda.syncthreads()
            off = cut_off[c]
            for x in range(tid, nbl, tpb):
                blk_score[qq, off + x] = sum_min[b0 + x] * acc_q[x] + sum_step[b0 + x] * acc_dot[x]
                blk_id[qq, off + x] = b0 + x
            cuda.syncthreads()
        cuda.syncthreads()
        if stages == 1:
            return
        # 2. phase A: the first_blocks best blocks with a positive score; (ps, pi) = the last of them
        nf = min(first_blocks, nb, cand_s.shape[1])
        topk(blk_score[qq], nb, nf, 0, cand_s[qq, :nf], cand_i[qq, :nf], red_s, red_i)
        cuda.syncthreads()
        ps = POS
        pi = np.int64(-1)
        for r in range(nf):
            if cand_i[qq, r] >= 0:
                ps = cand_s[qq, r]
                pi = np.int64(cand_i[qq, r])
        cuda.syncthreads()
        for g in range(tid, nb, tpb):
            if not _better(ps, pi, blk_score[qq, g], np.int64(g)):
                _collect(blk_id[qq, g], blk_doc_ptr, blk_docs, visited, qq, todo, cnt)
                cuda.atomic.add(cnt, 5, 1)
        cuda.syncthreads()
        _rescore(cnt[0], NEG, fwd_ptr, fwd_idx, fwd_val, qbits, qpos, qv, qq, todo, cand_s, cand_i, cnt, part)
        theta = _select(cand_s[qq], cand_i[qq], cnt[1], False, k, 0, out_s[q], out_i[q], red_s, red_i, tpb)
        if stages == 2:
            return
        # 3. phase B: the remaining blocks whose summary score reaches heap_factor * theta
        thr = heap_factor * theta
        if tid == 0:
            cnt[6] = cnt[0]
            cnt[0] = 0
        cuda.syncthreads()
        for g in range(tid, nb, tpb):
            s = blk_score[qq, g]
            if s >= thr and _better(ps, pi, s, np.int64(g)):
                _collect(blk_id[qq, g], blk_doc_ptr, blk_docs, visited, qq, todo, cnt)
                cuda.atomic.add(cnt, 5, 1)
        cuda.syncthreads()
        _rescore(cnt[0], theta, fwd_ptr, fwd_idx, fwd_val, qbits, qpos, qv, qq, todo, cand_s, cand_i, cnt, part)
        # 4. the final top k
        _select(cand_s[qq], cand_i[qq], cnt[1], False, k, 0, out_s[q], out_i[q], red_s, red_i, tpb)
        if tid == 0:
            stats[q, 0] = nb
            stats[q, 1] = cnt[4]
            stats[q, 2] = cnt[5]
            stats[q, 3] = cnt[6] + cnt[0]
            stats[q, 4] = cnt[2]
            stats[q, 5] = cnt[3]

    return kernel


def n_words(n_docs: int) -> int:
    return max(1, math.ceil(n_docs / 32))
