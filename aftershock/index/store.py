"""The on-disk index directory: plain ``.npy`` files + ``meta.json`` (format version, parameters, sha256).

`save_dir` writes everything into a temporary sibling directory, fsyncs, then renames it into place,
so a crash never leaves a half-written index. `load_dir` verifies checksums (optionally) and memory-maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from aftershock.errors import IndexCorruptError, IndexFormatError, IndexVersionError

FORMAT_VERSION = 2
META = "meta.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_dir(path, arrays: dict[str, np.ndarray], meta: dict, extra_files: dict[str, bytes] | None = None) -> Path:
    """Atomically write ``arrays`` (name -> array) and ``meta`` to directory ``path`` (replacing it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        files = {}
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype == object:
                raise IndexFormatError(f"array {name!r} has dtype object; indexes store only plain numeric/str arrays")
            f = tmp / f"{name}.npy"
            with open(f, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            files[f.name] = {"sha256": _sha256(f), "bytes": f.stat().st_size, "dtype": str(arr.dtype),
                             "shape": list(arr.shape)}
        for name, data in (extra_files or {}).items():
            f = tmp / name
            f.write_bytes(data)
            files[name] = {"sha256": _sha256(f), "bytes": f.stat().st_size}
        full = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **meta, "files": files}
        with open(tmp / META, "w") as fh:
            json.dump(full, fh, indent=2, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / "index")
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path) -> dict:
    path = Path(path)
    mfile = path / META
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not an index directory (it does not exist or is a file); build one with "
                               "`aftershock build`")
    if not mfile.exists():
        raise IndexCorruptError(f"{path} has no {META}; it is not a complete Aftershock index: rebuild it")
    try:
        meta = json.loads(mfile.read_text())
    except json.JSONDecodeError as e:
        raise IndexCorruptError(f"{mfile} is not valid JSON ({e}); the index is damaged: rebuild it") from None
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise IndexCorruptError(f"{mfile} has no integer format_version; rebuild the index")
    if version > FORMAT_VERSION:
        raise IndexVersionError(
            f"{path} has format version {version} but this Aftershock reads versions <= {FORMAT_VERSION}; "
            "upgrade aftershock (pip install -U aftershock) or rebuild the index with this version"
        )
    return meta


def load_dir(path, mmap: bool = True, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Load every ``.npy`` listed in meta.json; ``verify`` checks sizes and sha256 first."""
    path = Path(path)
    meta = read_meta(path)
    arrays = {}
    for fname, info in meta.get("files", {}).items():
        f = path / fname
        if not f.exists():
            raise IndexCorruptError(f"{path} is missing {fname} listed in {META}; the index is incomplete: rebuild it")
        if verify:
            size = f.stat().st_size
            if size != info["bytes"]:
                raise IndexCorruptError(f"{f} has {size} bytes but {META} records {info['bytes']}; the file is "
                                        "truncated or replaced: rebuild the index")
            digest = _sha256(f)
            if digest != info["sha256"]:
                raise IndexCorruptError(f"{f} has sha256 {digest[:12]}… but {META} records {info['sha256'][:12]}…; "
                                        "the file is corrupt: rebuild the index")
        if fname.endswith(".npy"):
            try:
                arrays[fname[:-4]] = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
            except ValueError as e:
                raise IndexCorruptError(f"{f} is not a readable .npy file ({e}); rebuild the index") from None
    return arrays, meta
