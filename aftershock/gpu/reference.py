"""CPU (Numba) reference of the batch-first blocked search that ``kernels.seismic_kernel`` runs on the GPU.

Same arrays (``layout.seismic_layout``), same steps, same float32 summation orders: summary scores add a
block's entries in ascending term order; a document's score is the sum, in member order, of ``group``
partial sums over its entries strided by ``group``. So the GPU must return the same ids and scores equal
up to float rounding (the GPU compiler may fuse multiply-adds). Used by the tests and to tune recall
knobs without a GPU (recall does not depend on the hardware).
"""

from __future__ import annotations

import numba
import numpy as np

from aftershock.seismic.kernels import heap_push, heap_sorted_into, query_lists


@numba.njit(inline="always")
def _doc_score(fwd_ptr, fwd_idx, fwd_val, d, qdense, group):
    tot = np.float32(0.0)
    for m in range(group):
        s = np.float32(0.0)
        for e in range(fwd_ptr[d] + m, fwd_ptr[d + 1], group):
            s += qdense[fwd_idx[e]] * np.float32(fwd_val[e])
        tot += s
    return tot


@numba.njit(inline="always")
def _ranks_above(s1, i1, s2, i2):
    return s1 > s2 or (s1 == s2 and i1 < i2)


@numba.njit(cache=True)
def _one(qi, qv, term_blk_ptr, blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, sum_ptr, sum_idx, sum_code,
         sum_min, sum_step, k, query_cut, heap_factor, first_blocks, group, qdense, visited, out_s, out_i, stats):
    nq = qi.shape[0]
    lists, nb = query_lists(qi, qv, query_cut, term_blk_ptr, qdense)
    score = np.empty(nb, np.float32)
    bid = np.empty(nb, np.int64)
    g = 0
    for t in lists:
        for b in range(term_blk_ptr[t], term_blk_ptr[t + 1]):
            dot = np.float32(0.0)
            sq = np.float32(0.0)
            for e in range(sum_ptr[b], sum_ptr[b + 1]):
                w = qdense[sum_idx[e]]
                if w != 0.0:  # the GPU reads only these entries (component-major layout)
                    dot += w * np.float32(sum_code[e])
                    sq += w
                    stats[1] += 1
            score[g] = sum_min[b] * sq + sum_step[b] * dot
            bid[g] = b
            g += 1
    stats[0] = nb
    # phase A: the first_blocks best blocks with a positive score (score desc, position asc)
    rank = np.argsort(-score, kind="mergesort")
    nf = min(first_blocks, nb)
    in_a = np.zeros(nb, np.bool_)
    for r in rank[:nf]:
        if score[r] > 0:
            in_a[r] = True
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    size = 0
    cand = []
    for phase in range(2):
        if phase == 1:
            theta = hs[0] if size == k else np.float32(-np.inf)
            thr = np.float32(heap_factor * theta)
        for g in range(nb):
            if phase == 0:
                take = in_a[g]
            else:
                take = (not in_a[g]) and score[g] >= thr
            if not take:
                continue
            stats[2] += 1
            b = bid[g]
            stats[5] += blk_doc_ptr[b + 1] - blk_doc_ptr[b]
            for p in range(blk_doc_ptr[b], blk_doc_ptr[b + 1]):
                d = blk_docs[p]
                if visited[d]:
                    continue
                visited[d] = True
                cand.append(d)
                stats[3] += 1
                stats[4] += fwd_ptr[d + 1] - fwd_ptr[d]
                s = _doc_score(fwd_ptr, fwd_idx, fwd_val, d, qdense, group)
                size = heap_push(hs, hi, size, k, s, d)
    for d in cand:
        visited[d] = False
    for j in range(nq):
        qdense[qi[j]] = 0.0
    heap_sorted_into(hs, hi, size, out_s, out_i)


@numba.njit(cache=True)
def blocked_search(q_ptr, q_idx, q_val, term_blk_ptr, blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, sum_ptr,
                   sum_idx, sum_code, sum_min, sum_step, dim, n_docs, k, query_cut, heap_factor, first_blocks,
                   group, n_chunks, out_s, out_i, stats):
    nq = q_ptr.shape[0] - 1
    for c in range(n_chunks):  # serial: a reference (parallel=True would triple its compile time)
        qdense = np.zeros(dim, np.float32)
        visited = np.zeros(n_docs, np.bool_)
        for q in range(c, nq, n_chunks):
            a, b = q_ptr[q], q_ptr[q + 1]
            _one(q_idx[a:b], q_val[a:b], term_blk_ptr, blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, sum_ptr,
                 sum_idx, sum_code, sum_min, sum_step, k, query_cut, heap_factor, first_blocks, group, qdense,
                 visited, out_s[q], out_i[q], stats[q])
