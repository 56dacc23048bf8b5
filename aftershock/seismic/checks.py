"""Structural checks of a loaded `ExactIndex` / `SeismicIndex` (run on every load; ``verify=False`` skips only
the hashes). They establish every invariant the search kernels index with, so no file, however edited, can
make a kernel read or write out of bounds: pointers monotone from 0 to their array's length, term ids < dim,
document rows < n_docs, block rows < n_blocks, the summary layout's counts consistent with its pointers and
every summary entry inside its posting list's blocks. All numpy, O(size of the arrays)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from aftershock.index.checks import Checker
from aftershock.index.limits import max_dim

U8 = (np.dtype(np.uint8),)
F32 = (np.dtype(np.float32),)
VALS = (np.dtype(np.uint16), np.dtype(np.float32))
INT32_MAX = 2**31 - 1


_LAYOUT_ERRORS = {
    1: "more overflow markers (255) in comp_cnt than ovf_list_ptr gives the list",
    2: "its entry counts run past ent_list_ptr",
    3: "a summary entry lies past the list's last block",
    4: "ovf_list_ptr gives the list overflow counts its comp_cnt does not use",
    5: "ent_list_ptr gives the list entries its counts do not use",
}


@numba.njit(cache=True, nogil=True)
def _layout_lists(t0, t1, term_blk_ptr, comp_list_ptr, comp_cnt, ovf_list_ptr, ovf_cnt, ent_list_ptr, ent_delta):
    """Lists t0..t1-1 of `_summary_layout`: (-1, 0) or (first bad list, error code)."""
    for t in range(t0, t1):
        nbl = term_blk_ptr[t + 1] - term_blk_ptr[t]
        ov, ov_end = ovf_list_ptr[t], ovf_list_ptr[t + 1]
        s, s_end = ent_list_ptr[t], ent_list_ptr[t + 1]
        for g in range(comp_list_ptr[t], comp_list_ptr[t + 1]):
            cnt = np.int64(comp_cnt[g])
            if cnt == 255:
                if ov >= ov_end:
                    return t, 1
                cnt = np.int64(ovf_cnt[ov])
                ov += 1
            if cnt > s_end - s:
                return t, 2
            span = np.int64(0)
            for x in range(s, s + cnt):
                d = np.int64(ent_delta[x])
                span += d + 255 * (d == 0)
            if span > nbl:
                return t, 3
            s += cnt
        if ov != ov_end:
            return t, 4
        if s != s_end:
            return t, 5
    return -1, 0


@numba.njit(cache=True, nogil=True, parallel=True)
def _summary_layout(term_blk_ptr, comp_list_ptr, comp_cnt, ovf_list_ptr, ovf_cnt, ent_list_ptr, ent_delta):
    """One pass over the component-major summaries (pointers already checked monotone and in range), in
    parallel over runs of lists: every list's overflow counts and entries match its pointers exactly, and
    every component's block steps stay inside the list's blocks. Returns (-1, 0) or (first bad list, error
    code of `_LAYOUT_ERRORS`)."""
    n = comp_list_ptr.shape[0] - 1
    n_runs = 64
    bad_t = np.full(n_runs, -1, np.int64)
    bad_c = np.zeros(n_runs, np.int64)
    for r in prange(n_runs):
        t0 = n * r // n_runs
        t1 = n * (r + 1) // n_runs
        bad_t[r], bad_c[r] = _layout_lists(t0, t1, term_blk_ptr, comp_list_ptr, comp_cnt, ovf_list_ptr, ovf_cnt,
                                           ent_list_ptr, ent_delta)
    for r in range(n_runs):
        if bad_t[r] >= 0:
            return bad_t[r], bad_c[r]
    return -1, 0


def check_meta(c: Checker, meta: dict) -> tuple[int, int]:
    """``n_docs`` and ``dim`` of meta.json, within the kernels' integer ranges and the dim limit."""
    n = c.meta_int(meta, "n_docs", 0, INT32_MAX - 64)
    dim = c.meta_int(meta, "dim", 0, max(max_dim(), 1))
    vs = meta.get("vocab_size", None)
    if vs is not None and vs != dim:
        c.fail(f"meta.json vocab_size={vs!r} but dim={dim}")
    if vs is not None and "vocab.json" not in {i.get("extra") for i in meta.get("files", {}).values()}:
        c.fail("meta.json says the index stores a vocabulary but lists no vocab.json")
    return n, dim


def check_exact(arrays: dict, meta: dict, where) -> None:
    c = Checker(arrays, where)
    n, dim = check_meta(c, meta)
    docs = c.array("inv_docs", (np.dtype(np.int32),))
    nnz = docs.shape[0]
    c.ptr("inv_ptr", dim + 1, nnz)
    c.ids("inv_docs", docs, n)
    c.weights("inv_vals", c.array("inv_vals", F32, 1, nnz))
    c.doc_ids(n)


def check_seismic(arrays: dict, meta: dict, where) -> None:
    c = Checker(arrays, where)
    n, dim = check_meta(c, meta)
    term = (np.dtype(np.uint16) if dim <= 65536 else np.dtype(np.uint32),)  # what the builder writes (term_dtype)
    # forward index
    fwd_idx = c.array("fwd_idx", term)
    nnz = fwd_idx.shape[0]
    c.ptr("fwd_ptr", n + 1, nnz)
    c.ids("fwd_idx", fwd_idx, dim)
    c.weights("fwd_val", c.array("fwd_val", VALS, 1, nnz))
    # blocks
    sum_min = c.array("sum_min", F32)
    nb = sum_min.shape[0]
    if "n_blocks" in meta and meta["n_blocks"] != nb:
        c.fail(f"meta.json n_blocks={meta['n_blocks']!r} but sum_min has {nb} entries")
    c.weights("sum_min", sum_min)
    c.weights("sum_step", c.array("sum_step", F32, 1, nb))
    term_blk_ptr = c.ptr("term_blk_ptr", dim + 1, nb)
    blk_docs = c.array("blk_docs", (np.dtype(np.uint32),))
    c.ptr("blk_doc_ptr", nb + 1, blk_docs.shape[0],
          (np.dtype(np.uint32) if blk_docs.shape[0] < 2**32 else np.dtype(np.int64),))
    c.ids("blk_docs", blk_docs, n)
    # summaries, component-major per posting list
    comp_ids = c.array("comp_ids", term)
    n_comp = comp_ids.shape[0]
    comp_list_ptr = c.ptr("comp_list_ptr", dim + 1, n_comp)
    c.ids("comp_ids", comp_ids, dim)
    comp_cnt = c.array("comp_cnt", U8, 1, n_comp)
    ovf_cnt = c.array("ovf_cnt", (np.dtype(np.uint32),))
    ovf_list_ptr = c.ptr("ovf_list_ptr", dim + 1, ovf_cnt.shape[0])
    ent_delta = c.array("ent_delta", U8)
    ent_list_ptr = c.ptr("ent_list_ptr", dim + 1, ent_delta.shape[0])
    c.array("ent_code", U8, 1, ent_delta.shape[0])
    t, what = _summary_layout(term_blk_ptr, comp_list_ptr, comp_cnt, ovf_list_ptr, ovf_cnt, ent_list_ptr, ent_delta)
    if t >= 0:
        c.fail(f"the summaries of posting list {t}: " + _LAYOUT_ERRORS[what])
    # the kNN graph
    knn = c.array("knn", (np.dtype(np.int32),), 2, n)
    if knn.size:
        c.ids("knn", knn, n, lo=-1)
    c.doc_ids(n)
