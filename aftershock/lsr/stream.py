"""Streaming corpus encoding (``aftershock encode``): read a BEIR/JSONL corpus chunk by chunk, encode,
append to the output file; memory stays bounded by the chunk size whatever the corpus size.

Output formats: ``.parquet`` (one row group per chunk), ``.jsonl[.gz]`` (Seismic JSONL) and
``.bin[.gz]`` (Seismic binary; the row count in its header is written at the end).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from aftershock.errors import FormatError
from aftershock.index import SparseBatch

STREAM_FORMATS = ("parquet", "jsonl", "bin")


def iter_corpus(path, chunk: int) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, texts) chunks of a JSONL corpus (BEIR ``_id``/``title``/``text``, or ``id``/``text``/``contents``)."""
    from aftershock.eval.beir import iter_jsonl, record_id

    ids, texts = [], []
    for obj in iter_jsonl(path):
        ids.append(record_id(obj))
        title = obj.get("title") or ""
        text = obj.get("text") if obj.get("text") is not None else (obj.get("contents") or "")
        texts.append(f"{title} {text}".strip() if title else text)
        if len(ids) >= chunk:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


class _Writer:
    def __init__(self, path: Path):
        self.path = path
        self.rows = 0

    def write(self, batch: SparseBatch) -> None:
        self.rows += len(batch)
        self._write(batch)

    def close(self) -> None:
        pass


class _ParquetWriter(_Writer):
    def __init__(self, path, dim: int):
        super().__init__(path)
        self.dim, self.writer = dim, None

    def _write(self, batch):
        import pyarrow.parquet as pq

        from aftershock.index import to_arrow

        table = to_arrow(batch)
        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema)
        self.writer.write_table(table)

    def close(self):
        if self.writer is None:  # no rows: still write a valid, empty file
            from aftershock.index import write_parquet

            write_parquet(SparseBatch.from_arrays([0], [], [], ids=[], dim=self.dim), self.path)
        else:
            self.writer.close()


class _JsonlWriter(_Writer):
    def __init__(self, path):
        super().__init__(path)
        self.f = gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else open(path, "w", encoding="utf-8")

    def _write(self, batch):
        tokens = batch.vocab.tokens if batch.vocab is not None else None
        lines = []
        for r in range(len(batch)):
            idx, val = batch.row(r)
            keys = [tokens[t] for t in idx] if tokens is not None else [str(t) for t in idx]
            lines.append(json.dumps({"id": batch.ids[r], "vector": dict(zip(keys, val.tolist()))}, ensure_ascii=False))
        self.f.write("\n".join(lines) + "\n")

    def close(self):
        self.f.close()


class _BinWriter(_Writer):
    """Rows go to a temporary file; `close` writes the header (row count) then copies the rows."""

    def __init__(self, path):
        super().__init__(path)
        fd, self.tmp = tempfile.mkstemp(prefix=".aftershock-", suffix=".rows", dir=str(path.parent))
        self.f = os.fdopen(fd, "wb")

    def _write(self, batch):
        lengths = batch.nnz_per_row().astype("<u4")
        out = np.empty(len(batch) + 2 * batch.nnz, dtype="<u4")
        heads = np.concatenate([[0], np.cumsum(1 + 2 * lengths.astype(np.int64))])[:-1]
        out[heads] = lengths
        pos_idx = np.repeat(heads + 1, lengths) + (np.arange(batch.nnz) - np.repeat(batch.indptr[:-1], lengths))
        out[pos_idx] = batch.indices
        out.view("<f4")[pos_idx + np.repeat(lengths, lengths)] = batch.values
        self.f.write(out.tobytes())

    def close(self):
        self.f.close()
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "wb") as out, open(self.tmp, "rb") as rows:
                out.write(np.array([self.rows], dtype="<u4").tobytes())
                shutil.copyfileobj(rows, out, 1 << 22)
        finally:
            os.unlink(self.tmp)


def open_writer(path, dim: int, fmt: str | None = None) -> _Writer:
    from aftershock.index.formats import guess_format

    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt not in STREAM_FORMATS:
        raise FormatError(f"cannot stream-write {fmt!r} ({path}); use .parquet, .jsonl[.gz] or .bin[.gz] "
                          "(convert afterwards if you need .npz)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return _ParquetWriter(path, dim)
    return _JsonlWriter(path) if fmt == "jsonl" else _BinWriter(path)


def encode_corpus(encoder, input_path, output_path, side: str = "document", chunk: int = 8192,
                  fmt: str | None = None, ids_path=None, progress: bool = True) -> dict:
    """Encode every record of ``input_path`` and stream the vectors to ``output_path``."""
    from tqdm.auto import tqdm

    writer = open_writer(output_path, encoder.dim, fmt)
    ids_out = open(ids_path, "w", encoding="utf-8") if ids_path else None
    nnz = 0
    try:
        with tqdm(unit="doc", desc=f"encode {Path(input_path).name}", disable=not progress) as bar:
            for ids, texts in iter_corpus(input_path, chunk):
                batch = encoder.encode(texts, side=side, ids=ids)
                writer.write(batch)
                if ids_out:
                    ids_out.writelines(f"{i}\n" for i in ids)
                nnz += batch.nnz
                bar.update(len(ids))
    finally:
        writer.close()
        if ids_out:
            ids_out.close()
    return {"rows": writer.rows, "nnz": nnz, "dim": encoder.dim}
