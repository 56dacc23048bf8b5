"""Sparse vectors, their file formats and the on-disk index directory."""

from aftershock.index.batch import SparseBatch, Vocabulary
from aftershock.index.formats import (
    FORMATS,
    from_arrow,
    iter_parquet,
    read_bin,
    read_ids,
    read_jsonl,
    read_npz,
    read_parquet,
    read_vectors,
    to_arrow,
    write_bin,
    write_ids,
    write_jsonl,
    write_npz,
    write_parquet,
    write_vectors,
)
from aftershock.index.result import SearchResult
from aftershock.index.store import FORMAT_VERSION, load_dir, read_meta, save_dir

__all__ = [
    "SparseBatch", "Vocabulary", "SearchResult", "FORMATS", "FORMAT_VERSION", "from_arrow", "iter_parquet",
    "read_bin", "read_ids", "read_jsonl", "read_npz", "read_parquet", "read_vectors", "to_arrow", "write_bin",
    "write_ids", "write_jsonl", "write_npz", "write_parquet", "write_vectors", "load_dir", "read_meta", "save_dir",
]
