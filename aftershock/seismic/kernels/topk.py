"""Top-k structures shared by every CPU search (Seismic, exact, the dense-key index of aftershock.kv).

- the result heap: a min-heap of the best k (score, id), ranked by score desc then id asc;
- the block heap: a max-heap of (block score, block id) popped best-first;
- kNN-graph refinement: offer the graph neighbours of the results found to the result heap.
"""

from __future__ import annotations

import numba


# ------------------------------------------------------------------------------------------- result heap
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


# ------------------------------------------------------------------------------------------- block heap
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
def heap_pop(bs, bi, n):
    """Remove the best block of the max-heap (bs, bi)[:n]; returns (its id, the new size n - 1).
    Its score, read before the pop, is ``bs[0]``."""
    b = bi[0]
    n -= 1
    bs[0] = bs[n]
    bi[0] = bi[n]
    _block_sift_down(bs, bi, n, 0)
    return b, n


# ------------------------------------------------------------------------------------------- kNN refinement
@numba.njit(inline="always")
def knn_refine(knn, n_knn, rounds, expanded, stamp, hs, hi, size, k, fresh, score, ctx, n_seen):
    """kNN-graph refinement of a result heap (hs, hi)[:size]: offer the first ``n_knn`` graph neighbours
    (``knn`` rows, -1 padded at the end) of every result to the heap, scoring each document once.

    The caller supplies two jitted functions over its own state ``ctx``: ``fresh(ctx, n_seen, d)`` marks d
    seen and returns the new seen count, or -1 when d needs no scoring (already scored); ``score(ctx, d)``
    its exact score. With ``rounds`` > 1 the neighbours of results found by a round are expanded in the
    next (``expanded[r] == stamp`` marks results already expanded) until no result is new; one round
    expands each (distinct) result once and needs no ``expanded``.
    Returns (heap size, seen count, documents scored).
    """
    m = min(n_knn, knn.shape[1])
    scored = 0
    for _ in range(rounds):
        found = hi[:size].copy()
        grew = False
        for x in range(found.shape[0]):
            r0 = found[x]
            if rounds > 1:
                if expanded[r0] == stamp:
                    continue
                expanded[r0] = stamp
            grew = True
            for j in range(m):
                d = knn[r0, j]
                if d < 0:
                    break
                n2 = fresh(ctx, n_seen, d)
                if n2 < 0:
                    continue
                n_seen = n2
                size = heap_push(hs, hi, size, k, score(ctx, d), d)
                scored += 1
        if not grew:
            break
    return size, n_seen, scored
