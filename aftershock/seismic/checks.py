"""Structural checks of a loaded `ExactIndex` / `SeismicIndex` (run on every load; ``verify=False`` skips only
the hashes). They establish every invariant the search kernels index with, so no file, however edited, can
make a kernel read or write out of bounds: pointers monotone from 0 to their array's length, term ids < dim,
document rows < n_docs, block rows < n_blocks, the summary layout's counts consistent with its pointers and
every summary entry inside its posting list's blocks. All numpy, O(size of the arrays)."""

from __future__ import annotations

import numpy as np

from aftershock.index.checks import Checker
from aftershock.index.limits import max_dim

U8 = (np.dtype(np.uint8),)
F32 = (np.dtype(np.float32),)
VALS = (np.dtype(np.uint16), np.dtype(np.float32))
INT32_MAX = 2**31 - 1


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
    big = comp_cnt == 255
    c255 = np.zeros(n_comp + 1, np.int64)
    np.cumsum(big, out=c255[1:])
    if not np.array_equal(c255[comp_list_ptr], ovf_list_ptr):
        c.fail("ovf_list_ptr does not match the overflow markers (255) of comp_cnt")
    ent_delta = c.array("ent_delta", U8)
    n_ent = ent_delta.shape[0]
    ent_list_ptr = c.ptr("ent_list_ptr", dim + 1, n_ent)
    c.array("ent_code", U8, 1, n_ent)
    cnt = comp_cnt.astype(np.int64)
    cnt[big] = ovf_cnt  # as many markers as overflow counts (checked above: c255[-1] == len(ovf_cnt))
    cc = np.zeros(n_comp + 1, np.int64)
    np.cumsum(cnt, out=cc[1:])
    if not np.array_equal(cc[comp_list_ptr], ent_list_ptr):
        c.fail("ent_list_ptr does not match the entry counts of comp_cnt/ovf_cnt")
    # every component's entries stay inside its list's blocks: sum of block steps <= blocks in the list
    steps = np.where(ent_delta == 0, 255, ent_delta).astype(np.int64)
    cs = np.zeros(n_ent + 1, np.int64)
    np.cumsum(steps, out=cs[1:])
    span = cs[cc[1:]] - cs[cc[:-1]]
    nbl = np.repeat(np.diff(term_blk_ptr), np.diff(comp_list_ptr))
    if bool((span > nbl).any()):
        g = int(np.flatnonzero(span > nbl)[0])
        c.fail(f"summary component {g} reaches block {int(span[g]) - 1} of a posting list of {int(nbl[g])} blocks")
    # the kNN graph
    knn = c.array("knn", (np.dtype(np.int32),), 2, n)
    if knn.size:
        c.ids("knn", knn, n, lo=-1)
    c.doc_ids(n)
