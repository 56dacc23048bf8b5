"""The ``cuda`` backend: Numba-CUDA kernels for exact and blocked (Seismic-style) search.

``load_index(path, backend="cuda")``, ``index.to("cuda")`` (the façade registers this package as backend
"cuda", imported on first use) or ``to_device(index)`` copy an ExactIndex or SeismicIndex to the GPU once and
return an object with the same ``search(queries, k=10, params=None, **overrides) -> SearchResult`` contract.
Importing this package needs no GPU; constructing a GPU index raises BackendUnavailableError without one.
"""

from aftershock.gpu.search import GpuExactIndex, GpuSeismicIndex, cuda_available, to_device

__all__ = ["GpuExactIndex", "GpuSeismicIndex", "cuda_available", "to_device"]
