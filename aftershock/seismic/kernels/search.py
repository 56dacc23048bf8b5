"""Seismic search: summary scores of the query's heaviest posting lists, best-first block visiting with a
``heap_factor`` cut, exact rescoring from the forward index, optional kNN-graph refinement.

Kernels take the index's arrays as one `SeismicArrays` (``ix``) and read its fields by name.

Filtering in the heap: ``allowed`` is a uint8 array with one entry per document row (0 = excluded), or an
empty array for no filter. Excluded documents are never scored nor pushed, so the heap holds only allowed
rows and its k-th score (which drives the ``heap_factor`` cut) is the k-th best *allowed* score; blocks are
still chosen by their summaries, and kNN refinement skips excluded neighbours as well.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from aftershock.seismic.kernels.memory import line_step, prefetch, value_at
from aftershock.seismic.kernels.topk import heap_pop, heap_push, heap_sorted_into, heapify_blocks, knn_refine


@numba.njit(inline="always")
def _doc_dot(fwd_ptr, fwd_idx, fwd_val, lut, d, qdense):
    s = np.float32(0.0)
    for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
        s += qdense[fwd_idx[j]] * value_at(fwd_val, j, lut)
    return s


@numba.njit(inline="always")
def query_lists(qi, qv, query_cut, term_blk_ptr, qdense):
    """Scatter the query into ``qdense``; return its ``query_cut`` heaviest terms (heaviest first, ties by
    position), whose posting lists the search visits, and the total number of blocks in those lists."""
    for j in range(qi.shape[0]):
        qdense[qi[j]] = qv[j]
    order = np.argsort(-qv, kind="mergesort")
    lists = np.empty(min(query_cut, qi.shape[0]), np.int64)
    nblocks = 0
    for a in range(lists.shape[0]):
        t = np.int64(qi[order[a]])
        lists[a] = t
        nblocks += term_blk_ptr[t + 1] - term_blk_ptr[t]
    return lists, nblocks


@numba.njit(inline="always")
def _mark_visited(vbits, touched, n_touched, d):
    """Set doc d's bit; returns the new touched count, or -1 when d was already visited."""
    wd = d >> 6
    bit = np.uint64(1) << np.uint64(d & 63)
    if vbits[wd] & bit:
        return -1
    vbits[wd] |= bit
    touched[n_touched] = d
    return n_touched + 1


@numba.njit(inline="always")
def _excluded(allowed, d):
    """Doc d is filtered out (``allowed`` empty = no filter)."""
    return allowed.shape[0] > 0 and allowed[d] == 0


@numba.njit(inline="always")
def _fresh_doc(ctx, n_touched, d):
    """`knn_refine`'s ``fresh`` over (vbits, touched, fwd_ptr, fwd_idx, fwd_val, lut, qdense, allowed):
    -1 for a document already scored or filtered out."""
    if _excluded(ctx[7], d):
        return -1
    return _mark_visited(ctx[0], ctx[1], n_touched, d)


@numba.njit(inline="always")
def _score_doc(ctx, d):
    """`knn_refine`'s ``score``: the exact dot product from the forward index."""
    return _doc_dot(ctx[2], ctx[3], ctx[4], ctx[5], d, ctx[6])


@numba.njit(inline="always")
def _prefetch_doc(fwd_ptr, fwd_idx, fwd_val, d):
    """Every cache line of doc d's forward entries (its terms and values)."""
    a0 = fwd_ptr[d]
    e = fwd_ptr[d + 1]
    step = line_step(fwd_idx, fwd_val)
    a = a0
    while a < e:
        prefetch(fwd_idx, a)
        prefetch(fwd_val, a)
        a += step
    if e > a0:  # the start is not line-aligned: the last line may still be missing
        prefetch(fwd_idx, e - 1)
        prefetch(fwd_val, e - 1)


@numba.njit
def _score_list_summaries(ix, t, qdense, acc_dot, acc_q, bs, bi, n):
    """Summary scores of posting list t's blocks against the dense query, appended to (bs, bi) from n.

    Summaries are stored component-major per list (the format is written and decoded in `summaries`): for
    each summary term (ascending), its entry count (uint8; 255 = read the count from ``ovf_cnt``), then its
    entries as (block delta, code) byte pairs, blocks ascending; a delta of 0 is a skip of 255 blocks.
    """
    comp_cnt, comp_ids, ovf_cnt, ent_delta, ent_code = ix.comp_cnt, ix.comp_ids, ix.ovf_cnt, ix.ent_delta, ix.ent_code
    b0 = ix.term_blk_ptr[t]
    nbl = ix.term_blk_ptr[t + 1] - b0
    if nbl == 0:
        return n
    acc_dot[:nbl] = 0.0
    acc_q[:nbl] = 0.0
    ov = ix.ovf_list_ptr[t]
    s1 = ix.ent_list_ptr[t]
    for g in range(ix.comp_list_ptr[t], ix.comp_list_ptr[t + 1]):
        # summaries' `_entry_count` and `_step_block` written out by hand: the hottest loop, measurably faster
        cnt = np.int64(comp_cnt[g])
        if cnt == 255:
            cnt = np.int64(ovf_cnt[ov])
            ov += 1
        s0 = s1
        s1 = s0 + cnt
        w = qdense[comp_ids[g]]
        if w == 0.0:
            continue
        bl = -1
        for x in range(s0, s1):
            dl = np.int64(ent_delta[x])
            if dl == 0:
                bl += 255
                continue
            bl += dl
            acc_dot[bl] += w * np.float32(ent_code[x])
            acc_q[bl] += w
    sum_min, sum_step = ix.sum_min, ix.sum_step
    for bl in range(nbl):
        bs[n] = sum_min[b0 + bl] * acc_q[bl] + sum_step[b0 + bl] * acc_dot[bl]
        bi[n] = b0 + bl
        n += 1
    return n


@numba.njit
def seismic_search_one(ix, qi, qv, k, query_cut, heap_factor, n_knn, allowed, scratch, out_s, out_i, stats):
    """One query: best-first block visiting with summary pruning, then optional kNN refinement.

    ``ix`` is the index's `SeismicArrays`; ``allowed`` the row filter (uint8 per row, or empty: none);
    ``scratch`` one thread's reusable buffers (dense query, visited bitset, touched list, two block
    accumulators), all left zeroed on return.
    """
    fwd_ptr, fwd_idx, fwd_val, lut = ix.fwd_ptr, ix.fwd_idx, ix.fwd_val, ix.lut
    blk_doc_ptr, blk_docs, knn = ix.blk_doc_ptr, ix.blk_docs, ix.knn
    qdense, vbits, touched, acc_dot, acc_q = scratch
    nq = qi.shape[0]
    if nq == 0:
        return
    lists, nblocks = query_lists(qi, qv, query_cut, ix.term_blk_ptr, qdense)
    bs = np.empty(nblocks, np.float32)
    bi = np.empty(nblocks, np.int64)
    n = 0
    for t in lists:
        n = _score_list_summaries(ix, t, qdense, acc_dot, acc_q, bs, bi, n)
    stats[0] += n
    heapify_blocks(bs, bi, n)
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    size = 0
    n_touched = 0
    while n > 0:
        if size == k and bs[0] < heap_factor * hs[0]:
            break
        b, n = heap_pop(bs, bi, n)
        p0 = blk_doc_ptr[b]
        p1 = blk_doc_ptr[b + 1]
        # forward vectors are random accesses: fetch doc p+2's lines now, and the offsets of doc p+4
        # (filtered out: never read, so never fetched)
        for p in range(p0, min(p0 + 2, p1)):
            if not _excluded(allowed, blk_docs[p]):
                _prefetch_doc(fwd_ptr, fwd_idx, fwd_val, blk_docs[p])
        for p in range(p0, p1):
            if p + 4 < p1:
                prefetch(fwd_ptr, blk_docs[p + 4])
            if p + 2 < p1 and not _excluded(allowed, blk_docs[p + 2]):
                _prefetch_doc(fwd_ptr, fwd_idx, fwd_val, blk_docs[p + 2])
            d = blk_docs[p]
            if _excluded(allowed, d):
                continue
            m = _mark_visited(vbits, touched, n_touched, d)
            if m < 0:
                continue
            n_touched = m
            s = _doc_dot(fwd_ptr, fwd_idx, fwd_val, lut, d, qdense)
            size = heap_push(hs, hi, size, k, s, d)
            stats[2] += 1
        stats[1] += 1
    if n_knn > 0 and knn.shape[1] > 0:
        ctx = (vbits, touched, fwd_ptr, fwd_idx, fwd_val, lut, qdense, allowed)
        size, n_touched, _ = knn_refine(knn, n_knn, 1, np.zeros(0, np.int64), 0, hs, hi, size, k, _fresh_doc,
                                        _score_doc, ctx, n_touched)
    for j in range(nq):
        qdense[qi[j]] = 0.0
    for j in range(n_touched):
        vbits[touched[j] >> 6] = 0
    heap_sorted_into(hs, hi, size, out_s, out_i)


@numba.njit
def _seismic_chunk(c, n_chunks, ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, allowed, out_s, out_i,
                   stats, scratch):
    """Queries c, c + n_chunks, ... with one thread's scratch."""
    for q in range(c, q_ptr.shape[0] - 1, n_chunks):
        a, b = q_ptr[q], q_ptr[q + 1]
        seismic_search_one(ix, q_idx[a:b], q_val[a:b], k, query_cut, heap_factor, n_knn, allowed, scratch,
                           out_s[q], out_i[q], stats[q])


@numba.njit(parallel=True, cache=True, nogil=True)
def seismic_search_batch(ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, allowed, n_chunks, out_s,
                         out_i, stats, qdense, vbits, touched, acc_dot, acc_q):
    """A batch over ``n_chunks`` threads; scratch rows (one per thread) are reused across calls."""
    for c in prange(n_chunks):
        _seismic_chunk(c, n_chunks, ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, allowed, out_s,
                       out_i, stats, (qdense[c], vbits[c], touched[c], acc_dot[c], acc_q[c]))


@numba.njit(cache=True, nogil=True)
def seismic_search_serial(ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, allowed, out_s, out_i, stats,
                          qdense, vbits, touched, acc_dot, acc_q):
    """Same as the batch on one thread, without the parallel launch (single queries, low latency)."""
    _seismic_chunk(0, 1, ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, allowed, out_s, out_i, stats,
                   (qdense[0], vbits[0], touched[0], acc_dot[0], acc_q[0]))


# ---------------------------------------------------------------------------------------------- a few rows, exactly
@numba.njit
def _rows_exact_chunk(c, n_chunks, fwd_ptr, fwd_idx, fwd_val, lut, rows, q_ptr, q_idx, q_val, k, out_s, out_i,
                      qdense):
    """Queries c, c + n_chunks, ...: the exact top-k over ``rows`` only (scores <= 0 are no hits)."""
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    for q in range(c, q_ptr.shape[0] - 1, n_chunks):
        a, b = q_ptr[q], q_ptr[q + 1]
        for j in range(a, b):
            qdense[q_idx[j]] = q_val[j]
        size = 0
        for r in rows:
            s = _doc_dot(fwd_ptr, fwd_idx, fwd_val, lut, r, qdense)
            if s > 0:
                size = heap_push(hs, hi, size, k, s, r)
        for j in range(a, b):
            qdense[q_idx[j]] = 0.0
        heap_sorted_into(hs, hi, size, out_s[q], out_i[q])


@numba.njit(parallel=True, cache=True, nogil=True)
def rows_exact_batch(fwd_ptr, fwd_idx, fwd_val, lut, rows, q_ptr, q_idx, q_val, k, n_chunks, out_s, out_i, qdense):
    """Exact top-k of each query over the document ``rows`` of a forward index (a filter's small allowed set:
    one dot product per row, no copy of the rows), over ``n_chunks`` threads (``qdense``: one zeroed dense
    row per thread, left zeroed)."""
    for c in prange(n_chunks):
        _rows_exact_chunk(c, n_chunks, fwd_ptr, fwd_idx, fwd_val, lut, rows, q_ptr, q_idx, q_val, k, out_s, out_i,
                          qdense[c])


@numba.njit(cache=True, nogil=True)
def rows_exact_serial(fwd_ptr, fwd_idx, fwd_val, lut, rows, q_ptr, q_idx, q_val, k, out_s, out_i, qdense):
    """`rows_exact_batch` on one thread, without the parallel launch (single queries)."""
    _rows_exact_chunk(0, 1, fwd_ptr, fwd_idx, fwd_val, lut, rows, q_ptr, q_idx, q_val, k, out_s, out_i, qdense[0])
