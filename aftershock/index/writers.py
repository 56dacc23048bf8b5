"""Vector writers, one per format, appending batch after batch: ``write_vectors`` writes one batch
through them and streaming encode (`aftershock.lsr.stream`) appends chunk by chunk.

``with open_vector_writer(path, dim) as w: w.write(batch); ...`` picks the format from the suffix
(``.parquet``; ``.jsonl[.gz]`` Seismic JSONL; ``.bin[.gz]`` Seismic binary; ``.npz`` CSR). Parquet,
JSONL and .bin stream (memory bounded by one batch); ``.npz`` keeps the batches until `close`
(``streams`` is False for it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from aftershock.errors import FormatError
from aftershock.index.batch import SparseBatch
from aftershock.index.text import is_gzip, open_text

FORMATS = ("jsonl", "bin", "parquet", "npz")


def guess_format(path) -> str:
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for fmt, suffixes in {"jsonl": (".jsonl", ".json"), "bin": (".bin",), "parquet": (".parquet", ".pq"),
                          "npz": (".npz",)}.items():
        if name.endswith(suffixes):
            return fmt
    raise FormatError(f"cannot tell the format of {path!s} from its name; pass format= one of {', '.join(FORMATS)}")


def to_arrow(batch: SparseBatch):
    """The batch as a `pyarrow.Table` (columns id, indices, values), zero-copy for the numbers."""
    import pyarrow as pa

    big = batch.nnz >= 2**31
    lists = pa.LargeListArray if big else pa.ListArray
    offsets = pa.array(batch.indptr if big else batch.indptr.astype(np.int32))
    table = pa.Table.from_arrays(
        [pa.array(list(batch.ids), pa.string()), lists.from_arrays(offsets, pa.array(batch.indices)),
         lists.from_arrays(offsets, pa.array(batch.values))],
        names=["id", "indices", "values"],
    )
    meta = {b"aftershock.dim": str(batch.dim).encode()}
    if batch.vocab is not None:  # the vocabulary travels with the vectors (token queries, serve, build)
        meta[b"aftershock.vocab"] = json.dumps(batch.vocab.tokens, ensure_ascii=False).encode()
    return table.replace_schema_metadata(meta)


class VectorWriter:
    """Base class: ``write(batch)`` appends rows, ``close()`` finishes the file; a context manager."""

    streams = True

    def __init__(self, path, dim: int):
        self.path, self.dim, self.rows = Path(path), int(dim), 0

    def write(self, batch: SparseBatch) -> None:
        self.rows += len(batch)
        self._write(batch)

    def _write(self, batch: SparseBatch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ParquetWriter(VectorWriter):
    """One row group per written batch; the dimension goes into the schema metadata."""

    def __init__(self, path, dim: int, row_group_size: int | None = None):
        super().__init__(path, dim)
        self.writer, self.row_group_size = None, row_group_size

    def _write(self, batch):
        import pyarrow.parquet as pq

        table = to_arrow(batch)
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema)
        self.writer.write_table(table, row_group_size=self.row_group_size)

    def close(self):
        if self.writer is False:
            return
        if self.writer is None:  # no rows: still a valid, empty file
            self._write(SparseBatch.from_arrays([0], [], [], ids=[], dim=self.dim))
        self.writer.close()
        self.writer = False


class JsonlWriter(VectorWriter):
    """Seismic JSONL ``{"id", "vector": {token: weight}}``; tokens are the vocabulary's strings, or the
    term ids as strings without one."""

    def __init__(self, path, dim: int):
        super().__init__(path, dim)
        self.f = open_text(self.path, "w")
        self._keys, self._keys_of = None, None

    def _keys_for(self, batch) -> np.ndarray:
        """The JSON-escaped key of each posting: the vocabulary's table (escaped once per vocabulary),
        or the distinct term ids of the batch as strings."""
        vocab = batch.vocab
        if vocab is None:
            uniq, inv = np.unique(batch.indices, return_inverse=True)
            return np.array([f'"{t}"' for t in uniq.tolist()] or [""], dtype=object)[inv]
        if self._keys_of is not vocab:
            self._keys = np.array([json.dumps(t, ensure_ascii=False) for t in vocab.tokens] or [""], dtype=object)
            self._keys_of = vocab
        return self._keys[batch.indices]

    def _write(self, batch):
        if len(batch) == 0:
            return
        keys = self._keys_for(batch)
        pairs = [f"{k}: {v!r}" for k, v in zip(keys.tolist(), batch.values.tolist())]
        ptr = batch.indptr.tolist()
        ids = [json.dumps(str(i), ensure_ascii=False) for i in batch.ids]
        self.f.write("".join(f'{{"id": {ids[r]}, "vector": {{{", ".join(pairs[ptr[r]:ptr[r + 1]])}}}}}\n'
                             for r in range(len(batch))))

    def close(self):
        self.f.close()


def bin_words(batch: SparseBatch) -> np.ndarray:
    """The rows of a batch in Seismic's binary layout (without the leading count): per row ``u32 nnz``,
    ``nnz x u32`` term ids, ``nnz x f32`` weights."""
    lengths = batch.nnz_per_row().astype(np.int64)
    out = np.empty(len(batch) + 2 * batch.nnz, dtype="<u4")
    heads = np.concatenate([[0], np.cumsum(1 + 2 * lengths)])[:-1].astype(np.int64)
    out[heads] = lengths
    pos = np.repeat(heads + 1, lengths) + (np.arange(batch.nnz, dtype=np.int64) - np.repeat(batch.indptr[:-1], lengths))
    out[pos] = batch.indices
    out.view("<f4")[pos + np.repeat(lengths, lengths)] = batch.values
    return out


class BinWriter(VectorWriter):
    """Seismic binary: LE ``u32 n`` then the rows. A plain file gets its count written in place at
    `close`; a ``.gz`` one collects the rows in a temporary file first (a gzip stream cannot seek back)."""

    def __init__(self, path, dim: int):
        super().__init__(path, dim)
        self.gz = is_gzip(self.path)
        if self.gz:
            fd, self.tmp = tempfile.mkstemp(prefix=".aftershock-", suffix=".rows", dir=str(self.path.parent))
            self.f = os.fdopen(fd, "wb")
        else:
            self.f = open(self.path, "wb")
            self.f.write(b"\0\0\0\0")

    def _write(self, batch):
        self.f.write(bin_words(batch).tobytes())

    def close(self):
        if self.f.closed:
            return
        header = np.array([self.rows], dtype="<u4").tobytes()
        if not self.gz:
            self.f.seek(0)
            self.f.write(header)
            self.f.close()
            return
        self.f.close()
        try:
            with open_text(self.path, "wb") as out, open(self.tmp, "rb") as rows:
                out.write(header)
                shutil.copyfileobj(rows, out, 1 << 22)
        finally:
            os.unlink(self.tmp)


class NpzWriter(VectorWriter):
    """CSR ``.npz`` (``indptr``, ``indices``, ``values``, ``dim``); the batches are kept until `close`."""

    streams = False

    def __init__(self, path, dim: int):
        super().__init__(path, dim)
        self.parts: list[SparseBatch] = []

    def _write(self, batch):
        self.parts.append(batch)

    def close(self):
        if self.parts is None:
            return
        if len(self.parts) == 1:
            b = self.parts[0]
            indptr, indices, values = b.indptr, b.indices, b.values
        elif self.parts:
            lengths = np.concatenate([p.nnz_per_row() for p in self.parts])
            indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            indices = np.concatenate([p.indices for p in self.parts])
            values = np.concatenate([p.values for p in self.parts])
        else:
            indptr, indices, values = np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        np.savez(self.path, indptr=indptr, indices=indices, values=values, dim=np.int64(self.dim))
        self.parts = None


WRITERS = {"parquet": ParquetWriter, "jsonl": JsonlWriter, "bin": BinWriter, "npz": NpzWriter}


def open_vector_writer(path, dim: int, format: str | None = None, stream: bool = False) -> VectorWriter:
    """A writer for ``path`` (format from the suffix unless ``format``); ``stream=True`` refuses a format
    that cannot stream (``.npz``)."""
    path = Path(path)
    fmt = format or guess_format(path)
    if fmt not in WRITERS:
        raise FormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if stream and not WRITERS[fmt].streams:
        raise FormatError(f"cannot stream-write {fmt!r} ({path}); use .parquet, .jsonl[.gz] or .bin[.gz] "
                          "(convert afterwards if you need .npz)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return WRITERS[fmt](path, dim)
