"""Exact search: term-at-a-time scoring over a full inverted index (the ground truth)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from aftershock.seismic.kernels.topk import heap_push, heap_sorted_into


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
