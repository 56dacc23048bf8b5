"""The kernel library's shared pieces (aftershock.seismic.kernels): the thread count is restored, the summary
format's one decoder gives two layouts that agree, the heaps order, and kv uses seismic's top-k module."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from aftershock import SeismicIndex
from aftershock.seismic import kernels as K
from aftershock.seismic.kernels import topk

BUILD = dict(n_postings=60, centroid_fraction=0.1, summary_energy=0.4, value_dtype="float16")


@pytest.fixture(scope="module")
def index(corpus):
    return SeismicIndex.build(corpus[0], **BUILD)


def test_numba_threads_restores_the_count_even_on_error():
    prev = numba.get_num_threads()
    with K.numba_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == prev
    with pytest.raises(RuntimeError), K.numba_threads(1):
        raise RuntimeError("inside")
    assert numba.get_num_threads() == prev


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_build_and_search_leave_the_callers_thread_count(corpus):
    docs, queries = corpus
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        index = SeismicIndex.build(docs, threads=2, knn=3, **BUILD)
        assert numba.get_num_threads() == 1
        index.search(queries, 5, threads=2)  # the parallel batch kernel
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(prev)


def test_kernel_arrays_are_named(index):
    ix = index.kernel_arrays()
    assert isinstance(ix, K.SeismicArrays)
    assert ix.lut is K.F16_LUT and ix.fwd_val.dtype == np.uint16
    assert set(SeismicIndex.ARRAYS) | {"lut"} == set(ix._fields)
    for name in SeismicIndex.ARRAYS:
        assert getattr(ix, name) is getattr(index, name)


def test_float16_bits_round_trip():
    v = np.array([0.0, 0.5, 1.25, 3.0e4, 65504.0], np.float32)
    bits = K.f16_bits(v)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(K.decode_values(bits), v)
    np.testing.assert_array_equal(K.F16_LUT[bits], v)
    assert K.f16_view(bits).dtype == np.float16
    assert K.f16_lossless(v) and not K.f16_lossless(np.array([0.1], np.float32))


def test_decoded_summaries_layouts_agree(index):
    """Component-major entries (as stored, skip markers dropped) and the block-major view hold the same
    (block, term, code) triples; values are min + code * step; blocks list their terms ascending."""
    dec = K.decode_summaries(index.kernel_arrays())
    nb = index.n_blocks
    assert dec.sum_ptr.shape == (nb + 1,) and dec.comp_ent_ptr.shape == (index.comp_ids.shape[0] + 1,)
    # component-major -> (block, term, code)
    comp_of = np.repeat(np.arange(index.comp_ids.shape[0]), np.diff(dec.comp_ent_ptr))
    list_of_comp = np.repeat(np.arange(index.dim), np.diff(np.asarray(index.comp_list_ptr)))
    blocks = np.asarray(index.term_blk_ptr)[list_of_comp[comp_of]] + dec.ent_blk
    assert (dec.ent_blk >= 0).all()
    assert (blocks < np.asarray(index.term_blk_ptr)[list_of_comp[comp_of] + 1]).all()
    a = sorted(zip(blocks.tolist(), index.comp_ids[comp_of].tolist(), dec.ent_code.tolist()))
    blk_of = np.repeat(np.arange(nb), np.diff(dec.sum_ptr))
    b = sorted(zip(blk_of.tolist(), dec.sum_idx.tolist(), dec.sum_code.tolist()))
    assert a == b and len(a) > 0
    for bl in range(0, nb, max(1, nb // 50)):
        terms = dec.sum_idx[dec.sum_ptr[bl]:dec.sum_ptr[bl + 1]]
        assert (np.diff(terms) > 0).all()
    want = index.sum_min[blk_of] + dec.sum_code.astype(np.float32) * index.sum_step[blk_of]
    np.testing.assert_array_equal(dec.sum_val, want)
    ptr, terms, vals = index.block_summaries()
    np.testing.assert_array_equal(ptr, dec.sum_ptr)
    np.testing.assert_array_equal(vals, dec.sum_val)


@numba.njit
def _drain_blocks(bs, bi):
    n = bs.shape[0]
    topk.heapify_blocks(bs, bi, n)
    out_s = np.empty(n, np.float32)
    out_i = np.empty(n, np.int64)
    x = 0
    while n > 0:
        out_s[x] = bs[0]
        b, n = topk.heap_pop(bs, bi, n)
        out_i[x] = b
        x += 1
    return out_s, out_i


@numba.njit
def _best_k(s, k):
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    size = 0
    for d in range(s.shape[0]):
        size = topk.heap_push(hs, hi, size, k, s[d], d)
    out_s = np.full(k, -np.inf, np.float32)
    out_i = np.full(k, -1, np.int64)
    topk.heap_sorted_into(hs, hi, size, out_s, out_i)
    return out_s, out_i


def test_heaps():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 20, 300).astype(np.float32)  # many ties
    out_s, out_i = _drain_blocks(s.copy(), np.arange(300, dtype=np.int64))
    assert (np.diff(out_s) <= 0).all()
    np.testing.assert_array_equal(s[out_i], out_s)
    assert sorted(out_i.tolist()) == list(range(300))
    for k in (1, 7, 400):
        got_s, got_i = _best_k(s, k)
        want = np.lexsort((np.arange(300), -s))[:k]  # score desc, id asc
        np.testing.assert_array_equal(got_i[:len(want)], want)
        np.testing.assert_array_equal(got_s[:len(want)], s[want])
        assert (got_i[len(want):] == -1).all()


def test_kv_shares_the_topk_module():
    from aftershock.kv import kernels as kvk

    for name in ("heap_pop", "heap_push", "heap_sorted_into", "heapify_blocks", "knn_refine"):
        assert getattr(kvk, name) is getattr(topk, name)
