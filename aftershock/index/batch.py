"""`SparseBatch`: the one in-memory type for a batch of sparse vectors (CSR)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numba
import numpy as np

from aftershock.errors import (
    DuplicateTermError,
    FormatError,
    NegativeWeightError,
    NonFiniteValueError,
    RaggedArrayError,
    TermIdOutOfRangeError,
    UnknownTokenError,
)
from aftershock.index.limits import check_dim


class Vocabulary:
    """Token <-> id mapping (position in the list is the id)."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens: list[str] = [str(t) for t in tokens]
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.token_to_id) != len(self.tokens):
            seen: set[str] = set()
            dup = next(t for t in self.tokens if t in seen or seen.add(t))
            raise FormatError(f"vocabulary has token {dup!r} twice; each token needs one id")

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def id_of(self, token: str, where: str = "") -> int:
        try:
            return self.token_to_id[token]
        except KeyError:
            raise UnknownTokenError(
                f"{where}token {token!r} is not in the vocabulary of {len(self)} tokens; "
                "use the vocabulary the vectors were encoded with"
            ) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocabulary":
        """Read `tokenizer.json` (Hugging Face), `vocab.txt` (one token a line) or a JSON list."""
        path = Path(path)
        if path.is_dir():
            for name in ("tokenizer.json", "vocab.txt"):
                if (path / name).exists():
                    return cls.from_file(path / name)
            raise FormatError(f"{path} has no tokenizer.json or vocab.txt; pass the vocabulary file itself")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"vocabulary {path} is not UTF-8 text ({e.reason} at byte {e.start}); pass a "
                              "tokenizer.json, a vocab.txt or a JSON list of tokens") from None
        if path.suffix == ".txt":
            return cls(text.splitlines())
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise FormatError(f"vocabulary {path} is not valid JSON ({e}); pass a tokenizer.json, a vocab.txt "
                              "or a JSON list of tokens") from None
        if isinstance(data, list):
            if not all(isinstance(t, str) for t in data):
                raise FormatError(f"vocabulary {path}: a JSON list of tokens must hold only strings")
            return cls(data)
        model = data.get("model") if isinstance(data, dict) else None
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if not isinstance(vocab, dict):
            raise FormatError(f"{path}: expected a JSON list of tokens or a tokenizer.json with model.vocab")
        ids = list(vocab.values())
        if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
            raise FormatError(f"{path}: model.vocab must map each token to a distinct integer id 0..{len(ids) - 1}")
        tokens = [""] * len(vocab)
        for tok, i in vocab.items():
            tokens[i] = tok
        return cls(tokens)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.tokens, ensure_ascii=False), encoding="utf-8")


@numba.njit(cache=True)
def _rows_unsorted(indptr, indices):
    """Return (first row with unsorted ids or -1, first row with a repeated id or -1)."""
    unsorted = -1
    dup = -1
    for r in range(indptr.shape[0] - 1):
        for j in range(indptr[r] + 1, indptr[r + 1]):
            if indices[j] < indices[j - 1]:
                if unsorted < 0:
                    unsorted = r
            elif indices[j] == indices[j - 1]:
                if dup < 0:
                    dup = r
    return unsorted, dup


@numba.njit(cache=True)
def _sort_rows(indptr, indices, values):
    for r in range(indptr.shape[0] - 1):
        a, b = indptr[r], indptr[r + 1]
        order = np.argsort(indices[a:b], kind="mergesort")
        indices[a:b] = indices[a:b][order]
        values[a:b] = values[a:b][order]


def _as_ids(ids, n: int, what: str) -> np.ndarray:
    if ids is None:
        return np.array([str(i) for i in range(n)], dtype=object)
    if isinstance(ids, (str, Path)):
        raise RaggedArrayError(f"{what}: ids={str(ids)!r} is a single string; pass a list of ids "
                               "(read an id file with aftershock.index.read_ids)")
    out = np.array([str(x) for x in ids], dtype=object)
    if out.shape[0] != n:
        raise RaggedArrayError(
            f"{what}: {out.shape[0]} ids for {n} vectors; pass exactly one id per vector (or none for row numbers)"
        )
    return out


def _is_number(w) -> bool:
    return isinstance(w, (int, float, np.integer, np.floating)) and not isinstance(w, (bool, np.bool_))


def _term_key(t, what: str, rid) -> int:
    """A ``{term_id: weight}`` key: an int (not a bool) or a string of decimal digits; never truncated."""
    if isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)):
        return int(t)
    if isinstance(t, str) and t.isascii() and t.isdigit():
        return int(t)
    if isinstance(t, str):
        raise UnknownTokenError(f"{what} {rid!r} has token keys like {t!r} but no vocabulary; pass vocab=")
    raise TermIdOutOfRangeError(f"{what} {rid!r} has term id {t!r} of type {type(t).__name__}; term ids must be "
                                "integers (floats and booleans are not truncated)")


@dataclass(eq=False)
class SparseBatch:
    """A batch of sparse vectors in CSR form.

    ``indptr`` int64 (n+1), ``indices`` int32 (sorted within each row), ``values`` float32 (finite, >= 0),
    ``ids`` object array of str (one per row), ``dim`` vocabulary size, ``vocab`` optional `Vocabulary`.
    Build it with `from_arrays`, `from_scipy`, `from_dicts`, `from_rows` or `from_dense`: they validate.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    ids: np.ndarray
    dim: int
    vocab: Vocabulary | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        indptr,
        indices,
        values,
        ids: Iterable[str] | None = None,
        dim: int | None = None,
        vocab: Vocabulary | None = None,
        what: str = "vectors",
        copy: bool = True,
    ) -> "SparseBatch":
        """Validate CSR arrays and return a batch; unsorted rows are sorted, bad input raises."""
        indptr = np.asarray(indptr)
        indices = np.asarray(indices)
        values = np.asarray(values)
        if indptr.ndim != 1 or indptr.shape[0] < 1:
            raise RaggedArrayError(f"{what}: indptr must be 1-D with n+1 >= 1 entries, got shape {indptr.shape}")
        if indices.ndim != 1 or values.ndim != 1 or indices.shape[0] != values.shape[0]:
            raise RaggedArrayError(
                f"{what}: indices has shape {indices.shape} but values has shape {values.shape}; "
                "they must be 1-D and of equal length (one weight per term id)"
            )
        if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise RaggedArrayError(
                f"{what}: indptr must start at 0, never decrease and end at len(indices)={indices.shape[0]} "
                f"(starts {int(indptr[0])}, ends {int(indptr[-1])})"
            )
        n = indptr.shape[0] - 1
        ids = _as_ids(ids, n, what)
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise TermIdOutOfRangeError(f"{what}: term ids must be integers, got dtype {indices.dtype} (floats and "
                                        "booleans are not truncated)")
        if values.size and values.dtype.kind not in "fiu":
            raise FormatError(f"{what}: weights must be real numbers, got dtype {values.dtype}")
        if indptr.dtype.kind not in "iu":
            raise RaggedArrayError(f"{what}: indptr must hold integers, got dtype {indptr.dtype}")
        indptr = np.array(indptr, dtype=np.int64, copy=copy or None)
        values = np.array(values, dtype=np.float32, copy=copy or None)
        indices64 = indices.astype(np.int64, copy=False)
        if dim is None:
            dim = len(vocab) if vocab is not None else (int(indices64.max()) + 1 if indices.size else 0)
        dim = check_dim(dim, what)
        if vocab is not None and len(vocab) != dim:
            raise RaggedArrayError(f"{what}: dim={dim} but the vocabulary has {len(vocab)} tokens; they must agree")

        def row_of(pos: int) -> str:
            r = int(np.searchsorted(indptr, pos, side="right") - 1)
            return f"{what[:-3] + 'y' if what.endswith('ies') else what[:-1] if what.endswith('s') else what} {ids[r]!r} (row {r})"

        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise NonFiniteValueError(
                f"{row_of(int(bad[0]))} has weight {values[bad[0]]} for term {int(indices64[bad[0]])}; "
                "weights must be finite: drop or clip NaN/inf before indexing"
            )
        bad = np.flatnonzero(values < 0)
        if bad.size:
            raise NegativeWeightError(
                f"{row_of(int(bad[0]))} has negative weight {values[bad[0]]} for term {int(indices64[bad[0]])}; "
                "learned sparse weights must be >= 0: apply relu/clip or drop the entry"
            )
        bad = np.flatnonzero((indices64 < 0) | (indices64 >= dim))
        if bad.size:
            raise TermIdOutOfRangeError(
                f"{row_of(int(bad[0]))} has term id {int(indices64[bad[0]])} outside [0, dim={dim}); "
                "pass dim= or check the vocabulary"
            )
        if dim > np.iinfo(np.int32).max:
            raise TermIdOutOfRangeError(f"{what}: dim={dim} exceeds the int32 limit {np.iinfo(np.int32).max}")
        indices = np.array(indices, dtype=np.int32, copy=copy or None)
        unsorted, dup = _rows_unsorted(indptr, indices)
        if unsorted >= 0:
            if not copy:
                indices, values = indices.copy(), values.copy()
            _sort_rows(indptr, indices, values)
            unsorted, dup = _rows_unsorted(indptr, indices)
        if dup >= 0:
            a, b = indptr[dup], indptr[dup + 1]
            row = indices[a:b]
            term = int(row[np.flatnonzero(np.diff(row) == 0)[0]])
            raise DuplicateTermError(
                f"{row_of(int(a))} has term id {term} twice; each term may appear once per vector: sum or max the weights"
            )
        return cls._trusted(indptr, indices, values, ids, dim, vocab)

    @classmethod
    def _trusted(cls, indptr, indices, values, ids, dim, vocab=None) -> "SparseBatch":
        """A batch from arrays already validated (or derived from valid batches): no second check."""
        self = cls.__new__(cls)
        self.indptr, self.indices, self.values, self.ids, self.dim, self.vocab = (
            indptr, indices, values, ids, dim, vocab)
        return self

    def __post_init__(self):
        self.check()

    def check(self, what: str = "vectors") -> "SparseBatch":
        """The structural checks of a batch built directly (``SparseBatch(indptr, ...)``) or changed after
        construction, O(nnz) in numpy: dtypes (converted where lossless), indptr from 0 to nnz never
        decreasing, term ids in [0, dim), finite non-negative weights, one id per row, dim within its limit."""
        arrs = []
        for name, a, kinds in (("indptr", self.indptr, "iu"), ("indices", self.indices, "iu"),
                               ("values", self.values, "fiu")):
            a = np.asarray(a)
            if a.ndim != 1 or (a.size and a.dtype.kind not in kinds):
                raise RaggedArrayError(f"{what}: {name} must be a 1-D array of "
                                       f"{'integers' if kinds == 'iu' else 'real numbers'}, got {a.dtype} {a.shape}")
            arrs.append(a)
        indptr, indices, values = arrs
        self.dim = check_dim(self.dim, what)
        if indptr.shape[0] < 1 or indices.shape[0] != values.shape[0]:
            raise RaggedArrayError(f"{what}: indptr needs n+1 >= 1 entries and indices/values equal lengths "
                                   f"(got {indptr.shape[0]}, {indices.shape[0]}, {values.shape[0]})")
        if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0] or np.any(indptr[1:] < indptr[:-1]):
            raise RaggedArrayError(f"{what}: indptr must start at 0, never decrease and end at "
                                   f"len(indices)={indices.shape[0]}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.dim):
            raise TermIdOutOfRangeError(f"{what}: term ids must lie in [0, dim={self.dim}); got "
                                        f"[{int(indices.min())}, {int(indices.max())}]")
        if values.size and not np.isfinite(values).all():
            raise NonFiniteValueError(f"{what}: weights must be finite: drop or clip NaN/inf")
        if values.size and (values < 0).any():
            raise NegativeWeightError(f"{what}: weights must be >= 0: apply relu/clip")
        ids = self.ids if isinstance(self.ids, np.ndarray) and self.ids.dtype == object else _as_ids(
            self.ids, indptr.shape[0] - 1, what)
        if ids.ndim != 1 or ids.shape[0] != indptr.shape[0] - 1:
            raise RaggedArrayError(f"{what}: {ids.shape[0]} ids for {indptr.shape[0] - 1} vectors")
        if self.vocab is not None and len(self.vocab) != self.dim:
            raise RaggedArrayError(f"{what}: dim={self.dim} but the vocabulary has {len(self.vocab)} tokens")
        self.indptr = indptr.astype(np.int64, copy=False)
        self.indices = indices.astype(np.int32, copy=False)
        self.values = values.astype(np.float32, copy=False)
        self.ids = ids
        return self

    @classmethod
    def from_scipy(cls, matrix, ids=None, vocab: Vocabulary | None = None, what: str = "vectors") -> "SparseBatch":
        """From any scipy.sparse matrix/array (converted to CSR); dim = its number of columns."""
        import scipy.sparse as sp

        m = sp.csr_matrix(matrix)
        return cls.from_arrays(m.indptr, m.indices, m.data, ids=ids, dim=m.shape[1], vocab=vocab, what=what)

    @classmethod
    def from_rows(cls, rows: Sequence, ids=None, dim: int | None = None, vocab=None, what="vectors") -> "SparseBatch":
        """From a list of ``(indices, values)`` pairs of numpy arrays or lists (ragged pairs raise)."""
        lengths = np.zeros(len(rows) + 1, dtype=np.int64)
        idx_parts, val_parts = [], []
        for r, pair in enumerate(rows):
            if len(pair) != 2:
                raise RaggedArrayError(f"{what}: row {r} is not an (indices, values) pair")
            i, v = np.asarray(pair[0]).ravel(), np.asarray(pair[1]).ravel()
            if i.size and i.dtype.kind not in "iu":
                raise TermIdOutOfRangeError(f"{what}: row {r} has term ids of type {i.dtype}; term ids must be "
                                            "integers (floats and booleans are not truncated)")
            if v.size and v.dtype.kind not in "fiu":
                raise FormatError(f"{what}: row {r} has weights of type {v.dtype}; weights must be real numbers")
            v = v.astype(np.float64)
            if i.shape[0] != v.shape[0]:
                raise RaggedArrayError(
                    f"{what}: row {r} has {i.shape[0]} term ids but {v.shape[0]} weights; give one weight per id"
                )
            lengths[r + 1] = i.shape[0]
            idx_parts.append(i.astype(np.int64))
            val_parts.append(v)
        indptr = np.cumsum(lengths)
        indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
        values = np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32)
        return cls.from_arrays(indptr, indices, values, ids=ids, dim=dim, vocab=vocab, what=what, copy=False)

    @classmethod
    def from_dicts(
        cls, rows: Sequence[Mapping], ids=None, vocab: Vocabulary | None = None, dim: int | None = None,
        what: str = "vectors",
    ) -> "SparseBatch":
        """From ``{token: weight}`` (needs ``vocab``) or ``{term_id: weight}`` mappings."""
        pairs = []
        ids = _as_ids(ids, len(rows), what)
        for r, row in enumerate(rows):
            keys = list(row.keys())
            if vocab is not None and keys and isinstance(keys[0], str):
                term_ids = [vocab.id_of(t, f"{what} {ids[r]!r}: ") for t in keys]
            else:
                term_ids = [_term_key(t, what, ids[r]) for t in keys]
            weights = list(row.values())
            for w in weights:
                if not _is_number(w):
                    raise FormatError(f"{what} {ids[r]!r} has weight {w!r} of type {type(w).__name__}; weights "
                                      "must be real numbers")
            pairs.append((np.asarray(term_ids, dtype=np.int64), np.asarray(weights, dtype=np.float64)))
        return cls.from_rows(pairs, ids=ids, dim=dim, vocab=vocab, what=what)

    @classmethod
    def from_dense(cls, array, ids=None, vocab=None, what="vectors") -> "SparseBatch":
        """From a dense 2-D array (n, dim): its non-zeros become the entries."""
        a = np.asarray(array, dtype=np.float32)
        if a.ndim != 2:
            raise RaggedArrayError(f"{what}: a dense array must be 2-D (n, dim), got shape {a.shape}")
        import scipy.sparse as sp

        return cls.from_scipy(sp.csr_matrix(a), ids=ids, vocab=vocab, what=what)

    @classmethod
    def concat(cls, batches: Sequence["SparseBatch"]) -> "SparseBatch":
        if not batches:
            raise RaggedArrayError("concat needs at least one batch")
        dim = max(b.dim for b in batches)
        offsets = np.cumsum([0] + [b.nnz for b in batches])
        indptr = np.concatenate([batches[0].indptr[:1]] + [b.indptr[1:] + o for b, o in zip(batches, offsets)])
        return cls._trusted(
            indptr.astype(np.int64),
            np.concatenate([b.indices for b in batches]).astype(np.int32),
            np.concatenate([b.values for b in batches]).astype(np.float32),
            np.concatenate([b.ids for b in batches]).astype(object),
            dim,
            batches[0].vocab,
        )

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.values[a:b]

    def to_dict(self, i: int) -> dict:
        idx, val = self.row(i)
        keys = [self.vocab.tokens[t] for t in idx] if self.vocab is not None else [int(t) for t in idx]
        return dict(zip(keys, (float(v) for v in val)))

    def __getitem__(self, rows) -> "SparseBatch":
        """Row subset (slice, int array or boolean mask) as a new batch."""
        sel = np.arange(len(self))[rows]
        sel = np.atleast_1d(sel)
        starts, ends = self.indptr[sel], self.indptr[sel + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if sel.size else np.zeros(0, np.int64)
        return SparseBatch._trusted(indptr, self.indices[take], self.values[take], self.ids[sel], self.dim, self.vocab)

    def to_scipy(self):
        import scipy.sparse as sp

        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.dim))

    def nnz_per_row(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __repr__(self) -> str:
        return f"SparseBatch(n={len(self)}, dim={self.dim}, nnz={self.nnz}, vocab={'yes' if self.vocab else 'no'})"
