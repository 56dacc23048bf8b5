"""Learned sparse encoders: text -> `SparseBatch` (vocabulary attached, dim = vocabulary size).

``enc = load_encoder(name_or_dir, device="cpu")``; ``enc.encode_queries(texts)``,
``enc.encode_documents(texts)``. Encoders: `Splade` (masked-LM), `StaticEncoder` (binary or IDF, the
inference-free query side), `InferenceFree`, `BM25`. The input policy (empty texts,
invalid UTF-8, long texts) is documented in `aftershock.lsr.base`.
"""

from aftershock.lsr.base import SparseEncoder, clean_texts
from aftershock.lsr.bm25 import BM25, Analyzer
from aftershock.lsr.load import default_model_dir, load_encoder, load_query_encoder
from aftershock.lsr.splade import Splade
from aftershock.lsr.st_layout import load_st, save_st
from aftershock.lsr.static import InferenceFree, StaticEncoder, bm25_idf, document_frequencies

__all__ = ["SparseEncoder", "clean_texts", "BM25", "Analyzer", "load_encoder", "load_query_encoder", "default_model_dir", "Splade",
           "load_st", "save_st", "InferenceFree", "StaticEncoder", "bm25_idf", "document_frequencies"]
