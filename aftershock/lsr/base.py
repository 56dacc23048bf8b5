"""The encoder interface and the input-text policy shared by every encoder.

Input policy (the same for every encoder, queries and documents):

* ``str`` is used as given; ``bytes`` are decoded as UTF-8. Invalid UTF-8 (and lone surrogates in a
  ``str``, e.g. from ``surrogateescape``) are replaced by U+FFFD with ``errors="replace"`` (the
  default) or raise `InputTextError` naming the text and the byte offset with ``errors="strict"``.
* A text that is empty or only whitespace encodes to the **empty vector** (no terms, no model call).
* ``None`` or any other type raises `InputTextError`.
* Texts longer than the max length (query and document sides are set separately) are truncated at
  that many tokens (special tokens included) by default; document encoders that run a transformer
  also offer ``long_documents="passages"``: the token sequence is cut into windows of max length,
  each window is encoded and the document vector is the element-wise max over its windows.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from aftershock.errors import ConfigError, InputTextError
from aftershock.index import SparseBatch, Vocabulary

SIDES = ("query", "document")


def clean_texts(texts: Iterable, errors: str = "replace", what: str = "text") -> list[str]:
    """Apply the input policy above; returns a list of ``str`` (possibly empty strings)."""
    if isinstance(texts, (str, bytes)):
        raise InputTextError(f"expected a list of {what}s, got a single {type(texts).__name__}; wrap it in a list")
    if errors not in ("replace", "strict"):
        raise ConfigError(f"errors={errors!r}; use 'replace' or 'strict'")
    out = []
    for i, t in enumerate(texts):
        if isinstance(t, (bytes, bytearray)):
            try:
                t = bytes(t).decode("utf-8", errors)
            except UnicodeDecodeError as e:
                raise InputTextError(f"{what} {i} is not valid UTF-8 (byte {e.start}: {bytes(t)[e.start:e.start + 1]!r}); "
                                     "decode it yourself or pass errors='replace'") from None
        elif isinstance(t, str):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:  # lone surrogates (e.g. from surrogateescape)
                if errors == "strict":
                    raise InputTextError(f"{what} {i} holds an undecodable character at position {e.start} "
                                         f"({t[e.start]!r}); pass errors='replace' to replace it with U+FFFD") from None
                t = t.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                t = t.encode("utf-8", "replace").decode("utf-8")
        else:
            raise InputTextError(f"{what} {i} is {type(t).__name__} ({t!r:.40}), not a string; "
                                 "pass str or UTF-8 bytes (use '' for a missing text)")
        out.append(t)
    return out


def check_side(side: str) -> str:
    if side not in SIDES:
        raise ConfigError(f"side={side!r}; use 'query' or 'document'")
    return side


def csr_from_parts(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> tuple:
    """CSR arrays from coordinate triples sorted by (row, col)."""
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols.astype(np.int32, copy=False), vals.astype(np.float32, copy=False)


def reorder_rows(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, order: np.ndarray) -> tuple:
    """Rows ``order[0], order[1], ...`` of a CSR matrix as a new CSR matrix (vectorised gather)."""
    lengths = np.diff(indptr)[order]
    new_ptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_ptr[1:])
    starts = np.repeat(indptr[:-1][order] - new_ptr[:-1], lengths)
    take = np.arange(new_ptr[-1], dtype=np.int64) + starts
    return new_ptr, indices[take], values[take]


class SparseEncoder:
    """Base class: text in, `SparseBatch` out (one row per text, vocabulary attached, dim = vocabulary size).

    Subclasses implement ``_encode(texts, side) -> (indptr, indices, values)`` for non-empty, cleaned
    texts; the base class applies the input policy, maps empty texts to empty vectors and builds the batch.
    """

    name = "encoder"
    vocab: Vocabulary

    def __init__(self, batch_size: int = 32, query_max_length: int | None = None,
                 doc_max_length: int | None = None, progress: bool = False, errors: str = "replace"):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        for n, v in (("query_max_length", query_max_length), ("doc_max_length", doc_max_length)):
            if v is not None and v < 1:
                raise ConfigError(f"{n}={v} must be >= 1 (or None for the model's limit)")
        self.batch_size = int(batch_size)
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.progress = progress
        self.errors = errors

    @property
    def dim(self) -> int:
        return len(self.vocab)

    def max_length(self, side: str) -> int | None:
        return self.query_max_length if side == "query" else self.doc_max_length

    # -------------------------------------------------------------- public API
    def encode_queries(self, texts: Sequence, ids=None) -> SparseBatch:
        return self.encode(texts, side="query", ids=ids)

    def encode_documents(self, texts: Sequence, ids=None) -> SparseBatch:
        return self.encode(texts, side="document", ids=ids)

    def encode(self, texts: Sequence, side: str = "document", ids=None) -> SparseBatch:
        check_side(side)
        texts = clean_texts(texts, self.errors, what=side)
        n = len(texts)
        keep = np.array([bool(t.strip()) for t in texts], dtype=bool)
        if keep.all():
            indptr, indices, values = self._encode(texts, side) if n else (np.zeros(1, np.int64), np.zeros(0, np.int32),
                                                                         np.zeros(0, np.float32))
        else:  # empty texts -> empty vectors
            sel = np.flatnonzero(keep)
            sub = self._encode([texts[i] for i in sel], side) if sel.size else (
                np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
            lengths = np.zeros(n, dtype=np.int64)
            lengths[sel] = np.diff(sub[0])
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths, out=indptr[1:])
            indices, values = sub[1], sub[2]
        return SparseBatch.from_arrays(indptr, indices, values, ids=ids, dim=self.dim, vocab=self.vocab,
                                       what="queries" if side == "query" else "documents", copy=False)

    def _encode(self, texts: list[str], side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"
