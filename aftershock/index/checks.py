"""Structural checks of loaded index arrays, written once: dtypes, shapes, CSR pointers (from 0, never
decreasing, ending at the array they index), ids in range, finite non-negative values. Every check is a
few O(n) numpy passes, cheap enough to run on every load (``verify=False`` skips only the hashes). Each
failure is an `IndexCorruptError` naming the index, the array and what is wrong."""

from __future__ import annotations

import numpy as np

from aftershock.errors import ConfigError, IndexCorruptError, TermIdOutOfRangeError
from aftershock.index.batch import SparseBatch
from aftershock.index.limits import check_dim, check_terms_per_doc
from aftershock.index.text import check_ids

I64 = (np.dtype(np.int64),)
TERM = (np.dtype(np.uint16), np.dtype(np.uint32))


class Checker:
    """Checks over one index's ``arrays`` (name -> array); ``where`` names the index in messages."""

    def __init__(self, arrays: dict, where):
        self.arrays, self.where = arrays, str(where)

    def fail(self, msg: str):
        raise IndexCorruptError(f"{self.where}: {msg}; the index is damaged or was edited: rebuild it")

    def meta_int(self, meta: dict, key: str, lo: int = 0, hi: int = 2**62) -> int:
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(f"meta.json {key}={v!r} is not an integer in [{lo}, {hi}]")
        return v

    def array(self, name: str, dtypes, ndim: int = 1, length: int | None = None) -> np.ndarray:
        a = self.arrays.get(name)
        if a is None:
            self.fail(f"array {name!r} is missing")
        if a.dtype not in dtypes or not a.dtype.isnative:
            self.fail(f"array {name!r} has dtype {a.dtype}, expected one of {[str(d) for d in dtypes]}")
        if a.ndim != ndim or not a.flags.c_contiguous:
            self.fail(f"array {name!r} has shape {a.shape} (expected {ndim} dimension(s), C order)")
        if length is not None and a.shape[0] != length:
            self.fail(f"array {name!r} has {a.shape[0]} rows, expected {length}")
        return a

    def ptr(self, name: str, length: int, end: int, dtypes=I64) -> np.ndarray:
        """A CSR pointer of ``length`` entries: starts at 0, never decreases, ends at ``end``."""
        a = self.array(name, dtypes, 1, length)
        if length < 1:
            self.fail(f"array {name!r} is empty")
        if int(a[0]) != 0 or int(a[-1]) != end:
            self.fail(f"pointer {name!r} runs from {int(a[0])} to {int(a[-1])}, expected 0 to {end}")
        if length > 1 and bool((a[1:] < a[:-1]).any()):
            self.fail(f"pointer {name!r} decreases")
        return a

    def ids(self, name: str, a: np.ndarray, hi: int, lo: int = 0) -> None:
        """Every entry of ``a`` lies in [lo, hi)."""
        if a.size and (int(a.min()) < lo or int(a.max()) >= hi):
            self.fail(f"array {name!r} holds values in [{int(a.min())}, {int(a.max())}], outside [{lo}, {hi})")

    def weights(self, name: str, a: np.ndarray) -> None:
        """Finite and >= 0: float32 values, or float16 bits stored as uint16 (no inf/NaN exponent, no sign)."""
        if not a.size:
            return
        if a.dtype == np.uint16:
            if bool(((a & 0x7C00) == 0x7C00).any()) or bool((a & 0x8000).any()):
                self.fail(f"array {name!r} holds float16 values that are infinite, NaN or negative")
        elif not bool(np.isfinite(a).all()) or bool((a < 0).any()):
            self.fail(f"array {name!r} holds values that are infinite, NaN or negative")

    def doc_ids(self, n_docs: int) -> np.ndarray:
        a = self.arrays.get("doc_ids")
        if a is None or a.dtype.kind != "U" or a.ndim != 1 or a.shape[0] != n_docs:
            self.fail(f"array 'doc_ids' must hold {n_docs} strings, got "
                      f"{None if a is None else (str(a.dtype), a.shape)}")
        return a


def check_build_input(docs, max_terms: int | None = None, what: str = "documents") -> None:
    """What every index build checks first: a `SparseBatch` within the dim limit, no document above the
    terms-per-document limit, ids unique and printable (no whitespace or control characters)."""
    if not isinstance(docs, SparseBatch):
        raise ConfigError(f"documents must be a SparseBatch, got {type(docs).__name__}; build one with "
                          "SparseBatch.from_rows/from_dicts/from_scipy or read_vectors")
    check_dim(docs.dim, what)
    check_terms_per_doc(docs.indptr, docs.ids, max_terms, what)
    check_ids(docs.ids, what[:-1] if what.endswith("s") else what)


def check_search_input(queries, k, dim: int, owner: str = "index", fix: str = "the vocabulary the index was built "
                       "with") -> SparseBatch:
    """What every search checks first: ``queries`` a `SparseBatch` (a scipy sparse matrix is converted), still
    valid (a batch changed after construction must not reach the kernels), ``k`` an integer >= 1, and no
    query term id at or above the ``owner``'s ``dim``. Returns the batch."""
    if not isinstance(queries, SparseBatch):
        import scipy.sparse as sp

        if not sp.issparse(queries):
            raise ConfigError(f"queries must be a SparseBatch or a scipy sparse matrix, got {type(queries).__name__};"
                              " build one with SparseBatch.from_rows/from_dicts")
        queries = SparseBatch.from_scipy(queries, what="queries")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k={k!r} must be an integer >= 1")
    queries.check("queries")
    if queries.nnz and int(queries.indices.max()) >= dim:
        raise TermIdOutOfRangeError(f"a query has term id {int(queries.indices.max())} >= the {owner}'s dim {dim}; "
                                    f"encode queries with {fix}")
    return queries
