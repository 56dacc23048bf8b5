"""Build kernels: posting-list pruning, per-list clustering into blocks, each document's doc_cut
approximation (what clustering compares). Summaries of the blocks are in `summaries`."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from aftershock.seismic.kernels.memory import value_at


# ------------------------------------------------------------------------------------------- pruning
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


# ------------------------------------------------------------------------------------------- blocking
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
    """Cluster the posting lists of the terms in ``order`` (all of them, or a slice: the caller works in chunks);
    docs reordered by (block, doc id) into out_docs, block sizes at post_ptr[t]."""
    n_terms = order.shape[0]
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

