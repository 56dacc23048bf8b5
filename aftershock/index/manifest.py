"""The index directory's reader side: ``meta.json`` (parsed, its checksum and structure verified) and
`open_dir`, which opens each listed file once, checks its size, hashes the very bytes it maps and parses the
``.npy`` header from them. The layout and the writer are described in `aftershock.index.store`."""

from __future__ import annotations

import ast
import hashlib
import json
import mmap as _mmap
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.format import descr_to_dtype

from aftershock.errors import IndexBusyError, IndexCorruptError, IndexFormatError, IndexVersionError

FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
META = "meta.json"
LOCK = ".lock"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,120}$")  # an array's or extra file's stem
_GEN_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,120}\.(\d{6,})\.[A-Za-z0-9]{1,8}$")
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_META_TMP = ".meta.json.tmp-"
_MAX_META_BYTES = 64 << 20


class StoredIndex(NamedTuple):
    arrays: dict  # name -> array (memory-mapped or in memory)
    meta: dict  # the verified meta.json
    extras: dict  # extra file name ("vocab.json") -> bytes (verified like the arrays)


def canonical(body: dict) -> bytes:
    """The bytes ``meta_sha256`` is computed over (sorted keys, no spaces, ASCII)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _is_int(x, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


# ---------------------------------------------------------------------------------------------- reader side
def _read_meta_bytes(path: Path) -> bytes:
    mfile = path / META
    try:
        fd = os.open(mfile, os.O_RDONLY)
    except FileNotFoundError:
        if not path.is_dir():
            raise IndexFormatError(f"{path} is not an index directory (it does not exist or is a file); build one "
                                   "with `aftershock build`") from None
        raise IndexCorruptError(f"{path} has no {META}; it is not a complete Aftershock index: rebuild it") from None
    except (NotADirectoryError, IsADirectoryError):
        raise IndexFormatError(f"{path} is not an index directory; build one with `aftershock build`") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IndexCorruptError(f"{mfile} is not a regular file; rebuild the index")
        chunks, total = [], 0
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > _MAX_META_BYTES:
                raise IndexCorruptError(f"{mfile} is larger than {_MAX_META_BYTES} bytes; it is not an index "
                                        "manifest: rebuild the index")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _bad(mfile, msg: str):
    return IndexCorruptError(f"{mfile}: {msg}; the index is damaged: rebuild it")


def parse_meta(raw: bytes, path: Path) -> dict:
    """``meta.json`` bytes -> the verified manifest (checksum and structure; raises IndexFormatError)."""
    mfile = path / META
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise IndexCorruptError(f"{mfile} is not valid JSON ({e}); the index is damaged: rebuild it") from None
    if not isinstance(meta, dict):
        raise _bad(mfile, "not a JSON object")
    version = meta.get("format_version")
    if not _is_int(version, 1):
        raise _bad(mfile, f"format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise IndexVersionError(
            f"{path} has format version {version} but this Aftershock reads versions <= {FORMAT_VERSION}; "
            "upgrade aftershock (pip install -U aftershock) or rebuild the index with this version")
    if version not in READABLE_VERSIONS:
        raise IndexVersionError(f"{path} has format version {version}, which this Aftershock no longer reads "
                                f"(it reads {list(READABLE_VERSIONS)}); rebuild the index")
    if version >= 3:
        want = meta.get("meta_sha256")
        body = {k: v for k, v in meta.items() if k != "meta_sha256"}
        try:
            got = hashlib.sha256(canonical(body)).hexdigest()
        except (TypeError, ValueError):
            got = None
        if not isinstance(want, str) or got != want:
            raise _bad(mfile, "its meta_sha256 does not match its content (edited or corrupted)")
        if not _is_int(meta.get("generation"), 1):
            raise _bad(mfile, f"generation {meta.get('generation')!r} is not a positive integer")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise _bad(mfile, "'files' is not an object")
    for name, info in files.items():
        if not (isinstance(name, str) and _PLAIN.match(name) and ".." not in name) or name in (META, LOCK):
            raise _bad(mfile, f"file name {name!r} is not a plain file name of the index")
        if not isinstance(info, dict) or not _is_int(info.get("bytes")) or not (
                isinstance(info.get("sha256"), str) and _HEX.match(info["sha256"])):
            raise _bad(mfile, f"the entry of {name} lacks a valid size and sha256")
        logical = _logical(name, info, version, meta.get("generation"))
        if logical is None:
            raise _bad(mfile, f"the entry of {name} does not name its array or extra file consistently")
        if name.endswith(".npy") and not (isinstance(info.get("dtype"), str) and isinstance(info.get("shape"), list)
                                          and all(_is_int(s) for s in info["shape"])):
            raise _bad(mfile, f"the entry of {name} lacks a valid dtype and shape")
    return meta


def _logical(fname: str, info: dict, version: int, gen) -> str | None:
    """The array name / extra file name a stored file holds (None when inconsistent)."""
    if version < 3:
        return fname[:-4] if fname.endswith(".npy") else fname
    if fname.endswith(".npy"):
        name = info.get("array")
        ok = isinstance(name, str) and _NAME.match(name) and fname == f"{name}.{gen:06d}.npy"
        return name if ok else None
    name = info.get("extra")
    if not isinstance(name, str):
        return None
    stem, _, ext = name.rpartition(".")
    ok = _NAME.match(stem) and ext.isalnum() and fname == f"{stem}.{gen:06d}.{ext}"
    return name if ok else None


def read_meta(path) -> dict:
    """The verified ``meta.json`` of index directory ``path`` (its checksum and structure; not the files)."""
    path = Path(path)
    return parse_meta(_read_meta_bytes(path), path)


def _map_file(f: Path, info: dict, verify: bool, use_mmap: bool):
    """Open ``f`` once: size check, then a read-only mapping (or one read), sha256 over exactly those bytes."""
    fd = os.open(f, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))  # FileNotFoundError: the caller retries
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IndexCorruptError(f"{f} is not a regular file; rebuild the index")
        if st.st_size != info["bytes"]:
            raise IndexCorruptError(f"{f} has {st.st_size} bytes but {META} records {info['bytes']}; the file is "
                                    "truncated or replaced: rebuild the index")
        if use_mmap and st.st_size > 0:
            # MAP_POPULATE: the pages are mapped up front (hashing and the structural checks read them all)
            buf = _mmap.mmap(fd, 0, flags=_mmap.MAP_SHARED | getattr(_mmap, "MAP_POPULATE", 0), prot=_mmap.PROT_READ)
        else:
            buf = bytearray(st.st_size)
            view, got = memoryview(buf), 0
            while got < st.st_size:
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    raise IndexCorruptError(f"{f} ended after {got} of {st.st_size} bytes; rebuild the index")
                got += n
    finally:
        os.close(fd)
    if verify:
        digest = hashlib.sha256(buf).hexdigest()
        if digest != info["sha256"]:
            raise IndexCorruptError(f"{f} has sha256 {digest[:12]}… but {META} records {info['sha256'][:12]}…; "
                                    "the file is corrupt: rebuild the index")
    return buf


def _npy_from_buffer(buf, f: Path, info: dict, as_memmap: bool) -> np.ndarray:
    """The array of a ``.npy`` file's bytes (no copy): header checked, shape x itemsize = the data's length."""
    mv = memoryview(buf)
    if len(mv) < 10 or bytes(mv[:6]) != b"\x93NUMPY":
        raise IndexCorruptError(f"{f} is not a .npy file (bad magic); rebuild the index")
    major = mv[6]
    if major == 1:
        start, hlen = 10, int.from_bytes(bytes(mv[8:10]), "little")
    elif major in (2, 3) and len(mv) >= 12:
        start, hlen = 12, int.from_bytes(bytes(mv[8:12]), "little")
    else:
        raise IndexCorruptError(f"{f} has an unknown .npy version {major}; rebuild the index")
    end = start + hlen
    if hlen > 1 << 16 or end > len(mv) or end % 16:
        raise IndexCorruptError(f"{f} has a damaged .npy header (length {hlen}); rebuild the index")
    try:
        text = bytes(mv[start:end]).decode("latin1" if major < 3 else "utf-8")
        d = ast.literal_eval(text)
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise ValueError("keys")
        dtype = descr_to_dtype(d["descr"])
        shape, fortran = d["shape"], d["fortran_order"]
        if not isinstance(shape, tuple) or not all(_is_int(s) for s in shape) or not isinstance(fortran, bool):
            raise ValueError("shape")
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, KeyError, AttributeError) as e:
        raise IndexCorruptError(f"{f} has a damaged .npy header ({type(e).__name__}); rebuild the index") from None
    if dtype.hasobject or (fortran and len(shape) > 1) or len(shape) > 8:
        raise IndexCorruptError(f"{f} holds an array of a kind indexes never store ({dtype}, fortran={fortran}, "
                                f"{len(shape)} dims); rebuild the index")
    count = 1
    for s in shape:
        count *= s
    if end + count * dtype.itemsize != len(mv):
        raise IndexCorruptError(f"{f}: its header says shape {shape} of {dtype} ({count * dtype.itemsize} bytes) but "
                                f"the file holds {len(mv) - end} data bytes; rebuild the index")
    if "dtype" in info and _dtype_str(info["dtype"]) != dtype.str:
        raise IndexCorruptError(f"{f} holds {dtype} but {META} records {info['dtype']}; rebuild the index")
    if "shape" in info and list(shape) != info["shape"]:
        raise IndexCorruptError(f"{f} has shape {list(shape)} but {META} records {info['shape']}; rebuild the index")
    arr = np.ndarray(shape, dtype=dtype, buffer=buf, offset=end)
    return arr.view(np.memmap) if as_memmap else arr


def _dtype_str(text) -> str | None:
    try:
        return np.dtype(text).str if isinstance(text, str) and len(text) < 64 else None
    except (TypeError, ValueError, SyntaxError):
        return None


def open_dir(path, mmap: bool = True, verify: bool = True, attempts: int = 20) -> StoredIndex:
    """Open index directory ``path``: `StoredIndex(arrays, meta, extras)`. ``meta.json``'s checksum and
    structure are always checked, each file's size too; ``verify`` adds the sha256 of every file's bytes."""
    path = Path(path)
    for _ in range(max(1, attempts)):
        raw = _read_meta_bytes(path)
        meta = parse_meta(raw, path)
        version = meta["format_version"]
        arrays, extras = {}, {}
        try:
            for fname, info in meta["files"].items():
                f = path / fname
                logical = _logical(fname, info, version, meta.get("generation"))
                buf = _map_file(f, info, verify, mmap)
                if fname.endswith(".npy"):
                    arrays[logical] = _npy_from_buffer(buf, f, info, as_memmap=mmap)
                else:
                    extras[logical] = bytes(buf)
        except FileNotFoundError as e:
            try:
                changed = _read_meta_bytes(path) != raw
            except IndexFormatError:
                changed = True
            if changed:
                continue  # a writer switched generations between our two reads: start again
            raise IndexCorruptError(f"{path} is missing {Path(e.filename or '?').name} listed in {META}; the index "
                                    "is incomplete: rebuild it") from None
        except (IsADirectoryError, PermissionError) as e:
            raise IndexCorruptError(f"{path}: cannot read {Path(e.filename or '?').name} ({e.strerror}); rebuild "
                                    "the index or fix its permissions") from None
        except (ValueError, OverflowError) as e:  # e.g. mmap of a file that changed size
            raise IndexCorruptError(f"{path}: a file cannot be mapped ({e}); rebuild the index") from None
        return StoredIndex(arrays, meta, extras)
    raise IndexBusyError(f"{path} kept changing while being opened ({attempts} attempts); writers are saving it "
                         "in a loop: open it again later")


def load_dir(path, mmap: bool = True, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of index directory ``path`` (see `open_dir`; extra files are in ``open_dir``)."""
    stored = open_dir(path, mmap=mmap, verify=verify)
    return stored.arrays, stored.meta
