"""Readers and writers: Seismic JSONL and .bin, Parquet/Arrow (streamed), CSR .npz, id files.

`read_vectors(path)` / `write_vectors(batch, path)` pick the format from the suffix
(``.jsonl[.gz]``, ``.bin[.gz]``, ``.parquet``, ``.npz``) or from ``format=``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numba
import numpy as np

from aftershock.errors import FormatError, RaggedArrayError, ResourceLimitError
from aftershock.index.batch import SparseBatch, Vocabulary
from aftershock.index.limits import check_terms_per_doc, max_terms_per_doc as max_terms_per_doc_limit
from aftershock.index.text import open_text, read_ids, reading
from aftershock.index.writers import FORMATS, guess_format, open_vector_writer, to_arrow

__all__ = ["FORMATS", "guess_format", "read_jsonl", "write_jsonl", "read_bin", "write_bin", "to_arrow", "from_arrow",
           "iter_parquet", "read_parquet", "write_parquet", "read_npz", "write_npz", "read_vectors", "write_vectors"]


def _resolve_ids(ids):
    """``ids`` may be a sequence of ids or the path of a one-id-per-line file."""
    return read_ids(ids) if isinstance(ids, (str, Path)) else ids


# ---------------------------------------------------------------------------------------------- JSONL
def read_jsonl(path, vocab: Vocabulary | None = None, dim: int | None = None, unknown: str = "error",
               what: str = "vectors", max_terms_per_doc: int | None = None) -> SparseBatch:
    """Seismic JSONL: one ``{"id", "content"?, "vector": {token: weight}}`` per line.

    With ``vocab`` tokens map through it (``unknown="error"`` raises on a token it lacks, ``"drop"``
    skips it: right for queries, whose unseen tokens match no document). Without one, the
    vocabulary is built from the tokens in order of first appearance (as Seismic does).
    """
    path = Path(path)
    grow = vocab is None
    tokens: list[str] = [] if grow else vocab.tokens
    tok_id: dict[str, int] = {} if grow else vocab.token_to_id
    ids, lengths, idx, val = [], [0], [], []
    limit = max_terms_per_doc_limit(max_terms_per_doc)
    lineno = 0
    with reading(path, "Seismic JSONL"), open_text(path, "r", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                vec = obj["vector"]
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
                raise FormatError(f"{path}:{lineno}: not a Seismic JSONL record with a 'vector' map ({e})") from None
            if not isinstance(vec, dict):
                raise FormatError(f"{path}:{lineno}: 'vector' must be a {{token: weight}} object")
            rid = obj.get("id", len(ids))
            if isinstance(rid, bool) or not isinstance(rid, (str, int)):
                raise FormatError(f"{path}:{lineno}: 'id' must be a string or an integer, got {rid!r}")
            ids.append(str(rid))
            if len(vec) > limit:
                raise ResourceLimitError(
                    f"{path}:{lineno}: {what[:-1]} {ids[-1]!r} has {len(vec)} terms, above the limit of {limit} terms "
                    "per document; raise it with --max-terms-per-doc / max_terms_per_doc= (or "
                    "AFTERSHOCK_MAX_TERMS_PER_DOC)")
            n = 0
            for tok, w in vec.items():
                if type(w) is not float and type(w) is not int:
                    raise FormatError(f"{path}:{lineno} ({what[:-1]} {ids[-1]!r}): token {tok!r} has weight {w!r}; "
                                      "weights must be JSON numbers (not strings, booleans or null)")
                t = tok_id.get(tok)
                if t is None:
                    if grow:
                        t = tok_id[tok] = len(tokens)
                        tokens.append(tok)
                    elif unknown == "drop":
                        continue
                    else:
                        vocab.id_of(tok, f"{path}:{lineno} ({what[:-3] + 'y' if what.endswith('ies') else what[:-1]} {ids[-1]!r}): ")
                idx.append(t)
                val.append(w)
                n += 1
            lengths.append(n)
    try:
        values = np.asarray(val, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{path}: a weight is not a number; weights must be JSON numbers") from None
    vocab_out = Vocabulary(tokens) if grow else vocab
    return SparseBatch.from_arrays(np.cumsum(lengths), np.asarray(idx, dtype=np.int64), values, ids=ids,
                                   dim=dim if dim is not None else len(vocab_out), vocab=vocab_out, what=what)


def write_jsonl(batch: SparseBatch, path) -> None:
    """Seismic JSONL; tokens are the vocabulary's strings, or the term ids as strings without one."""
    write_vectors(batch, path, format="jsonl")


# ---------------------------------------------------------------------------------------------- Seismic .bin
@numba.njit(cache=True)
def _scan_bin(words):
    """Offsets of each vector's ids inside a u32 buffer; -1 marks a truncated file."""
    n = words[0]
    if np.int64(n) > words.shape[0] - 1:  # each vector needs >= 1 word: a bad header, not a huge allocation
        return np.empty(0, np.int64), np.empty(0, np.int64), -1
    starts = np.empty(n, np.int64)
    lengths = np.empty(n, np.int64)
    pos = 1
    for i in range(n):
        if pos >= words.shape[0]:
            return starts, lengths, -1
        nnz = words[pos]
        if pos + 1 + 2 * np.int64(nnz) > words.shape[0]:
            return starts, lengths, -1
        starts[i] = pos + 1
        lengths[i] = nnz
        pos += 1 + 2 * np.int64(nnz)
    return starts, lengths, pos


@numba.njit(cache=True)
def _gather_bin(words, fwords, starts, lengths, indices, values):
    o = 0
    for i in range(starts.shape[0]):
        s, m = starts[i], lengths[i]
        for j in range(m):
            indices[o + j] = words[s + j]
            values[o + j] = fwords[s + m + j]
        o += m


def read_bin(path, ids=None, dim: int | None = None, vocab: Vocabulary | None = None,
             what: str = "vectors", max_terms_per_doc: int | None = None) -> SparseBatch:
    """Seismic binary: LE ``u32 n``, then per vector ``u32 nnz``, ``nnz x u32`` ids, ``nnz x f32`` values."""
    ids = _resolve_ids(ids)
    path = Path(path)
    with reading(path, "Seismic .bin"), open_text(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or len(raw) % 4:
        raise FormatError(f"{path}: {len(raw)} bytes is not a whole number of u32 words; the file is truncated")
    words = np.frombuffer(raw, dtype="<u4")
    starts, lengths, end = _scan_bin(words)
    if end < 0:
        raise FormatError(f"{path}: header says {int(words[0])} vectors but the file ends early; it is truncated")
    if end != words.shape[0]:
        raise FormatError(f"{path}: {4 * (words.shape[0] - end)} bytes after the last of {int(words[0])} vectors")
    check_terms_per_doc(np.concatenate([[0], np.cumsum(lengths)]), ids, max_terms_per_doc, what)
    nnz = int(lengths.sum())
    indices = np.empty(nnz, np.int64)
    values = np.empty(nnz, np.float32)
    _gather_bin(words, words.view("<f4"), starts, lengths, indices, values)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return SparseBatch.from_arrays(indptr, indices, values, ids=ids, dim=dim, vocab=vocab, what=what, copy=False)


def write_bin(batch: SparseBatch, path) -> None:
    write_vectors(batch, path, format="bin")


# ---------------------------------------------------------------------------------------------- Parquet
def from_arrow(table_or_batch, dim: int | None = None, vocab=None, what: str = "vectors") -> SparseBatch:
    """A `pyarrow.Table`/`RecordBatch` with columns ``id`` (optional), ``indices``, ``values`` (list columns)."""
    import pyarrow as pa

    t = table_or_batch
    names = t.schema.names
    for col in ("indices", "values"):
        if col not in names:
            raise FormatError(f"Arrow data has columns {names}; it needs list columns 'indices' and 'values'")
    if dim is None and t.schema.metadata and b"aftershock.dim" in t.schema.metadata:
        dim = int(t.schema.metadata[b"aftershock.dim"])
    if isinstance(t, pa.Table):
        t = t.combine_chunks().to_batches()[0] if t.num_rows else None
        if t is None:
            return SparseBatch.from_arrays([0], [], [], ids=[], dim=dim or 0, vocab=vocab, what=what)
    idx_col, val_col = t.column("indices"), t.column("values")
    if idx_col.null_count or val_col.null_count:
        raise FormatError("Arrow data has null vectors; write an empty list for an empty vector")
    io_, vo = np.asarray(idx_col.offsets), np.asarray(val_col.offsets)
    if not np.array_equal(io_ - io_[0], vo - vo[0]):
        bad = int(np.flatnonzero((io_ - io_[0]) != (vo - vo[0]))[0]) - 1
        raise RaggedArrayError(f"{what}: row {max(bad, 0)} has a different number of indices and values")
    indices = np.asarray(idx_col.flatten())
    values = np.asarray(val_col.flatten())
    ids = [str(x) for x in t.column("id").to_pylist()] if "id" in names else None
    if dim is None:
        meta = t.schema.metadata or {}
        if b"aftershock.dim" in meta:
            dim = int(meta[b"aftershock.dim"])
    return SparseBatch.from_arrays(io_ - io_[0], indices, values, ids=ids, dim=dim, vocab=vocab, what=what)


def iter_parquet(path, batch_size: int = 65536, dim: int | None = None, vocab=None,
                 what: str = "vectors", max_terms_per_doc: int | None = None) -> Iterator[SparseBatch]:
    """Stream a Parquet file as batches of at most ``batch_size`` rows (never the whole file at once)."""
    import pyarrow.parquet as pq

    with reading(path, "Parquet"):
        pf = pq.ParquetFile(str(path))
        meta = pf.schema_arrow.metadata or {}
        if dim is None and b"aftershock.dim" in meta:
            dim = int(meta[b"aftershock.dim"])
        if vocab is None and b"aftershock.vocab" in meta:
            vocab = Vocabulary(json.loads(meta[b"aftershock.vocab"]))  # written by to_arrow
        batches = pf.iter_batches(batch_size=batch_size)
    while True:
        with reading(path, "Parquet"):
            rb = next(batches, None)
            if rb is None:
                return
            part = from_arrow(rb, dim=dim, vocab=vocab, what=what)
        check_terms_per_doc(part.indptr, part.ids, max_terms_per_doc, what)
        yield part


def read_parquet(path, dim: int | None = None, vocab=None, batch_size: int = 65536, what="vectors",
                 max_terms_per_doc: int | None = None) -> SparseBatch:
    parts = list(iter_parquet(path, batch_size=batch_size, dim=dim, vocab=vocab, what=what,
                              max_terms_per_doc=max_terms_per_doc))
    if not parts:
        if dim is None:
            import pyarrow.parquet as pq

            with reading(path, "Parquet"):
                meta = pq.read_schema(str(path)).metadata or {}
            dim = int(meta[b"aftershock.dim"]) if b"aftershock.dim" in meta else None
        return SparseBatch.from_arrays([0], [], [], ids=[], dim=dim or 0, vocab=vocab, what=what)
    out = SparseBatch.concat(parts)
    out.dim = dim if dim is not None else max(p.dim for p in parts)
    return out


def write_parquet(batch: SparseBatch, path, row_group_size: int = 65536) -> None:
    from aftershock.index.writers import ParquetWriter

    with ParquetWriter(path, batch.dim, row_group_size=row_group_size) as w:
        w.write(batch)


# ---------------------------------------------------------------------------------------------- npz
def read_npz(path, ids=None, dim: int | None = None, vocab=None, what="vectors",
             max_terms_per_doc: int | None = None) -> SparseBatch:
    """CSR ``.npz`` with arrays ``indptr``, ``indices``, ``values`` (and optionally ``dim``/``shape``)."""
    ids = _resolve_ids(ids)
    with reading(path, "CSR .npz"), np.load(path, allow_pickle=False) as z:
        if not hasattr(z, "files"):
            raise FormatError(f"{path} is a single .npy array, not a CSR .npz with indptr, indices and values")
        missing = {"indptr", "indices"} - set(z.files)
        if missing or not ({"values", "data"} & set(z.files)):
            raise FormatError(f"{path}: a CSR .npz needs arrays indptr, indices and values; it has {z.files}")
        if dim is None:
            if "dim" in z.files:
                dim = _npz_int(z["dim"], path, "dim")
            elif "shape" in z.files:
                dim = _npz_int(np.asarray(z["shape"]).ravel()[1:2], path, "shape[1]")
        vals = z["values"] if "values" in z.files else z["data"]
        indptr = z["indptr"]
        if indptr.ndim == 1 and indptr.dtype.kind in "iu" and indptr.shape[0] >= 2:
            check_terms_per_doc(indptr, ids, max_terms_per_doc, what)
        return SparseBatch.from_arrays(indptr, z["indices"], vals, ids=ids, dim=dim, vocab=vocab, what=what,
                                       copy=False)


def _npz_int(a, path, name) -> int:
    a = np.asarray(a)
    if a.size != 1 or a.dtype.kind not in "iu":
        raise FormatError(f"{path}: array {name!r} must be one integer, got {a.dtype} {a.shape}")
    return int(a.reshape(()))


def write_npz(batch: SparseBatch, path) -> None:
    write_vectors(batch, path, format="npz")


# ---------------------------------------------------------------------------------------------- dispatch
def read_vectors(path, format: str | None = None, ids=None, dim: int | None = None,
                 vocab: Vocabulary | None = None, unknown: str = "error", what: str = "vectors",
                 max_terms_per_doc: int | None = None) -> SparseBatch:
    """Read any supported file. ``ids`` is a list or a path to a one-id-per-line file. A vector with more than
    ``max_terms_per_doc`` non-zeros (default 4096, see `aftershock.index.limits`) is an error."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path} does not exist")
    fmt = format or guess_format(path)
    ids = _resolve_ids(ids)
    mt = max_terms_per_doc
    if fmt == "jsonl":
        batch = read_jsonl(path, vocab=vocab, dim=dim, unknown=unknown, what=what, max_terms_per_doc=mt)
        if ids is not None:
            batch = SparseBatch.from_arrays(batch.indptr, batch.indices, batch.values, ids=ids, dim=batch.dim,
                                            vocab=batch.vocab, what=what, copy=False)
        return batch
    if fmt == "bin":
        return read_bin(path, ids=ids, dim=dim, vocab=vocab, what=what, max_terms_per_doc=mt)
    if fmt == "npz":
        return read_npz(path, ids=ids, dim=dim, vocab=vocab, what=what, max_terms_per_doc=mt)
    if fmt == "parquet":
        batch = read_parquet(path, dim=dim, vocab=vocab, what=what, max_terms_per_doc=mt)
        if ids is not None:
            batch = SparseBatch.from_arrays(batch.indptr, batch.indices, batch.values, ids=ids, dim=batch.dim,
                                            vocab=batch.vocab, what=what, copy=False)
        return batch
    raise FormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def write_vectors(batch: SparseBatch, path, format: str | None = None) -> None:
    """Write ``batch`` to ``path`` (format from the suffix unless ``format``) through the format's writer."""
    with open_vector_writer(path, batch.dim, format) as w:
        w.write(batch)
