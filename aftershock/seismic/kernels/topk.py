"""Top-k structures shared by every CPU search (Seismic, exact, the dense-key index of aftershock.kv).

- the result heap: a min-heap of the best k (score, id), ranked by score desc then id asc;
- the block heap: a max-heap of (block score, block id) popped best-first;
- kNN-graph refinement: offer the graph neighbours of the results found to the result heap.
"""

from __future__ import annotations

import numba


# ------------------------------------------------------------------------------------------- both heaps
@numba.njit(inline="always")
def _swap_up(hs, hi, a, b, above):
    """Swap entries a and b when ``above(a, b)`` (a belongs above b); returns whether it did."""
    if above(hs[a], hi[a], hs[b], hi[b]):
        hs[a], hs[b] = hs[b], hs[a]
        hi[a], hi[b] = hi[b], hi[a]
        return True
    return False


@numba.njit(inline="always")
def _sift_down(hs, hi, size, pos, above):
    """Move entry pos down the heap (hs, hi)[:size] until ``above(entry, child)`` holds for its children."""
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and above(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if not _swap_up(hs, hi, child, pos, above):
            break
        pos = child


@numba.njit(inline="always")
def _pop(hs, hi, size, above):
    """Drop the top (hs[0], hi[0]) of the heap (hs, hi)[:size]; returns the new size."""
    size -= 1
    hs[0] = hs[size]
    hi[0] = hi[size]
    _sift_down(hs, hi, size, 0, above)
    return size


# ------------------------------------------------------------------------------------------- result heap
@numba.njit(inline="always")
def _worse(s1, i1, s2, i2):
    """True when (s1, i1) ranks below (s2, i2): lower score, or equal score and larger id (the min-heap's order:
    the worst result on top)."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@numba.njit(inline="always")
def heap_push(hs, hi, size, k, score, doc):
    """Offer (score, doc) to a min-heap holding the best k; returns the new size."""
    if size < k:
        pos = size
        hs[pos] = score
        hi[pos] = doc
        while pos > 0:
            parent = (pos - 1) // 2
            if not _swap_up(hs, hi, pos, parent, _worse):
                break
            pos = parent
        return size + 1
    if _worse(hs[0], hi[0], score, doc):
        hs[0] = score
        hi[0] = doc
        _sift_down(hs, hi, size, 0, _worse)
    return size


@numba.njit
def heap_sorted_into(hs, hi, size, out_s, out_i):
    """Empty the heap into out_* best-first (score desc, id asc); the rest stays padded."""
    while size > 0:
        out_s[size - 1] = hs[0]
        out_i[size - 1] = hi[0]
        size = _pop(hs, hi, size, _worse)


# ------------------------------------------------------------------------------------------- block heap
@numba.njit(inline="always")
def _higher(s1, i1, s2, i2):
    """The block heap's order: a max-heap on the score alone (the best block on top)."""
    return s1 > s2


@numba.njit(inline="always")
def heapify_blocks(bs, bi, n):
    """Make (bs, bi)[:n] a max-heap on bs (the best block on top)."""
    for p in range(n // 2 - 1, -1, -1):
        _sift_down(bs, bi, n, p, _higher)


@numba.njit(inline="always")
def heap_pop(bs, bi, n):
    """Remove the best block of the max-heap (bs, bi)[:n]; returns (its id, the new size n - 1).
    Its score, read before the pop, is ``bs[0]``."""
    return bi[0], _pop(bs, bi, n, _higher)


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
