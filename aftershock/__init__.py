"""Aftershock: learned-sparse retrieval — encode, index (Seismic-style), search, evaluate.

The façade: the rooms' public names, and the compute backends (``"numba"`` CPU, ``"cuda"`` registered here
with a factory that imports ``aftershock.gpu`` only when asked). ``load_index(path, backend="auto")``.
"""

from aftershock.index import SearchResult, SparseBatch, Vocabulary, read_vectors, write_vectors
from aftershock.index.backends import backends, register_backend, to_backend
from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex, load_index
from aftershock.collection import Collection, CollectionConfig, CollectionResult

__version__ = "0.1.0"

_CUDA_HINT = ("the 'cuda' backend needs an NVIDIA GPU with a working driver and Numba's CUDA target: "
              "pip install 'aftershock[gpu]' (or set NUMBA_ENABLE_CUDASIM=1 to run its kernels in Numba's slow "
              "simulator)")


def _cuda_available() -> bool:
    try:
        from aftershock.gpu.search import cuda_available
    except ImportError:
        return False
    return cuda_available()


def _to_cuda(index, **kw):
    from aftershock.gpu import to_device  # lazily: the GPU room is imported only when a GPU index is asked for

    return to_device(index, "cuda", **kw)


register_backend("cuda", _to_cuda, _cuda_available, _CUDA_HINT)

__all__ = ["SparseBatch", "Vocabulary", "SearchResult", "SearchParams", "SeismicConfig", "ExactIndex",
           "SeismicIndex", "load_index", "read_vectors", "write_vectors", "backends", "register_backend",
           "to_backend", "Collection", "CollectionConfig", "CollectionResult", "__version__"]
