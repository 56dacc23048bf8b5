"""Resource limits, written once: terms per document, ``k``, ``dim``, and a memory estimate checked before
every large allocation.

Each limit has a default, an environment variable that raises it for a whole process, and (for terms per
document) a build parameter / CLI flag:

==================  ==========  ==================================  =========================================
limit               default     environment variable                also
==================  ==========  ==================================  =========================================
terms per document  4,096       ``AFTERSHOCK_MAX_TERMS_PER_DOC``    ``max_terms_per_doc=`` / ``--max-terms-per-doc``
k (hits per query)  100,000     ``AFTERSHOCK_MAX_K``
dim (vocabulary)    2**24       ``AFTERSHOCK_MAX_DIM``
memory per request  80% of      ``AFTERSHOCK_MAX_MEMORY`` (bytes,
                    RAM         suffixes K/M/G/T allowed)
==================  ==========  ==================================  =========================================
"""

from __future__ import annotations

import os

import numpy as np

from aftershock.errors import ResourceLimitError

DEFAULT_MAX_TERMS_PER_DOC = 4096
DEFAULT_MAX_K = 100_000
DEFAULT_MAX_DIM = 2**24
_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    text = raw.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in _SUFFIX else ""
    try:
        value = int(float(text[: len(text) - len(unit)]) * _SUFFIX[unit])
    except ValueError:
        raise ResourceLimitError(f"environment variable {name}={raw!r} is not a number; unset it or give e.g. "
                                 f"{default}") from None
    if value < 1:
        raise ResourceLimitError(f"environment variable {name}={raw!r} must be >= 1")
    return value


def max_terms_per_doc(value: int | None = None) -> int:
    """The limit on non-zeros per vector: ``value`` when given, else $AFTERSHOCK_MAX_TERMS_PER_DOC or 4096."""
    return int(value) if value is not None else _env_int("AFTERSHOCK_MAX_TERMS_PER_DOC", DEFAULT_MAX_TERMS_PER_DOC)


def max_k() -> int:
    return _env_int("AFTERSHOCK_MAX_K", DEFAULT_MAX_K)


def max_dim() -> int:
    return _env_int("AFTERSHOCK_MAX_DIM", DEFAULT_MAX_DIM)


def _physical_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def max_memory() -> int:
    """Bytes one allocation plan (a build step, a search's output and scratch) may take: $AFTERSHOCK_MAX_MEMORY
    or 80% of the machine's RAM."""
    return _env_int("AFTERSHOCK_MAX_MEMORY", int(_physical_memory() * 0.8))


def fmt(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Raise `ResourceLimitError` when ``nbytes`` (an estimate made before allocating) exceeds `max_memory`."""
    cap = max_memory()
    if nbytes > cap:
        raise ResourceLimitError(f"{what} needs about {fmt(nbytes)}, above the memory limit of {fmt(cap)}; {fix} "
                                 "(or raise the limit with AFTERSHOCK_MAX_MEMORY=<bytes>)", field="memory",
                                 value=int(nbytes))


def check_k(k, nq: int, n_docs: int) -> int:
    """``k`` (an int >= 1, checked by the caller) is at most `max_k`, and the (nq, k) output arrays (12 bytes
    an entry) fit the memory limit."""
    limit = max_k()
    if k > limit:
        raise ResourceLimitError(f"k={int(k)} is above the limit of {limit} results per query (the index has "
                                 f"{n_docs} documents); ask for fewer or raise it with AFTERSHOCK_MAX_K",
                                 field="k", value=int(k))
    check_memory(12.0 * nq * int(k), f"{nq} queries x k={int(k)} results", "search in smaller batches or lower k")
    return int(k)


def check_dim(dim, what: str = "vectors") -> int:
    limit = max_dim()
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 0:
        raise ResourceLimitError(f"{what}: dim={dim!r} must be an integer >= 0", field="dim", value=dim)
    if dim > limit:
        raise ResourceLimitError(f"{what}: dim={int(dim)} is above the limit of {limit} term ids; a real "
                                 "vocabulary is far smaller (check dim= or the term ids), or raise it with "
                                 "AFTERSHOCK_MAX_DIM", field="dim", value=int(dim))
    return int(dim)


def check_terms_per_doc(indptr: np.ndarray, ids, limit: int | None = None, what: str = "documents") -> None:
    """Every row of the CSR ``indptr`` has at most ``limit`` non-zeros (default `max_terms_per_doc`)."""
    limit = max_terms_per_doc(limit)
    if indptr.shape[0] < 2:
        return
    lengths = np.diff(indptr)
    r = int(np.argmax(lengths))
    if lengths[r] > limit:
        name = what[:-1] if what.endswith("s") else what
        rid = ids[r] if ids is not None and len(ids) > r else r
        raise ResourceLimitError(
            f"{name} {str(rid)!r} (row {r}) has {int(lengths[r])} terms, above the limit of {limit} terms per "
            "document (real learned sparse vectors have a few hundred); raise it with --max-terms-per-doc / "
            "max_terms_per_doc= (or AFTERSHOCK_MAX_TERMS_PER_DOC)", field="max_terms_per_doc", value=int(lengths[r]))

