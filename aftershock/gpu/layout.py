"""Host-side conversion of index arrays into the layouts the CUDA kernels read.

This module is the single place that knows how a CPU index stores its arrays. If the index's storage
changes (e.g. the summary layout), only these functions change; the kernels keep reading the layouts
documented here. Everything returned is a flat, typed numpy array ready for one host-to-device copy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

F16_MAX = 65504.0


def _lossless_f16(vals: np.ndarray) -> bool:
    """True when every value survives a float16 round trip exactly (then 2 bytes per value suffice)."""
    if vals.size == 0:
        return True
    if float(vals.max()) > F16_MAX:
        return False
    return bool(np.array_equal(vals.astype(np.float16).astype(np.float32), vals))


def exact_layout(inv_ptr, inv_docs, inv_vals, n_docs: int, tile: int) -> dict:
    """Inverted index split into document tiles of ``tile`` docs (one CUDA block per (query, tile)).

    Returns ``tile_ptr`` int64 (dim * (n_tiles + 1)): the postings of term t in tile j are
    ``tile_ptr[t*(n_tiles+1)+j] : tile_ptr[t*(n_tiles+1)+j+1]`` (docs ascending), ``post_doc`` uint16
    (doc - j*tile, so 2 bytes per posting), ``post_val`` float16 when lossless else float32, plus
    ``n_tiles``. Zero weights are dropped (they add nothing to a score).
    """
    if not 1 <= tile <= 65536:
        raise ValueError(f"tile={tile} must be in [1, 65536] (doc offsets are stored as uint16)")
    inv_ptr = np.asarray(inv_ptr, np.int64)
    inv_docs = np.asarray(inv_docs)
    inv_vals = np.asarray(inv_vals, np.float32)
    dim = inv_ptr.shape[0] - 1
    term = np.repeat(np.arange(dim, dtype=np.int64), np.diff(inv_ptr))
    keep = inv_vals > 0
    if not keep.all():
        term, inv_docs, inv_vals = term[keep], inv_docs[keep], inv_vals[keep]
    n_tiles = max(1, -(-int(n_docs) // tile))
    docs = inv_docs.astype(np.int64)
    tile_of = docs // tile
    counts = np.bincount(term * (n_tiles + 1) + tile_of + 1, minlength=dim * (n_tiles + 1))
    tile_ptr = np.cumsum(counts).astype(np.int64)
    vdt = np.float16 if _lossless_f16(inv_vals) else np.float32
    return dict(tile_ptr=tile_ptr, post_doc=(docs - tile_of * tile).astype(np.uint16),
                post_val=inv_vals.astype(vdt), n_tiles=n_tiles)


def exact_source(index) -> tuple:
    """(inv_ptr, inv_docs, inv_vals, n_docs) of an ExactIndex, or built from a SeismicIndex's forward index."""
    if hasattr(index, "inv_ptr"):
        return index.inv_ptr, index.inv_docs, index.inv_vals, index.n_docs
    n = index.n_docs
    vals = index._decoded_values()
    csc = sp.csr_matrix((vals, np.asarray(index.fwd_idx, np.int32), np.asarray(index.fwd_ptr, np.int64)),
                        shape=(n, index.dim)).tocsc()
    csc.sort_indices()
    return csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data.astype(np.float32), n


def seismic_layout(index) -> dict:
    """A SeismicIndex's arrays as the blocked CUDA kernel (and its CPU reference) read them.

    Forward index and blocks are passed through (``fwd_val`` float16 bits are viewed as float16,
    ``blk_docs`` as int32). Summaries, for the GPU, component-major per posting list: list t's summary
    terms are ``comp_ids[comp_list_ptr[t]:comp_list_ptr[t+1]]`` (ascending); component g's entries are
    ``comp_ent_ptr[g]:comp_ent_ptr[g+1]`` of ``ent_blk`` (block within the list) and ``ent_code`` (uint8);
    the value is ``sum_min[b] + code * sum_step[b]`` as on the CPU. For the CPU reference, the same entries
    block-major: block b's are ``sum_ptr[b]:sum_ptr[b+1]`` with terms ``sum_idx`` ascending and ``sum_code``.
    This is the only function that reads the index's summary storage (see `_summary_entries`).
    """
    term_blk_ptr = np.asarray(index.term_blk_ptr, np.int64)
    dim = term_blk_ptr.shape[0] - 1
    nb = int(term_blk_ptr[-1])
    comp_ids = np.asarray(index.comp_ids)
    comp_list_ptr = np.asarray(index.comp_list_ptr, np.int64)
    comp_cnt, ent_blk_local, ent_code = _summary_entries(index)
    comp_ent_ptr = np.zeros(comp_cnt.shape[0] + 1, np.int64)
    np.cumsum(comp_cnt, out=comp_ent_ptr[1:])
    ent_list_ptr = comp_ent_ptr[comp_list_ptr]
    ent_term = np.repeat(comp_ids, comp_cnt)  # entries are stored list by list, component by component
    ent_list = np.repeat(np.arange(dim, dtype=np.int64), np.diff(ent_list_ptr))
    ent_block = term_blk_ptr[ent_list] + ent_blk_local.astype(np.int64)
    order = np.argsort(ent_block, kind="stable")  # components ascend within a list: terms ascend per block
    sum_ptr = np.zeros(nb + 1, np.int64)
    np.cumsum(np.bincount(ent_block, minlength=nb), out=sum_ptr[1:])
    fwd_val = np.asarray(index.fwd_val)
    fwd_val = fwd_val.view(np.float16) if fwd_val.dtype == np.uint16 else fwd_val.astype(np.float32)
    return dict(
        fwd_ptr=np.asarray(index.fwd_ptr, np.int64), fwd_idx=np.asarray(index.fwd_idx), fwd_val=fwd_val,
        term_blk_ptr=term_blk_ptr, blk_doc_ptr=np.asarray(index.blk_doc_ptr, np.int64),
        blk_docs=np.asarray(index.blk_docs).view(np.int32), sum_ptr=sum_ptr,
        sum_idx=ent_term[order], sum_code=ent_code[order],
        sum_min=np.asarray(index.sum_min, np.float32), sum_step=np.asarray(index.sum_step, np.float32),
        comp_list_ptr=comp_list_ptr, comp_ids=comp_ids, comp_ent_ptr=comp_ent_ptr,
        ent_blk=ent_blk_local, ent_code=ent_code,
    )


def _summary_entries(index):
    """Decode the index's summary entries: (entries per component, local block of each entry, its code).

    On disk a component's count is uint8 (255 = take the next ``ovf_cnt``, in storage order) and includes
    skip markers; entries are uint8 block gaps (0 = skip 255 blocks, no entry) with uint8 codes.
    """
    cnt = np.asarray(index.comp_cnt).astype(np.int64)
    big = cnt == 255
    if big.any():
        cnt[big] = np.asarray(index.ovf_cnt, np.int64)
    delta = np.asarray(index.ent_delta).astype(np.int64)
    code = np.asarray(index.ent_code, np.uint8)
    comp_of = np.repeat(np.arange(cnt.shape[0], dtype=np.int64), cnt)
    cs = np.cumsum(np.where(delta == 0, 255, delta))
    start = np.zeros(cnt.shape[0] + 1, np.int64)
    np.cumsum(cnt, out=start[1:])
    before = np.concatenate([[0], cs])[start[:-1]]  # running gap sum before each component's first entry
    local = cs - before[comp_of] - 1
    real = delta != 0
    n_real = np.bincount(comp_of[real], minlength=cnt.shape[0]).astype(np.int64)
    local = local[real]
    bdt = np.uint16 if local.size == 0 or int(local.max()) < 65536 else np.uint32
    return n_real, local.astype(bdt), code[real]


# arrays of seismic_layout that the GPU kernel reads (the block-major summaries serve the CPU reference)
SEISMIC_DEVICE_ARRAYS = ("fwd_ptr", "fwd_idx", "fwd_val", "term_blk_ptr", "blk_doc_ptr", "blk_docs", "sum_min",
                         "sum_step", "comp_list_ptr", "comp_ids", "comp_ent_ptr", "ent_blk", "ent_code")
