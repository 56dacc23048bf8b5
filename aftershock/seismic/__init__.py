"""The ANN core: exact and Seismic-style approximate search over sparse vectors (Numba CPU kernels)."""

from aftershock.seismic.config import SearchParams, SeismicConfig
from aftershock.seismic.index import ExactIndex, SeismicIndex, load_index

__all__ = ["SearchParams", "SeismicConfig", "ExactIndex", "SeismicIndex", "load_index"]
