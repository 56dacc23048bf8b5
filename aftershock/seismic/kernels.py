"""Numba CPU kernels: plain loops over flat typed arrays, the reference for every other backend.

Forward values are stored either as float32 or as float16 *bits* (uint16) decoded through a
65,536-entry lookup table (Numba has no float16 arithmetic on the CPU).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

F16_LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)


def value_at(values, j, lut):  # pragma: no cover - replaced by the overload inside jitted code
    return lut[values[j]] if values.dtype == np.uint16 else np.float32(values[j])


@overload(value_at, inline="always")
def _value_at_impl(values, j, lut):
    if isinstance(values, types.Array) and values.dtype == types.uint16:
        return lambda values, j, lut: lut[values[j]]
    return lambda values, j, lut: np.float32(values[j])


def line_step(a, b):  # pragma: no cover - replaced by the overload inside jitted code
    return 64 // max(a.itemsize, b.itemsize)


@overload(line_step, inline="always")
def _line_step_impl(a, b):
    """Entries of the wider of two arrays per 64-byte cache line, as a compile-time constant."""
    n = 64 // max(a.dtype.bitwidth // 8, b.dtype.bitwidth // 8)
    return lambda a, b: n


@intrinsic
def prefetch(typingctx, arr, i):
    """Hint the CPU to fetch ``arr[i]`` into cache (llvm.prefetch, read, high locality)."""
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False, boundscheck=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------------------------------------------------- top-k heap
@numba.njit(inline="always")
def _worse(s1, i1, s2, i2):
    """True when (s1, i1) ranks below (s2, i2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@numba.njit(inline="always")
def _sift_down(hs, hi, size, pos):
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            break


@numba.njit(inline="always")
def heap_push(hs, hi, size, k, score, doc):
    """Offer (score, doc) to a min-heap holding the best k; returns the new size."""
    if size < k:
        pos = size
        hs[pos] = score
        hi[pos] = doc
        while pos > 0:
            parent = (pos - 1) // 2
            if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return size + 1
    if _worse(hs[0], hi[0], score, doc):
        hs[0] = score
        hi[0] = doc
        _sift_down(hs, hi, size, 0)
    return size


@numba.njit
def heap_sorted_into(hs, hi, size, out_s, out_i):
    """Empty the heap into out_* best-first (score desc, id asc); the rest stays padded."""
    while size > 0:
        size -= 1
        out_s[size] = hs[0]
        out_i[size] = hi[0]
        hs[0] = hs[size]
        hi[0] = hi[size]
        _sift_down(hs, hi, size, 0)


# ------------------------------------------------------------------------------------------- exact search
@numba.njit(parallel=True, cache=True, nogil=True)
def exact_search_batch(inv_ptr, inv_docs, inv_vals, n_docs, q_ptr, q_idx, q_val, k, n_chunks, out_s, out_i):
    """Term-at-a-time scoring over the full inverted index; exact top-k per query."""
    nq = q_ptr.shape[0] - 1
    for c in prange(n_chunks):
        acc = np.zeros(n_docs, np.float32)
        seen = np.zeros(n_docs, np.uint8)
        touched = np.empty(n_docs, np.int64)
        hs = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        for q in range(c, nq, n_chunks):
            nt = 0
            for j in range(q_ptr[q], q_ptr[q + 1]):
                t = q_idx[j]
                w = q_val[j]
                for p in range(inv_ptr[t], inv_ptr[t + 1]):
                    d = inv_docs[p]
                    if seen[d] == 0:
                        seen[d] = 1
                        touched[nt] = d
                        nt += 1
                    acc[d] += w * inv_vals[p]
            size = 0
            for x in range(nt):
                d = touched[x]
                size = heap_push(hs, hi, size, k, acc[d], d)
                acc[d] = 0.0
                seen[d] = 0
            heap_sorted_into(hs, hi, size, out_s[q], out_i[q])


# ------------------------------------------------------------------------------------------- seismic search
@numba.njit(inline="always")
def _doc_dot(fwd_ptr, fwd_idx, fwd_val, lut, d, qdense):
    s = np.float32(0.0)
    for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
        s += qdense[fwd_idx[j]] * value_at(fwd_val, j, lut)
    return s


@numba.njit(inline="always")
def _block_sift_down(bs, bi, size, pos):
    """Max-heap on bs (best block on top)."""
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and bs[left + 1] > bs[left]:
            child = left + 1
        if bs[child] > bs[pos]:
            bs[pos], bs[child] = bs[child], bs[pos]
            bi[pos], bi[child] = bi[child], bi[pos]
            pos = child
        else:
            break


@numba.njit(inline="always")
def heapify_blocks(bs, bi, n):
    """Make (bs, bi)[:n] a max-heap on bs (the best block on top)."""
    for p in range(n // 2 - 1, -1, -1):
        _block_sift_down(bs, bi, n, p)


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


@numba.njit(inline="always")
def _entry_count(comp_cnt, ovf_cnt, g, ov):
    """Entries of summary component g (skip markers included) and the list's next overflow position."""
    cnt = np.int64(comp_cnt[g])
    if cnt == 255:
        return np.int64(ovf_cnt[ov]), ov + 1
    return cnt, ov


@numba.njit(inline="always")
def _step_block(ent_delta, x, bl):
    """The block cursor after entry x, and whether x is a real entry (False: a skip of 255 blocks)."""
    dl = np.int64(ent_delta[x])
    if dl == 0:
        return bl + 255, False
    return bl + dl, True


@numba.njit
def _score_list_summaries(ix, t, qdense, acc_dot, acc_q, bs, bi, n):
    """Summary scores of posting list t's blocks against the dense query, appended to (bs, bi) from n.

    Summaries are stored component-major per list: for each summary term (ascending), its entry count
    (uint8; 255 = read the count from ``ovf_cnt``), then its entries as (block delta, code) byte pairs,
    blocks ascending; a delta of 0 is a skip of 255 blocks without an entry.
    """
    (fwd_ptr, fwd_idx, fwd_val, lut, term_blk_ptr, blk_doc_ptr, blk_docs, comp_list_ptr, comp_ids, comp_cnt,
     ovf_list_ptr, ovf_cnt, ent_list_ptr, ent_delta, ent_code, sum_min, sum_step, knn) = ix
    b0 = term_blk_ptr[t]
    nbl = term_blk_ptr[t + 1] - b0
    if nbl == 0:
        return n
    acc_dot[:nbl] = 0.0
    acc_q[:nbl] = 0.0
    ov = ovf_list_ptr[t]
    s1 = ent_list_ptr[t]
    for g in range(comp_list_ptr[t], comp_list_ptr[t + 1]):
        # `_entry_count` and `_step_block` written out by hand: the hottest loop, measurably faster so
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
    for bl in range(nbl):
        bs[n] = sum_min[b0 + bl] * acc_q[bl] + sum_step[b0 + bl] * acc_dot[bl]
        bi[n] = b0 + bl
        n += 1
    return n


@numba.njit
def seismic_search_one(ix, qi, qv, k, query_cut, heap_factor, n_knn, scratch, out_s, out_i, stats):
    """One query: best-first block visiting with summary pruning, then optional kNN refinement.

    ``ix`` is the index's array tuple (see ``SeismicIndex.kernel_arrays``); ``scratch`` one thread's reusable
    buffers (dense query, visited bitset, touched list, two block accumulators), all left zeroed on return.
    """
    (fwd_ptr, fwd_idx, fwd_val, lut, term_blk_ptr, blk_doc_ptr, blk_docs, comp_list_ptr, comp_ids, comp_cnt,
     ovf_list_ptr, ovf_cnt, ent_list_ptr, ent_delta, ent_code, sum_min, sum_step, knn) = ix
    qdense, vbits, touched, acc_dot, acc_q = scratch
    nq = qi.shape[0]
    if nq == 0:
        return
    lists, nblocks = query_lists(qi, qv, query_cut, term_blk_ptr, qdense)
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
        b = bi[0]
        n -= 1
        bs[0] = bs[n]
        bi[0] = bi[n]
        _block_sift_down(bs, bi, n, 0)
        p0 = blk_doc_ptr[b]
        p1 = blk_doc_ptr[b + 1]
        # forward vectors are random accesses: fetch doc p+2's lines now, and the offsets of doc p+4
        for p in range(p0, min(p0 + 2, p1)):
            _prefetch_doc(fwd_ptr, fwd_idx, fwd_val, blk_docs[p])
        for p in range(p0, p1):
            if p + 4 < p1:
                prefetch(fwd_ptr, blk_docs[p + 4])
            if p + 2 < p1:
                _prefetch_doc(fwd_ptr, fwd_idx, fwd_val, blk_docs[p + 2])
            d = blk_docs[p]
            m = _mark_visited(vbits, touched, n_touched, d)
            if m < 0:
                continue
            n_touched = m
            s = _doc_dot(fwd_ptr, fwd_idx, fwd_val, lut, d, qdense)
            size = heap_push(hs, hi, size, k, s, d)
            stats[2] += 1
        stats[1] += 1
    if n_knn > 0 and knn.shape[1] > 0:
        m = min(n_knn, knn.shape[1])
        found = hi[:size].copy()
        for x in range(found.shape[0]):
            for j in range(m):
                d = knn[found[x], j]
                if d < 0:
                    continue
                nt2 = _mark_visited(vbits, touched, n_touched, d)
                if nt2 < 0:
                    continue
                n_touched = nt2
                s = _doc_dot(fwd_ptr, fwd_idx, fwd_val, lut, d, qdense)
                size = heap_push(hs, hi, size, k, s, d)
    for j in range(nq):
        qdense[qi[j]] = 0.0
    for j in range(n_touched):
        vbits[touched[j] >> 6] = 0
    heap_sorted_into(hs, hi, size, out_s, out_i)


@numba.njit
def _seismic_chunk(c, n_chunks, ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, out_s, out_i, stats,
                   scratch):
    """Queries c, c + n_chunks, ... with one thread's scratch."""
    for q in range(c, q_ptr.shape[0] - 1, n_chunks):
        a, b = q_ptr[q], q_ptr[q + 1]
        seismic_search_one(ix, q_idx[a:b], q_val[a:b], k, query_cut, heap_factor, n_knn, scratch, out_s[q],
                           out_i[q], stats[q])


@numba.njit(parallel=True, cache=True, nogil=True)
def seismic_search_batch(ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, n_chunks, out_s, out_i,
                         stats, qdense, vbits, touched, acc_dot, acc_q):
    """A batch over ``n_chunks`` threads; scratch rows (one per thread) are reused across calls."""
    for c in prange(n_chunks):
        _seismic_chunk(c, n_chunks, ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, out_s, out_i,
                       stats, (qdense[c], vbits[c], touched[c], acc_dot[c], acc_q[c]))


@numba.njit(cache=True, nogil=True)
def seismic_search_serial(ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, out_s, out_i, stats,
                          qdense, vbits, touched, acc_dot, acc_q):
    """Same as the batch on one thread, without the parallel launch (single queries, low latency)."""
    _seismic_chunk(0, 1, ix, q_ptr, q_idx, q_val, k, query_cut, heap_factor, n_knn, out_s, out_i, stats,
                   (qdense[0], vbits[0], touched[0], acc_dot[0], acc_q[0]))


# ------------------------------------------------------------------------------------------- build: pruning
@numba.njit(parallel=True, cache=True)
def prune_count(inv_ptr, inv_vals, threshold, cap):
    dim = inv_ptr.shape[0] - 1
    counts = np.zeros(dim, np.int64)
    for t in prange(dim):
        c = 0
        for p in range(inv_ptr[t], inv_ptr[t + 1]):
            if inv_vals[p] >= threshold:
                c += 1
        counts[t] = min(c, cap)
    return counts


@numba.njit(parallel=True, cache=True)
def prune_fill(inv_ptr, inv_docs, inv_vals, threshold, new_ptr, out_docs, out_vals):
    """Keep, per list, the heaviest postings >= threshold up to the list's count (docs ascending)."""
    dim = inv_ptr.shape[0] - 1
    for t in prange(dim):
        a, b = inv_ptr[t], inv_ptr[t + 1]
        keep = new_ptr[t + 1] - new_ptr[t]
        if keep == 0:
            continue
        vals = inv_vals[a:b]
        order = np.argsort(-vals, kind="mergesort")[:keep]
        order.sort()
        o = new_ptr[t]
        for x in range(keep):
            out_docs[o + x] = inv_docs[a + order[x]]
            out_vals[o + x] = vals[order[x]]


# ------------------------------------------------------------------------------------------- build: blocking
@numba.njit
def _centroid_postings(cent_ptr, cent_docs, scale, fwd_ptr, fwd_idx, fwd_val, lut, dense, tstart, tend):
    """Invert centroids given as weighted sums of documents: centroid c = scale[c] * sum of the forward
    vectors of ``cent_docs[cent_ptr[c]:cent_ptr[c + 1]]`` (c with scale 0 is left out).

    Returns (ent_c, ent_v) ordered by term, centroids ascending within a term; ``tstart[t]`` (1-based,
    0 = absent) and ``tend[t]`` (count) locate term t's run. ``dense`` (zeroed) is scratch, left zeroed;
    tstart/tend must be cleared with `_clear_postings` after use.
    """
    nc = cent_ptr.shape[0] - 1
    n_ent = 0
    for c in range(nc):
        if scale[c] != 0.0:
            for y in range(cent_ptr[c], cent_ptr[c + 1]):
                n_ent += fwd_ptr[cent_docs[y] + 1] - fwd_ptr[cent_docs[y]]
    ent_t = np.empty(n_ent, np.int64)
    ent_c = np.empty(n_ent, np.int64)
    ent_v = np.empty(n_ent, np.float32)
    e = 0
    for c in range(nc):
        if scale[c] == 0.0:
            continue
        e0 = e
        for y in range(cent_ptr[c], cent_ptr[c + 1]):  # union of the members' terms, summed in `dense`
            d = cent_docs[y]
            for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
                t = np.int64(fwd_idx[j])
                if dense[t] == 0.0:
                    ent_t[e] = t
                    e += 1
                dense[t] += value_at(fwd_val, j, lut)
        for x in range(e0, e):
            t = ent_t[x]
            ent_c[x] = c
            ent_v[x] = dense[t] * scale[c]
            dense[t] = 0.0
            tend[t] += 1
    srt = np.argsort(ent_t[:e], kind="mergesort")
    out_c = np.empty(e, np.int64)
    out_v = np.empty(e, np.float32)
    for x in range(e):
        out_c[x] = ent_c[srt[x]]
        out_v[x] = ent_v[srt[x]]
        t = ent_t[srt[x]]
        if tstart[t] == 0:
            tstart[t] = x + 1
    return out_c, out_v


@numba.njit
def _clear_postings(cent_ptr, cent_docs, fwd_ptr, fwd_idx, tstart, tend):
    for y in range(cent_docs.shape[0]):
        d = cent_docs[y]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            tstart[fwd_idx[j]] = 0
            tend[fwd_idx[j]] = 0


@numba.njit
def _assign(docs, ent_c, ent_v, tstart, tend, first, cut_ptr, cut_idx, cut_val, acc, touched, best, best_s, only):
    """For each doc (mask ``only`` if non-empty), the centroid with the highest dot product with its
    doc_cut approximation, over inverted centroids: a doc meets only the centroids sharing one of its
    doc_cut terms. Sums run in doc_cut order, as a plain dot product would; ties go to the lower centroid;
    a doc that meets no centroid goes to ``first`` (every centroid scores 0 there)."""
    for x in range(docs.shape[0]):
        if only.shape[0] > 0 and not only[x]:
            continue
        d = docs[x]
        nt = 0
        for j in range(cut_ptr[d], cut_ptr[d + 1]):
            t = cut_idx[j]
            w = cut_val[j]
            s0 = tstart[t] - 1
            if s0 < 0:
                continue
            for y in range(s0, s0 + tend[t]):
                c = ent_c[y]
                if acc[c] == 0.0:
                    touched[nt] = c
                    nt += 1
                acc[c] += ent_v[y] * w
        bs = best_s[x]
        bc = best[x]
        if nt == 0 and bs < 0.0:
            bs = np.float32(0.0)
            bc = first
        for y in range(nt):
            c = touched[y]
            s = acc[c]
            acc[c] = 0.0
            if s > bs or (s == bs and c < bc):
                bs = s
                bc = c
        best_s[x] = bs
        best[x] = bc


@numba.njit
def _assign_to(docs, cent_ptr, cent_docs, scale, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val,
               dense, tstart, tend, best, best_s, only):
    """`_assign` to centroids given as weighted document sums (see `_centroid_postings`)."""
    nc = cent_ptr.shape[0] - 1
    first = -1
    for c in range(nc):
        if scale[c] != 0.0:
            first = c
            break
    if first < 0:
        return
    ent_c, ent_v = _centroid_postings(cent_ptr, cent_docs, scale, fwd_ptr, fwd_idx, fwd_val, lut, dense, tstart,
                                      tend)
    acc = np.zeros(nc, np.float32)
    touched = np.empty(nc, np.int64)
    _assign(docs, ent_c, ent_v, tstart, tend, first, cut_ptr, cut_idx, cut_val, acc, touched, best, best_s, only)
    _clear_postings(cent_ptr, cent_docs, fwd_ptr, fwd_idx, tstart, tend)


@numba.njit
def _cluster_list(docs, n_cent, min_cluster_size, kmeans_iters, max_block, seed, fwd_ptr, fwd_idx, fwd_val, lut,
                  cut_ptr, cut_idx, cut_val, dense, tstart, tend):
    """Cluster one posting list; returns a cluster label per doc (labels compacted to 0..nc-1).

    Seismic's one-shot clustering: ``n_cent`` random member docs are the centroids, each doc joins the one
    with the highest doc_cut dot product. With ``kmeans_iters`` > 0, spherical k-means rounds follow: each
    centroid becomes its members' L2-normalised sum (the mean's direction), and docs are reassigned by dot
    product with those unit centroids, so no centroid attracts docs merely by having a large norm.
    Clusters smaller than ``min_cluster_size`` are then dissolved into the nearest surviving centroid, and
    with ``max_block`` > 0 clusters larger than it are split (`_split_large`).
    """
    m = docs.shape[0]
    labels = np.zeros(m, np.int64)
    if n_cent <= 1 or m <= min_cluster_size:
        return labels, 1
    np.random.seed(seed)
    perm = np.arange(m)
    for i in range(n_cent):  # partial Fisher-Yates: n_cent distinct random docs as centroids
        j = i + np.random.randint(0, m - i)
        perm[i], perm[j] = perm[j], perm[i]
    cent_ptr = np.arange(n_cent + 1)
    cent_docs = docs[perm[:n_cent]].copy()
    scale = np.ones(n_cent, np.float32)
    none = np.zeros(0, np.bool_)
    best_s = np.full(m, -1.0, np.float32)
    _assign_to(docs, cent_ptr, cent_docs, scale, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val, dense,
               tstart, tend, labels, best_s, none)
    counts = np.zeros(n_cent, np.int64)
    for it in range(kmeans_iters + 1):
        counts[:] = 0
        for x in range(m):
            counts[labels[x]] += 1
        if it == kmeans_iters:
            break
        cent_ptr = np.zeros(n_cent + 1, np.int64)
        for c in range(n_cent):
            cent_ptr[c + 1] = cent_ptr[c] + counts[c]
        cent_docs = docs[np.argsort(labels, kind="mergesort")]
        for c in range(n_cent):  # 1 / ||sum of members||: the sum's entries, squared, from a dense scatter
            sq = 0.0
            for y in range(cent_ptr[c], cent_ptr[c + 1]):
                d = cent_docs[y]
                for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
                    dense[fwd_idx[j]] += value_at(fwd_val, j, lut)
            for y in range(cent_ptr[c], cent_ptr[c + 1]):
                d = cent_docs[y]
                for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
                    v = dense[fwd_idx[j]]
                    sq += v * v
                    dense[fwd_idx[j]] = 0.0
            scale[c] = np.float32(1.0 / np.sqrt(sq)) if sq > 0 else np.float32(0.0)
        best_s[:] = -1.0
        _assign_to(docs, cent_ptr, cent_docs, scale, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val,
                   dense, tstart, tend, labels, best_s, none)
    # dissolve clusters smaller than min_cluster_size into their members' best surviving centroid
    orphan = np.zeros(m, np.bool_)
    n_orphan = 0
    n_alive = 0
    for c in range(n_cent):
        if counts[c] >= min_cluster_size:
            n_alive += 1
        else:
            scale[c] = 0.0
    if n_alive == 0:
        labels[:] = 0
        return labels, 1
    for x in range(m):
        if counts[labels[x]] < min_cluster_size:
            orphan[x] = True
            n_orphan += 1
            best_s[x] = -1.0
    if n_orphan > 0:
        _assign_to(docs, cent_ptr, cent_docs, scale, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val,
                   dense, tstart, tend, labels, best_s, orphan)
    n_lab = n_cent
    if max_block > 0:
        for _ in range(16):  # split until no cluster is too large (a few rounds at most in practice) ...
            labels, n_new = _split_large(docs, labels, n_lab, max_block, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr,
                                         cut_idx, cut_val, dense, tstart, tend)
            if n_new == n_lab:
                break
            n_lab = n_new
        labels, n_lab = _chunk_large(labels, n_lab, max_block)  # ... and cut what a split could not separate
    return _compact_labels(labels, n_lab)


@numba.njit
def _chunk_large(labels, n_lab, max_block):
    """Members beyond the first ``max_block`` of a cluster move to new clusters of ``max_block``."""
    seen = np.zeros(n_lab, np.int64)
    extra = np.full(n_lab, -1, np.int64)
    n_new = n_lab
    for x in range(labels.shape[0]):
        c = labels[x]
        if c >= n_lab:
            continue
        s = seen[c]
        seen[c] += 1
        if s >= max_block:
            if s % max_block == 0:
                extra[c] = n_new
                n_new += 1
            labels[x] = extra[c]
    return labels, n_new


@numba.njit
def _compact_labels(labels, n_lab):
    """Renumber the non-empty labels 0..nc-1 in their order; returns (labels, nc)."""
    sizes = np.zeros(n_lab, np.int64)
    for x in range(labels.shape[0]):
        sizes[labels[x]] += 1
    remap = np.full(n_lab, -1, np.int64)
    nc = 0
    for c in range(n_lab):
        if sizes[c] > 0:
            remap[c] = nc
            nc += 1
    for x in range(labels.shape[0]):
        labels[x] = remap[labels[x]]
    return labels, nc


@numba.njit
def _split_large(docs, labels, n_lab, max_block, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val, dense,
                 tstart, tend):
    """Re-cluster every cluster of more than ``max_block`` docs the same way (ceil(size / max_block) random
    member seeds, doc_cut dot-product assignment): a large block's summary is the max over many documents,
    so it rarely prunes, and each visit rescores all of them. Returns (labels, number of labels)."""
    sizes = np.zeros(n_lab, np.int64)
    for x in range(labels.shape[0]):
        sizes[labels[x]] += 1
    order = np.argsort(labels, kind="mergesort")
    start = np.zeros(n_lab + 1, np.int64)
    for c in range(n_lab):
        start[c + 1] = start[c] + sizes[c]
    n_new = n_lab
    none = np.zeros(0, np.bool_)
    for c in range(n_lab):
        size = sizes[c]
        if size <= max_block:
            continue
        pos = order[start[c]:start[c + 1]]
        mem = docs[pos]
        nsub = (size + max_block - 1) // max_block
        perm = np.arange(size)
        for i in range(nsub):
            j = i + np.random.randint(0, size - i)
            perm[i], perm[j] = perm[j], perm[i]
        sub = np.zeros(size, np.int64)
        sub_s = np.full(size, -1.0, np.float32)
        _assign_to(mem, np.arange(nsub + 1), mem[perm[:nsub]].copy(), np.ones(nsub, np.float32), fwd_ptr, fwd_idx,
                   fwd_val, lut, cut_ptr, cut_idx, cut_val, dense, tstart, tend, sub, sub_s, none)
        for i in range(size):
            if sub[i] > 0:
                labels[pos[i]] = n_new + sub[i] - 1
        n_new += nsub - 1
    return labels, n_new


@numba.njit(parallel=True, cache=True)
def block_lists(post_ptr, post_docs, fwd_ptr, fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val, dim,
                centroid_fraction, min_cluster_size, kmeans_iters, max_block, seed, order, n_chunks, out_docs,
                blk_sizes, n_blocks):
    """Cluster every posting list; docs reordered by (block, doc id) into out_docs, block sizes at post_ptr[t]."""
    n_terms = post_ptr.shape[0] - 1
    for c in prange(n_chunks):
        dense = np.zeros(dim, np.float32)
        tstart = np.zeros(dim, np.int64)
        tend = np.zeros(dim, np.int64)
        for o in range(c, n_terms, n_chunks):
            t = order[o]
            a, b = post_ptr[t], post_ptr[t + 1]
            m = b - a
            if m == 0:
                n_blocks[t] = 0
                continue
            docs = post_docs[a:b]
            n_cent = max(1, int(np.ceil(centroid_fraction * m)))
            labels, nc = _cluster_list(docs, n_cent, min_cluster_size, kmeans_iters, max_block, seed + t, fwd_ptr,
                                       fwd_idx, fwd_val, lut, cut_ptr, cut_idx, cut_val, dense, tstart, tend)
            key = labels * (np.int64(fwd_ptr.shape[0])) + docs.astype(np.int64)
            srt = np.argsort(key)
            for x in range(m):
                out_docs[a + x] = docs[srt[x]]
            sizes = np.zeros(nc, np.int64)
            for x in range(m):
                sizes[labels[x]] += 1
            for j in range(nc):
                blk_sizes[a + j] = sizes[j]
            n_blocks[t] = nc


@numba.njit(parallel=True, cache=True)
def doc_cut_arrays(fwd_ptr, fwd_idx, fwd_val, lut, doc_cut, cut_ptr, cut_idx, cut_val):
    """Each document's doc_cut heaviest entries (clustering works on this approximation)."""
    n = fwd_ptr.shape[0] - 1
    for d in prange(n):
        a, b = fwd_ptr[d], fwd_ptr[d + 1]
        vals = np.empty(b - a, np.float32)
        for j in range(a, b):
            vals[j - a] = value_at(fwd_val, j, lut)
        order = np.argsort(-vals, kind="mergesort")
        o = cut_ptr[d]
        for x in range(cut_ptr[d + 1] - o):
            cut_idx[o + x] = fwd_idx[a + order[x]]
            cut_val[o + x] = vals[order[x]]


# ------------------------------------------------------------------------------------------- build: summaries
@numba.njit
def _block_summary(blk_docs, a, b, fwd_ptr, fwd_idx, fwd_val, lut, dense, energy, out_t, out_v):
    """Coordinate-wise max of the block's docs, truncated to at least `energy` of its L1 mass.

    The heaviest entries are kept until their mass reaches ``energy`` x total; the cut is found with a
    256-bin histogram (O(n)) and a sort of the boundary bin only. Writes (term, value) pairs, returns the count.
    Zero weights never reach here (the build drops them), so 0 in ``dense`` means "not seen".
    """
    n = 0
    for p in range(a, b):
        d = blk_docs[p]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            t = fwd_idx[j]
            v = value_at(fwd_val, j, lut)
            if dense[t] == 0.0:
                out_t[n] = t
                n += 1
                dense[t] = v
            elif v > dense[t]:
                dense[t] = v
    mx = np.float32(0.0)
    total = 0.0
    for x in range(n):
        v = dense[out_t[x]]
        out_v[x] = v
        dense[out_t[x]] = 0.0
        total += v
        if v > mx:
            mx = v
    if n == 0 or mx <= 0:
        return n
    hist = np.zeros(256, np.float64)
    scale = np.float32(255.999) / mx
    for x in range(n):
        hist[int(out_v[x] * scale)] += out_v[x]
    target = energy * total
    acc = 0.0
    cut = 255
    while cut > 0:
        if acc + hist[cut] >= target:
            break
        acc += hist[cut]
        cut -= 1
    # whole bins above `cut` are kept; inside the boundary bin only the heaviest values still needed
    need = target - acc
    nb_ = 0
    for x in range(n):
        if int(out_v[x] * scale) == cut:
            nb_ += 1
    bvals = np.empty(nb_, np.float32)
    i = 0
    for x in range(n):
        if int(out_v[x] * scale) == cut:
            bvals[i] = out_v[x]
            i += 1
    bvals.sort()
    thr = bvals[0] if nb_ > 0 else np.float32(0.0)
    got = 0.0
    for i in range(nb_ - 1, -1, -1):
        got += bvals[i]
        thr = bvals[i]
        if got >= need:
            break
    keep = 0
    for x in range(n):
        bn = int(out_v[x] * scale)
        if bn > cut or (bn == cut and out_v[x] >= thr):
            out_t[keep] = out_t[x]
            out_v[keep] = out_v[x]
            keep += 1
    return keep


@numba.njit(parallel=True, cache=True)
def summary_fill(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, lut, dim, energy, n_chunks, b_lo, b_hi,
                 slot_ptr, sum_idx, sum_codes, counts, sum_min, sum_step):
    """Summaries of blocks b_lo..b_hi-1, each written 8-bit quantized at its slot (``slot_ptr[b - b_lo]``,
    room for the block's total nnz, which bounds its summary); codes are rounded *up* so that
    min + code*step >= value. ``counts[b]`` receives the number of entries kept."""
    for c in prange(n_chunks):
        dense = np.zeros(dim, np.float32)
        out_t = np.empty(dim, np.int64)
        vals = np.empty(dim, np.float32)
        for b in range(b_lo + c, b_hi, n_chunks):
            m = _block_summary(blk_docs, blk_doc_ptr[b], blk_doc_ptr[b + 1], fwd_ptr, fwd_idx, fwd_val, lut,
                               dense, energy, out_t, vals)
            counts[b] = m
            w = slot_ptr[b - b_lo]
            if m == 0:
                sum_min[b] = 0.0
                sum_step[b] = 0.0
                continue
            mn = vals[:m].min()
            mx = vals[:m].max()
            step = np.float32((mx - mn) / np.float32(255.0))
            if step > 0:
                while mn + np.float32(255.0) * step < mx:
                    step = np.float32(step * np.float32(1.0000001))
            sum_min[b] = mn
            sum_step[b] = step
            for x in range(m):
                sum_idx[w + x] = out_t[x]
                if step > 0:
                    code = min(max(int(np.ceil((vals[x] - mn) / step)), 0), 255)
                    while code < 255 and mn + np.float32(code) * step < vals[x]:
                        code += 1
                    sum_codes[w + x] = code
                else:
                    sum_codes[w + x] = 0


@numba.njit(cache=True)
def compact_slots(slot_ptr, counts_part, src_idx, src_codes, dst_idx, dst_codes):
    """Move each block's entries from its slot to consecutive positions."""
    w = 0
    for b in range(counts_part.shape[0]):
        s = slot_ptr[b]
        for x in range(counts_part[b]):
            dst_idx[w] = src_idx[s + x]
            dst_codes[w] = src_codes[s + x]
            w += 1


# ------------------------------------------------------------------------------------------- build: transposition
@numba.njit(parallel=True, cache=True)
def summary_layout_counts(term_blk_ptr, sum_ptr, sum_idx, dim, n_chunks):
    """Per posting list: distinct summary terms, entries (skip markers included) and counts >= 255."""
    n_terms = term_blk_ptr.shape[0] - 1
    ncomp = np.zeros(n_terms, np.int64)
    nent = np.zeros(n_terms, np.int64)
    novf = np.zeros(n_terms, np.int64)
    for c in prange(n_chunks):
        last = np.full(dim, -1, np.int64)
        cnt = np.zeros(dim, np.int64)
        seen = np.empty(dim, np.int64)
        for t in range(c, n_terms, n_chunks):
            b0 = term_blk_ptr[t]
            n = 0
            e = 0
            for b in range(b0, term_blk_ptr[t + 1]):
                for j in range(sum_ptr[b], sum_ptr[b + 1]):
                    tt = sum_idx[j]
                    if cnt[tt] == 0:
                        seen[n] = tt
                        n += 1
                    gap = (b - b0) - last[tt]
                    k = 1 + (gap - 1) // 255  # the entry plus its skip markers
                    cnt[tt] += k
                    e += k
                    last[tt] = b - b0
            o = 0
            for x in range(n):
                tt = seen[x]
                if cnt[tt] >= 255:
                    o += 1
                cnt[tt] = 0
                last[tt] = -1
            ncomp[t] = n
            nent[t] = e
            novf[t] = o
    return ncomp, nent, novf


@numba.njit(parallel=True, cache=True)
def summary_transpose(term_blk_ptr, sum_ptr, sum_idx, sum_codes, dim, n_chunks, comp_list_ptr, ovf_list_ptr,
                      ent_list_ptr, comp_ids, comp_cnt, ovf_cnt, ent_delta, ent_code):
    """Block-major summaries of each list -> the component-major layout read by `_score_list_summaries`."""
    n_terms = term_blk_ptr.shape[0] - 1
    for c in prange(n_chunks):
        last = np.full(dim, -1, np.int64)
        cnt = np.zeros(dim, np.int64)
        pos = np.zeros(dim, np.int64)
        for t in range(c, n_terms, n_chunks):
            b0, b1 = term_blk_ptr[t], term_blk_ptr[t + 1]
            c0, c1 = comp_list_ptr[t], comp_list_ptr[t + 1]
            if c1 == c0:
                continue
            n = 0
            for b in range(b0, b1):
                for j in range(sum_ptr[b], sum_ptr[b + 1]):
                    tt = sum_idx[j]
                    if cnt[tt] == 0:
                        comp_ids[c0 + n] = tt
                        n += 1
                    cnt[tt] += 1 + ((b - b0) - last[tt] - 1) // 255
                    last[tt] = b - b0
            comp_ids[c0:c1].sort()
            off = ent_list_ptr[t]
            ov = ovf_list_ptr[t]
            for g in range(c0, c1):
                tt = comp_ids[g]
                if cnt[tt] >= 255:
                    comp_cnt[g] = 255
                    ovf_cnt[ov] = cnt[tt]
                    ov += 1
                else:
                    comp_cnt[g] = cnt[tt]
                pos[tt] = off
                off += cnt[tt]
                cnt[tt] = 0
                last[tt] = -1
            for b in range(b0, b1):
                for j in range(sum_ptr[b], sum_ptr[b + 1]):
                    tt = sum_idx[j]
                    gap = (b - b0) - last[tt]
                    x = pos[tt]
                    while gap > 255:
                        ent_delta[x] = 0
                        ent_code[x] = 0
                        x += 1
                        gap -= 255
                    ent_delta[x] = gap
                    ent_code[x] = sum_codes[j]
                    pos[tt] = x + 1
                    last[tt] = b - b0
            for g in range(c0, c1):
                last[comp_ids[g]] = -1


@numba.njit(cache=True)
def decode_summaries(ix, n_blocks):
    """The component-major summaries back to block-major CSR (ptr, terms, dequantized values)."""
    (fwd_ptr, fwd_idx, fwd_val, lut, term_blk_ptr, blk_doc_ptr, blk_docs, comp_list_ptr, comp_ids, comp_cnt,
     ovf_list_ptr, ovf_cnt, ent_list_ptr, ent_delta, ent_code, sum_min, sum_step, knn) = ix
    counts = np.zeros(n_blocks + 1, np.int64)
    for phase in range(2):
        if phase == 1:
            for b in range(n_blocks):
                counts[b + 1] += counts[b]
            ptr = counts.copy()
            terms = np.empty(counts[n_blocks], np.int32)
            vals = np.empty(counts[n_blocks], np.float32)
        for t in range(term_blk_ptr.shape[0] - 1):
            b0 = term_blk_ptr[t]
            ov = ovf_list_ptr[t]
            s1 = ent_list_ptr[t]
            for g in range(comp_list_ptr[t], comp_list_ptr[t + 1]):
                cnt, ov = _entry_count(comp_cnt, ovf_cnt, g, ov)
                s0 = s1
                s1 = s0 + cnt
                bl = -1
                for x in range(s0, s1):
                    bl, real = _step_block(ent_delta, x, bl)
                    if not real:
                        continue
                    b = b0 + bl
                    if phase == 0:
                        counts[b + 1] += 1
                    else:
                        terms[ptr[b]] = comp_ids[g]
                        vals[ptr[b]] = sum_min[b] + np.float32(ent_code[x]) * sum_step[b]
                        ptr[b] += 1
    return counts, terms, vals
