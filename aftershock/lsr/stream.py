"""Streaming corpus encoding (``aftershock encode``): read a BEIR/JSONL corpus chunk by chunk, encode,
append to the output file; memory stays bounded by the chunk size whatever the corpus size.

Output formats (the data layer's writers, `aftershock.index.open_vector_writer`): ``.parquet`` (one row
group per chunk), ``.jsonl[.gz]`` (Seismic JSONL) and ``.bin[.gz]`` (Seismic binary; the row count in
its header is written at the end).
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator

from aftershock.index import iter_corpus, open_text, open_vector_writer

STREAM_FORMATS = ("parquet", "jsonl", "bin")


def iter_corpus_chunks(path, chunk: int) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, texts) chunks of a JSONL corpus (BEIR ``_id``/``title``/``text``, or ``id``/``text``/``contents``);
    a text is ``title + " " + text``."""
    docs = iter_corpus(path)
    while part := list(islice(docs, chunk)):
        yield [d.id for d in part], [d.joined for d in part]


def count_records(path) -> int:
    """Non-blank lines of a JSONL corpus (one fast pass; the progress bar's total)."""
    with open_text(path) as f:
        return sum(1 for line in f if line.strip())


def encode_corpus(encoder, input_path, output_path, side: str = "document", chunk: int = 8192,
                  fmt: str | None = None, ids_path=None, progress: bool = True) -> dict:
    """Encode every record of ``input_path`` and stream the vectors to ``output_path`` (and the ids, one
    per line, to ``ids_path`` when given)."""
    from tqdm.auto import tqdm

    writer = open_vector_writer(output_path, encoder.dim, fmt, stream=True)
    ids_out = open_text(ids_path, "w") if ids_path else None
    nnz = 0
    total = count_records(input_path) if progress else None  # a bar with a total has an ETA
    # a model encoder advances the bar after each model batch, not each chunk (a chunk of 8192 documents
    # takes minutes on a CPU: the ETA must move meanwhile)
    inner = getattr(encoder, "document_encoder", encoder) if side == "document" else encoder
    hook = hasattr(inner, "on_batch")
    try:
        with tqdm(total=total, unit="doc" if side == "document" else "query",
                  desc=f"encode {Path(input_path).name}", disable=not progress) as bar:
            if hook:
                inner.on_batch = bar.update
            for ids, texts in iter_corpus_chunks(input_path, chunk):
                batch = encoder.encode(texts, side=side, ids=ids)
                writer.write(batch)
                if ids_out:
                    ids_out.writelines(f"{i}\n" for i in ids)
                nnz += batch.nnz
                if not hook:
                    bar.update(len(ids))
    finally:
        if hook:
            inner.on_batch = None
        writer.close()
        if ids_out:
            ids_out.close()
    return {"rows": writer.rows, "nnz": nnz, "dim": encoder.dim}
