"""Memory helpers of the CPU kernels: the index's arrays as one named structure, float16 bits (the one place
they are encoded and decoded), cache-line prefetch, and the Numba thread count as a context manager.

Forward values are stored either as float32 or as float16 *bits* (uint16) decoded through a 65,536-entry
lookup table (Numba has no float16 arithmetic on the CPU).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

F16_MAX = 65504.0


class SeismicArrays(NamedTuple):
    """The arrays the Seismic kernels read, by name (see ``SeismicIndex`` for what each holds).

    Numba passes a NamedTuple of arrays like a plain tuple (one struct, no copy); kernels read its fields by
    name. ``lut`` is `F16_LUT` (used when ``fwd_val`` holds float16 bits).
    """

    fwd_ptr: np.ndarray
    fwd_idx: np.ndarray
    fwd_val: np.ndarray
    lut: np.ndarray
    term_blk_ptr: np.ndarray
    blk_doc_ptr: np.ndarray
    blk_docs: np.ndarray
    comp_list_ptr: np.ndarray
    comp_ids: np.ndarray
    comp_cnt: np.ndarray
    ovf_list_ptr: np.ndarray
    ovf_cnt: np.ndarray
    ent_list_ptr: np.ndarray
    ent_delta: np.ndarray
    ent_code: np.ndarray
    sum_min: np.ndarray
    sum_step: np.ndarray
    knn: np.ndarray


def offsets(counts) -> np.ndarray:
    """CSR offsets (int64, len(counts) + 1) of consecutive runs of ``counts`` entries."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


# ------------------------------------------------------------------------------------------- float16 bits
def f16_bits(values: np.ndarray) -> np.ndarray:
    """float values -> float16 bits (uint16), as the forward index stores them."""
    return np.asarray(values).astype(np.float16).view(np.uint16)


def f16_view(bits: np.ndarray) -> np.ndarray:
    """float16 bits (uint16) seen as a float16 array (no copy)."""
    return np.asarray(bits).view(np.float16)


def decode_values(values: np.ndarray) -> np.ndarray:
    """Stored values as float32: float16 bits (uint16) decoded, anything else cast."""
    v = np.asarray(values)
    return f16_view(v).astype(np.float32) if v.dtype == np.uint16 else v.astype(np.float32)


F16_LUT = decode_values(np.arange(65536, dtype=np.uint16))  # float16 bits -> float32, for the kernels


def f16_lossless(vals: np.ndarray) -> bool:
    """True when every value survives a float16 round trip exactly (then 2 bytes per value suffice)."""
    if vals.size == 0:
        return True
    if float(vals.max()) > F16_MAX:
        return False
    return bool(np.array_equal(vals.astype(np.float16).astype(np.float32), vals))


def value_at(values, j, lut):  # pragma: no cover - replaced by the overload inside jitted code
    return lut[values[j]] if values.dtype == np.uint16 else np.float32(values[j])


@overload(value_at, inline="always")
def _value_at_impl(values, j, lut):
    if isinstance(values, types.Array) and values.dtype == types.uint16:
        return lambda values, j, lut: lut[values[j]]
    return lambda values, j, lut: np.float32(values[j])


# ------------------------------------------------------------------------------------------- cache lines
def line_step(a, b):  # pragma: no cover - replaced by the overload inside jitted code
    return 64 // max(a.itemsize, b.itemsize)


@overload(line_step, inline="always")
def _line_step_impl(a, b):
    """Entries of the wider of two arrays per 64-byte cache line, as a compile-time constant."""
    n = 64 // max(a.dtype.bitwidth // 8, b.dtype.bitwidth // 8)
    return lambda a, b: n


@intrinsic
def prefetch(typingctx, arr, i):
    """Hint the CPU to fetch ``arr[i]`` into cache (llvm.prefetch, read, high locality)."""
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False, boundscheck=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------------------------------------------------- threads
@contextmanager
def numba_threads(n: int):
    """Run the body with ``n`` Numba threads, then restore the caller's count (even on error)."""
    prev = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(prev)
