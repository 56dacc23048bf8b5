"""Host-side conversion of index arrays into the layouts the CUDA kernels read.

This module is the single place that knows how a CPU index stores its arrays. If the index's storage
changes (e.g. the summary layout), only these functions change; the kernels keep reading the layouts
documented here. Everything returned is a flat, typed numpy array ready for one host-to-device copy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from aftershock.seismic.kernels import decode_summaries, f16_lossless, f16_view


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
    vdt = np.float16 if f16_lossless(inv_vals) else np.float32
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
    ``blk_docs`` as int32). Summaries, decoded by ``aftershock.seismic.kernels.decode_summaries`` (the one
    decoder of the format), for the GPU component-major per posting list: list t's summary terms are
    ``comp_ids[comp_list_ptr[t]:comp_list_ptr[t+1]]`` (ascending); component g's entries are
    ``comp_ent_ptr[g]:comp_ent_ptr[g+1]`` of ``ent_blk`` (block within the list) and ``ent_code`` (uint8);
    the value is ``sum_min[b] + code * sum_step[b]`` as on the CPU. For the CPU reference, the same entries
    block-major: block b's are ``sum_ptr[b]:sum_ptr[b+1]`` with terms ``sum_idx`` ascending and ``sum_code``.
    """
    ix = index.kernel_arrays()
    dec = decode_summaries(ix)
    ent_blk = dec.ent_blk
    bdt = np.uint16 if ent_blk.size == 0 or int(ent_blk.max()) < 65536 else np.uint32
    fwd_val = np.asarray(ix.fwd_val)
    fwd_val = f16_view(fwd_val) if fwd_val.dtype == np.uint16 else fwd_val.astype(np.float32)
    return dict(
        fwd_ptr=np.asarray(ix.fwd_ptr, np.int64), fwd_idx=np.asarray(ix.fwd_idx), fwd_val=fwd_val,
        term_blk_ptr=np.asarray(ix.term_blk_ptr, np.int64), blk_doc_ptr=np.asarray(ix.blk_doc_ptr, np.int64),
        blk_docs=np.asarray(ix.blk_docs).view(np.int32), sum_ptr=dec.sum_ptr, sum_idx=dec.sum_idx,
        sum_code=dec.sum_code, sum_min=np.asarray(ix.sum_min, np.float32),
        sum_step=np.asarray(ix.sum_step, np.float32), comp_list_ptr=np.asarray(ix.comp_list_ptr, np.int64),
        comp_ids=np.asarray(ix.comp_ids), comp_ent_ptr=dec.comp_ent_ptr, ent_blk=ent_blk.astype(bdt),
        ent_code=dec.ent_code,
    )


# arrays of seismic_layout that the GPU kernel reads (the block-major summaries serve the CPU reference)
SEISMIC_DEVICE_ARRAYS = ("fwd_ptr", "fwd_idx", "fwd_val", "term_blk_ptr", "blk_doc_ptr", "blk_docs", "sum_min",
                         "sum_step", "comp_list_ptr", "comp_ids", "comp_ent_ptr", "ent_blk", "ent_code")
