"""Output files of the commands: written under a temporary name in the same folder and renamed into
place only when the command succeeds, so a failed run never truncates or half-writes an existing file;
and the one-line notice that Numba kernels are being compiled (the first run only)."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path):
    """``with atomic_output("run.trec") as tmp: write(tmp)``: ``tmp`` lies beside ``path`` and ends with
    its name (so the format guessed from the suffix is the same); it replaces ``path`` only when the block
    succeeds and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + path.name, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers create it themselves (some refuse an existing file)
    tmp = Path(tmp)
    try:
        yield tmp
        if not tmp.exists():  # nothing written: an empty file, as a plain open() would leave
            tmp.touch()
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def kernels_cold(*dispatchers) -> bool:
    """True when one of these Numba functions is neither compiled in this process nor in Numba's disk
    cache, i.e. its first call will compile it (seconds to a minute)."""
    for fn in dispatchers:
        if getattr(fn, "signatures", None):
            continue
        try:
            index = fn._cache._cache_file._index_path  # numba's on-disk cache index of this function
        except AttributeError:
            return False
        if not os.path.exists(index):
            return True
    return False


@contextmanager
def compiling_notice(what: str, *dispatchers):
    """Print ``compiling <what> kernels (first run only) ...`` around the block when it will compile."""
    import time

    cold = kernels_cold(*dispatchers)
    t0 = time.perf_counter()
    if cold:
        print(f"compiling {what} kernels (first run only; later runs load them from Numba's cache) ...",
              end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if cold:
            print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def clamp_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """``threads`` capped at the cores Numba may use here, with a warning on stderr when it is capped (a
    silent cap makes timings of "4 threads" that ran on 2)."""
    if threads is None:
        return None
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if threads > limit:
        print(f"aftershock: warning: {flag} {threads} is more than the {limit} cores available here "
              f"(NUMBA_NUM_THREADS); using {limit}", file=sys.stderr)
        return limit
    return threads
