"""Aftershock: learned-sparse retrieval — encode, index (Seismic-style), search, evaluate."""

from aftershock.index import SearchResult, SparseBatch, Vocabulary, read_vectors, write_vectors
from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex, load_index

__version__ = "0.1.0"
__all__ = ["SparseBatch", "Vocabulary", "SearchResult", "SearchParams", "SeismicConfig", "ExactIndex",
           "SeismicIndex", "load_index", "read_vectors", "write_vectors", "__version__"]
