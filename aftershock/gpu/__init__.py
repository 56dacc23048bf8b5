"""The ``cuda`` backend: Numba-CUDA kernels for exact and blocked (Seismic-style) search.

``index.to("cuda")`` (or ``to_device(index)``) copies an ExactIndex or SeismicIndex to the GPU once and
returns an object with the same ``search(queries, k, params) -> SearchResult`` contract.
Importing this package needs no GPU; constructing a GPU index raises BackendUnavailableError without one.
"""

from aftershock.gpu.search import GpuExactIndex, GpuSeismicIndex, cuda_available, to_device

__all__ = ["GpuExactIndex", "GpuSeismicIndex", "cuda_available", "to_device"]
