"""Numba CPU kernels of the dense-key mode: the Seismic search skeleton (best-first block visiting with a
radius_factor cut, then kNN-graph refinement) over dense float32 keys stored block-contiguous.

Plain loops over flat typed arrays, like ``aftershock.seismic.kernels``, whose top-k module (result heap, block
heap, kNN refinement) they share.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from aftershock.seismic.kernels.topk import heap_pop, heap_push, heap_sorted_into, heapify_blocks, knn_refine


@numba.njit(inline="always")
def _dot(a, i, q):
    s = np.float32(0.0)
    for j in range(q.shape[0]):
        s += a[i, j] * q[j]
    return s


@numba.njit(inline="always")
def _fresh_key(ctx, n_seen, r):
    """`knn_refine`'s ``fresh`` over (blk_seen, key_blk, visited, stamp, keys, q): keys of visited blocks
    were all scored."""
    blk_seen, key_blk, visited, stamp = ctx[0], ctx[1], ctx[2], ctx[3]
    if blk_seen[key_blk[r]] == stamp or visited[r] == stamp:
        return -1
    visited[r] = stamp
    return n_seen + 1


@numba.njit(inline="always")
def _score_key(ctx, r):
    return _dot(ctx[4], r, ctx[5])


@numba.njit
def dense_search_one(keys, blk_ptr, key_blk, cents, radii, knn, q, qs, k, radius_factor, n_knn, rounds,
                     blk_seen, visited, expanded, stamp, out_s, out_i, stats):
    """One query ``q`` (key space) with ``qs`` its image in summary space.

    Each block's estimate is ``qs . cents[b] + radius_factor * |qs| * radii[b]`` (with radius_factor = 1 an upper
    bound on every ``q . key`` in the block: the block lies in a ball of radius ``radii[b]``). Blocks are
    visited best estimate first and the walk stops at the first block whose estimate is below the k-th
    best score found. Then the ``n_knn`` graph neighbours of each result not already scored are scored.
    stats: [blocks estimated, blocks visited, keys scored].
    """
    nb = cents.shape[0]
    qn = np.float32(0.0)
    for j in range(qs.shape[0]):
        qn += qs[j] * qs[j]
    qn = np.float32(np.sqrt(qn)) * np.float32(radius_factor)
    bs = np.empty(nb, np.float32)
    bi = np.empty(nb, np.int64)
    for b in range(nb):
        bs[b] = _dot(cents, b, qs) + qn * radii[b]
        bi[b] = b
    stats[0] += nb
    heapify_blocks(bs, bi, nb)
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    size = 0
    n = nb
    while n > 0:
        if size == k and bs[0] < hs[0]:
            break
        b, n = heap_pop(bs, bi, n)
        blk_seen[b] = stamp
        for r in range(blk_ptr[b], blk_ptr[b + 1]):
            size = heap_push(hs, hi, size, k, _dot(keys, r, q), r)
        stats[1] += 1
        stats[2] += blk_ptr[b + 1] - blk_ptr[b]
    if n_knn > 0 and knn.shape[1] > 0:
        size, _, scored = knn_refine(knn, n_knn, rounds, expanded, stamp, hs, hi, size, k, _fresh_key, _score_key,
                                     (blk_seen, key_blk, visited, stamp, keys, q), 0)
        stats[2] += scored
    heap_sorted_into(hs, hi, size, out_s, out_i)


@numba.njit
def _dense_chunk(c, n_chunks, keys, blk_ptr, key_blk, cents, radii, knn, qs_all, q_all, k, radius_factor, n_knn,
                 rounds, blk_seen, visited, expanded, stamp0, out_s, out_i, stats):
    stamp = stamp0
    for x in range(c, q_all.shape[0], n_chunks):
        stamp += 1
        dense_search_one(keys, blk_ptr, key_blk, cents, radii, knn, q_all[x], qs_all[x], k, radius_factor, n_knn,
                         rounds, blk_seen, visited, expanded, stamp, out_s[x], out_i[x], stats[x])


@numba.njit(parallel=True, cache=True)
def dense_search_batch(keys, blk_ptr, key_blk, cents, radii, knn, qs_all, q_all, k, radius_factor, n_knn, rounds,
                       n_chunks, blk_seen, visited, expanded, stamp0, out_s, out_i, stats):
    """A batch of queries over ``n_chunks`` threads, each with its own reused scratch row (stamps)."""
    for c in prange(n_chunks):
        _dense_chunk(c, n_chunks, keys, blk_ptr, key_blk, cents, radii, knn, qs_all, q_all, k, radius_factor, n_knn,
                     rounds, blk_seen[c], visited[c], expanded[c], stamp0, out_s, out_i, stats)


@numba.njit(cache=True)
def dense_search_serial(keys, blk_ptr, key_blk, cents, radii, knn, qs_all, q_all, k, radius_factor, n_knn, rounds,
                        blk_seen, visited, expanded, stamp0, out_s, out_i, stats):
    """The same on the calling thread (few queries: no parallel launch)."""
    _dense_chunk(0, 1, keys, blk_ptr, key_blk, cents, radii, knn, qs_all, q_all, k, radius_factor, n_knn,
                 rounds, blk_seen[0], visited[0], expanded[0], stamp0, out_s, out_i, stats)
