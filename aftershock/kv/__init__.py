"""Dense-key mode of the ANN core for attention: `DenseBlockIndex`, retrieval attention, HF hook."""

from aftershock.kv.attention import (KVRetriever, RetrievalConfig, RetrievalKVCache, attend, merge,
                                     retrieval_attention)
from aftershock.kv.index import DenseBlockIndex, DenseConfig, DenseSearchParams, exact_topk

__all__ = ["DenseBlockIndex", "DenseConfig", "DenseSearchParams", "exact_topk", "KVRetriever", "RetrievalConfig",
           "RetrievalKVCache", "attend", "merge", "retrieval_attention"]
