"""The summary format: its one encoder (block summaries, 8-bit quantized, then stored component-major per
posting list) and its one decoder (`decode_summaries`), which every reader of the format uses (the block
summaries an index reports, the GPU layout). The search reads it in `search._score_list_summaries`.

Storage, per posting list t (see ``SeismicIndex``): ``comp_ids[comp_list_ptr[t]:comp_list_ptr[t+1]]`` are
the list's summary terms, ascending; ``comp_cnt[g]`` the entries of component g, skip markers included
(uint8; 255 = the list's next ``ovf_cnt``, from ``ovf_list_ptr[t]``); the entries, from ``ent_list_ptr[t]``,
are ``ent_delta`` (uint8 gap to the previous block of the list holding the term, starting at block -1;
0 = skip 255 blocks, no entry) and ``ent_code`` (uint8); the value is ``sum_min[b] + code * sum_step[b]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from aftershock.seismic.kernels.memory import F16_LUT, offsets, value_at


# ------------------------------------------------------------------------------------------- encode: blocks
@numba.njit
def _block_summary(blk_docs, a, b, fwd_ptr, fwd_idx, fwd_val, lut, dense, energy, out_t, out_v):
    """Coordinate-wise max of the block's docs, truncated to at least `energy` of its L1 mass.

    The heaviest entries are kept until their mass reaches ``energy`` x total; the cut is found with a
    256-bin histogram (O(n)) and a sort of the boundary bin only. Writes (term, value) pairs, returns the count.
    Zero weights never reach here (the build drops them), so 0 in ``dense`` means "not seen".
    """
    n = 0
    for p in range(a, b):
        d = blk_docs[p]
        for j in range(fwd_ptr[d], fwd_ptr[d + 1]):
            t = fwd_idx[j]
            v = value_at(fwd_val, j, lut)
            if dense[t] == 0.0:
                out_t[n] = t
                n += 1
                dense[t] = v
            elif v > dense[t]:
                dense[t] = v
    mx = np.float32(0.0)
    total = 0.0
    for x in range(n):
        v = dense[out_t[x]]
        out_v[x] = v
        dense[out_t[x]] = 0.0
        total += v
        if v > mx:
            mx = v
    if n == 0 or mx <= 0:
        return n
    hist = np.zeros(256, np.float64)
    scale = np.float32(255.999) / mx
    for x in range(n):
        hist[int(out_v[x] * scale)] += out_v[x]
    target = energy * total
    acc = 0.0
    cut = 255
    while cut > 0:
        if acc + hist[cut] >= target:
            break
        acc += hist[cut]
        cut -= 1
    # whole bins above `cut` are kept; inside the boundary bin only the heaviest values still needed
    need = target - acc
    nb_ = 0
    for x in range(n):
        if int(out_v[x] * scale) == cut:
            nb_ += 1
    bvals = np.empty(nb_, np.float32)
    i = 0
    for x in range(n):
        if int(out_v[x] * scale) == cut:
            bvals[i] = out_v[x]
            i += 1
    bvals.sort()
    thr = bvals[0] if nb_ > 0 else np.float32(0.0)
    got = 0.0
    for i in range(nb_ - 1, -1, -1):
        got += bvals[i]
        thr = bvals[i]
        if got >= need:
            break
    keep = 0
    for x in range(n):
        bn = int(out_v[x] * scale)
        if bn > cut or (bn == cut and out_v[x] >= thr):
            out_t[keep] = out_t[x]
            out_v[keep] = out_v[x]
            keep += 1
    return keep


@numba.njit(parallel=True, cache=True)
def summary_fill(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, lut, dim, energy, n_chunks, b_lo, b_hi,
                 slot_ptr, sum_idx, sum_codes, counts, sum_min, sum_step):
    """Summaries of blocks b_lo..b_hi-1, each written 8-bit quantized at its slot (``slot_ptr[b - b_lo]``,
    room for the block's total nnz, which bounds its summary); codes are rounded *up* so that
    min + code*step >= value. ``counts[b]`` receives the number of entries kept."""
    for c in prange(n_chunks):
        dense = np.zeros(dim, np.float32)
        out_t = np.empty(dim, np.int64)
        vals = np.empty(dim, np.float32)
        for b in range(b_lo + c, b_hi, n_chunks):
            m = _block_summary(blk_docs, blk_doc_ptr[b], blk_doc_ptr[b + 1], fwd_ptr, fwd_idx, fwd_val, lut,
                               dense, energy, out_t, vals)
            counts[b] = m
            w = slot_ptr[b - b_lo]
            if m == 0:
                sum_min[b] = 0.0
                sum_step[b] = 0.0
                continue
            mn = vals[:m].min()
            mx = vals[:m].max()
            step = np.float32((mx - mn) / np.float32(255.0))
            if step > 0:
                while mn + np.float32(255.0) * step < mx:
                    step = np.float32(step * np.float32(1.0000001))
            sum_min[b] = mn
            sum_step[b] = step
            for x in range(m):
                sum_idx[w + x] = out_t[x]
                if step > 0:
                    code = min(max(int(np.ceil((vals[x] - mn) / step)), 0), 255)
                    while code < 255 and mn + np.float32(code) * step < vals[x]:
                        code += 1
                    sum_codes[w + x] = code
                else:
                    sum_codes[w + x] = 0


@numba.njit(cache=True)
def compact_slots(slot_ptr, counts_part, src_idx, src_codes, dst_idx, dst_codes):
    """Move each block's entries from its slot to consecutive positions."""
    w = 0
    for b in range(counts_part.shape[0]):
        s = slot_ptr[b]
        for x in range(counts_part[b]):
            dst_idx[w] = src_idx[s + x]
            dst_codes[w] = src_codes[s + x]
            w += 1


def summarize(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, dim, energy, nt, tdt,
              slot_budget: int = 1 << 25, on_run=None) -> dict:
    """Quantized summary per block, in one parallel pass over runs of blocks: a block's summary has at most
    as many entries as its documents have non-zeros, so each run is written into slots of that size
    (about ``slot_budget`` entries per run), then compacted. ``on_run(blocks_done)`` is called after each
    run (progress; Python regains control there, so Ctrl-C is honoured between runs)."""
    nb = blk_doc_ptr.shape[0] - 1
    e = np.float32(energy)
    bound = np.diff(fwd_ptr)[blk_docs].astype(np.int64)
    bound = np.add.reduceat(bound, blk_doc_ptr[:-1].astype(np.int64)) if nb else np.zeros(0, np.int64)
    counts = np.zeros(nb, np.int64)
    sum_min = np.empty(nb, np.float32)
    sum_step = np.empty(nb, np.float32)
    parts_idx, parts_codes = [], []
    b_lo = 0
    cum = np.cumsum(bound)
    while b_lo < nb:
        base = cum[b_lo - 1] if b_lo else 0
        b_hi = max(b_lo + 1, int(np.searchsorted(cum, base + slot_budget, side="right")))
        slot_ptr = offsets(bound[b_lo:b_hi])
        tmp_idx = np.empty(slot_ptr[-1], tdt)
        tmp_codes = np.empty(slot_ptr[-1], np.uint8)
        summary_fill(blk_doc_ptr, blk_docs, fwd_ptr, fwd_idx, fwd_val, F16_LUT, dim, e, nt, b_lo, b_hi,
                     slot_ptr, tmp_idx, tmp_codes, counts, sum_min, sum_step)
        n = int(counts[b_lo:b_hi].sum())
        out_idx, out_codes = np.empty(n, tdt), np.empty(n, np.uint8)
        compact_slots(slot_ptr, counts[b_lo:b_hi], tmp_idx, tmp_codes, out_idx, out_codes)
        parts_idx.append(out_idx)
        parts_codes.append(out_codes)
        b_lo = b_hi
        if on_run is not None:
            on_run(b_hi)
    sum_ptr = offsets(counts)
    return dict(sum_ptr=sum_ptr, sum_idx=np.concatenate(parts_idx) if parts_idx else np.zeros(0, tdt),
                sum_codes=np.concatenate(parts_codes) if parts_codes else np.zeros(0, np.uint8),
                sum_min=sum_min, sum_step=sum_step)


# ------------------------------------------------------------------------------------------- encode: layout
@numba.njit(parallel=True, cache=True)
def summary_layout_counts(term_blk_ptr, sum_ptr, sum_idx, dim, n_chunks):
    """Per posting list: distinct summary terms, entries (skip markers included) and counts >= 255."""
    n_terms = term_blk_ptr.shape[0] - 1
    ncomp = np.zeros(n_terms, np.int64)
    nent = np.zeros(n_terms, np.int64)
    novf = np.zeros(n_terms, np.int64)
    for c in prange(n_chunks):
        last = np.full(dim, -1, np.int64)
        cnt = np.zeros(dim, np.int64)
        seen = np.empty(dim, np.int64)
        for t in range(c, n_terms, n_chunks):
            b0 = term_blk_ptr[t]
            n = 0
            e = 0
            for b in range(b0, term_blk_ptr[t + 1]):
                for j in range(sum_ptr[b], sum_ptr[b + 1]):
                    tt = sum_idx[j]
                    if cnt[tt] == 0:
                        seen[n] = tt
                        n += 1
                    gap = (b - b0) - last[tt]
                    k = 1 + (gap - 1) // 255  # the entry plus its skip markers
                    cnt[tt] += k
                    e += k
                    last[tt] = b - b0
            o = 0
            for x in range(n):
                tt = seen[x]
                if cnt[tt] >= 255:
                    o += 1
                cnt[tt] = 0
                last[tt] = -1
            ncomp[t] = n
            nent[t] = e
            novf[t] = o
    return ncomp, nent, novf


@numba.njit(parallel=True, cache=True)
def summary_transpose(term_blk_ptr, sum_ptr, sum_idx, sum_codes, dim, n_chunks, comp_list_ptr, ovf_list_ptr,
                      ent_list_ptr, comp_ids, comp_cnt, ovf_cnt, ent_delta, ent_code):
    """Block-major summaries of each list -> the component-major layout read by `_score_list_summaries`."""
    n_terms = term_blk_ptr.shape[0] - 1
    for c in prange(n_chunks):
        last = np.full(dim, -1, np.int64)
        cnt = np.zeros(dim, np.int64)
        pos = np.zeros(dim, np.int64)
        for t in range(c, n_terms, n_chunks):
            b0, b1 = term_blk_ptr[t], term_blk_ptr[t + 1]
            c0, c1 = comp_list_ptr[t], comp_list_ptr[t + 1]
            if c1 == c0:
                continue
            n = 0
            for b in range(b0, b1):
                for j in range(sum_ptr[b], sum_ptr[b + 1]):
                    tt = sum_idx[j]
                    if cnt[tt] == 0:
                        comp_ids[c0 + n] = tt
                        n += 1
                    cnt[tt] += 1 + ((b - b0) - last[tt] - 1) // 255
                    last[tt] = b - b0
            comp_ids[c0:c1].sort()
            off = ent_list_ptr[t]
            ov = ovf_list_ptr[t]
            for g in range(c0, c1):
                tt = comp_ids[g]
                if cnt[tt] >= 255:
                    comp_cnt[g] = 255
                    ovf_cnt[ov] = cnt[tt]
                    ov += 1
                else:
                    comp_cnt[g] = cnt[tt]
                pos[tt] = off
                off += cnt[tt]
                cnt[tt] = 0
                last[tt] = -1
            for b in range(b0, b1):
                for j in range(sum_ptr[b], sum_ptr[b + 1]):
                    tt = sum_idx[j]
                    gap = (b - b0) - last[tt]
                    x = pos[tt]
                    while gap > 255:
                        ent_delta[x] = 0
                        ent_code[x] = 0
                        x += 1
                        gap -= 255
                    ent_delta[x] = gap
                    ent_code[x] = sum_codes[j]
                    pos[tt] = x + 1
                    last[tt] = b - b0
            for g in range(c0, c1):
                last[comp_ids[g]] = -1


def transpose_summaries(term_blk_ptr, sums: dict, dim, nt, tdt) -> dict:
    """Store each list's summaries component-major, so a query touches only the entries of its own terms."""
    sum_ptr = sums["sum_ptr"]
    ncomp, nent, novf = summary_layout_counts(term_blk_ptr, sum_ptr, sums["sum_idx"], dim, nt)
    out = dict(comp_list_ptr=offsets(ncomp), ovf_list_ptr=offsets(novf), ent_list_ptr=offsets(nent))
    n_comp, n_ovf, n_ent = (int(out[f"{x}_list_ptr"][-1]) for x in ("comp", "ovf", "ent"))
    out.update(comp_ids=np.empty(n_comp, tdt), comp_cnt=np.empty(n_comp, np.uint8), ovf_cnt=np.empty(n_ovf, np.uint32),
               ent_delta=np.empty(n_ent, np.uint8), ent_code=np.empty(n_ent, np.uint8), sum_min=sums["sum_min"],
               sum_step=sums["sum_step"])
    summary_transpose(term_blk_ptr, sum_ptr, sums["sum_idx"], sums["sum_codes"], dim, nt, out["comp_list_ptr"],
                      out["ovf_list_ptr"], out["ent_list_ptr"], out["comp_ids"], out["comp_cnt"], out["ovf_cnt"],
                      out["ent_delta"], out["ent_code"])
    return out



# ------------------------------------------------------------------------------------------- decode
class DecodedSummaries(NamedTuple):
    """Every block's summary, decoded: component-major as stored (real entries only, skip markers gone) and
    block-major. ``comp_ent_ptr`` (n_comp + 1): component g's entries are ``comp_ent_ptr[g]:comp_ent_ptr[g+1]``
    of ``ent_blk`` (block within its list) and ``ent_code``. ``sum_ptr`` (n_blocks + 1): block b's entries are
    ``sum_ptr[b]:sum_ptr[b+1]`` of ``sum_idx`` (terms ascending), ``sum_code`` and ``sum_val`` (the dequantized
    value the kernels score with, ``sum_min[b] + code * sum_step[b]``)."""

    comp_ent_ptr: np.ndarray
    ent_blk: np.ndarray
    ent_code: np.ndarray
    sum_ptr: np.ndarray
    sum_idx: np.ndarray
    sum_code: np.ndarray
    sum_val: np.ndarray


@numba.njit(inline="always")
def _entry_count(comp_cnt, ovf_cnt, g, ov):
    """Entries of summary component g (skip markers included) and the list's next overflow position."""
    cnt = np.int64(comp_cnt[g])
    if cnt == 255:
        return np.int64(ovf_cnt[ov]), ov + 1
    return cnt, ov


@numba.njit(inline="always")
def _step_block(ent_delta, x, bl):
    """The block cursor after entry x, and whether x is a real entry (False: a skip of 255 blocks)."""
    dl = np.int64(ent_delta[x])
    if dl == 0:
        return bl + 255, False
    return bl + dl, True


@numba.njit(cache=True)
def _decode(ix):
    """Two passes over the stored summaries of `SeismicArrays` ix: count per component and per block, then
    write both layouts (blocks of a list meet its components in ascending term order)."""
    n_comp = ix.comp_ids.shape[0]
    n_blocks = ix.sum_min.shape[0]
    comp_ent_ptr = np.zeros(n_comp + 1, np.int64)
    sum_ptr = np.zeros(n_blocks + 1, np.int64)
    for phase in range(2):
        if phase == 1:
            for g in range(n_comp):
                comp_ent_ptr[g + 1] += comp_ent_ptr[g]
            for b in range(n_blocks):
                sum_ptr[b + 1] += sum_ptr[b]
            n = comp_ent_ptr[n_comp]
            ent_blk = np.empty(n, np.int64)
            ent_code = np.empty(n, np.uint8)
            pos = sum_ptr[:-1].copy()
            sum_idx = np.empty(n, np.int32)
            sum_code = np.empty(n, np.uint8)
            sum_val = np.empty(n, np.float32)
        e = 0
        for t in range(ix.term_blk_ptr.shape[0] - 1):
            b0 = ix.term_blk_ptr[t]
            ov = ix.ovf_list_ptr[t]
            s1 = ix.ent_list_ptr[t]
            for g in range(ix.comp_list_ptr[t], ix.comp_list_ptr[t + 1]):
                cnt, ov = _entry_count(ix.comp_cnt, ix.ovf_cnt, g, ov)
                s0 = s1
                s1 = s0 + cnt
                bl = -1
                for x in range(s0, s1):
                    bl, real = _step_block(ix.ent_delta, x, bl)
                    if not real:
                        continue
                    b = b0 + bl
                    if phase == 0:
                        comp_ent_ptr[g + 1] += 1
                        sum_ptr[b + 1] += 1
                        continue
                    code = ix.ent_code[x]
                    ent_blk[e] = bl
                    ent_code[e] = code
                    e += 1
                    p = pos[b]
                    sum_idx[p] = ix.comp_ids[g]
                    sum_code[p] = code
                    sum_val[p] = ix.sum_min[b] + np.float32(code) * ix.sum_step[b]
                    pos[b] = p + 1
    return comp_ent_ptr, ent_blk, ent_code, sum_ptr, sum_idx, sum_code, sum_val


def decode_summaries(ix) -> DecodedSummaries:
    """The stored summaries of `SeismicArrays` ``ix`` decoded (see `DecodedSummaries`)."""
    return DecodedSummaries(*_decode(ix))
