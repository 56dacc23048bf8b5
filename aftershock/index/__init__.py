"""Sparse vectors, every file the data walk reads or writes (vectors, corpora, queries, qrels, runs, ids),
and the on-disk index directory."""

from aftershock.index.batch import SparseBatch, Vocabulary
from aftershock.index.formats import (
    from_arrow,
    iter_parquet,
    read_bin,
    read_jsonl,
    read_npz,
    read_parquet,
    read_vectors,
    write_bin,
    write_jsonl,
    write_npz,
    write_parquet,
    write_vectors,
)
from aftershock.index.backends import register_backend, resolve_backend, to_backend
from aftershock.index.config import Config, check
from aftershock.index.result import SearchIndex, SearchResult
from aftershock.index.checks import check_build_input
from aftershock.index.store import FORMAT_VERSION, classify, load_dir, open_dir, read_meta, save_dir
from aftershock.index.text import (
    Document,
    check_ids,
    check_trec_id,
    doc_text,
    find_beir_file,
    iter_beir,
    iter_corpus,
    iter_jsonl_records,
    open_text,
    read_corpus,
    read_documents,
    read_ids,
    read_jsonl_records,
    read_qrels,
    read_queries,
    read_trec_run,
    record_id,
    trec_lines,
    write_ids,
    write_jsonl_records,
    write_trec_run,
)
from aftershock.index.writers import FORMATS, guess_format, open_vector_writer, to_arrow

__all__ = [
    "SparseBatch", "Vocabulary", "SearchResult", "FORMATS", "FORMAT_VERSION", "from_arrow", "iter_parquet",
    "read_bin", "read_ids", "read_jsonl", "read_npz", "read_parquet", "read_vectors", "to_arrow", "write_bin",
    "write_ids", "write_jsonl", "write_npz", "write_parquet", "write_vectors", "load_dir", "read_meta", "save_dir",
    "guess_format", "open_vector_writer", "open_text", "iter_jsonl_records", "read_jsonl_records",
    "write_jsonl_records", "Document", "doc_text", "record_id", "find_beir_file", "iter_beir", "iter_corpus",
    "read_corpus", "read_documents", "read_queries", "read_qrels", "read_trec_run", "write_trec_run",
    "trec_lines", "check_trec_id", "SearchIndex", "register_backend", "resolve_backend", "to_backend",
    "Config", "check", "open_dir", "classify", "check_build_input", "check_ids",
]
