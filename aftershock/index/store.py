"""The on-disk index directory: ``meta.json`` (the manifest, itself checksummed) + one generation of files.

Layout (format 3)::

    P/meta.json              format version, generation g, parameters, each file's bytes/dtype/shape/sha256,
                             and ``meta_sha256``: the sha256 of the canonical JSON of everything else
    P/<array>.<g>.npy        the arrays of generation g (6 digits), written once and never modified
    P/<name>.<g>.<ext>       extra files of generation g (``vocab.<g>.json``)
    P/.lock                  the writers' lock (``fcntl.flock``), holding the last writer's pid

``meta.json`` is the pointer: a save writes generation g+1 under new names, fsyncs it, then atomically
renames a fsynced ``meta.json`` into place, and only then removes generation g. At every instant
``meta.json`` names one complete generation, across a crash at any point. A reader opens each file once
(``os.open`` + ``mmap``), checks its size, hashes exactly the bytes it maps (``verify``), parses the ``.npy``
header from them and keeps that mapping: it never opens a file twice. A file that vanished between reading
``meta.json`` and opening it (a writer switched generations) makes the reader start again from the new
``meta.json``. Mappings stay valid after the writer unlinks the old generation (Linux).

Safety of ``save_dir(path, ...)``: ``path`` is replaced only when it is an Aftershock index (its
``meta.json``), an empty directory or one holding only files of this layout (a first save that crashed);
anything else (a folder of user files, a plain file) needs ``overwrite=True``; the root, the current
directory or its parents and every path in ``protect`` (the inputs) are never replaced. Writers of one path
are serialised by ``P/.lock`` (`IndexBusyError` for the one that finds it held, after ``lock_timeout``);
the lock holder first removes what dead writers left: files of an unpublished generation, temporary
``meta.json`` files and legacy ``.<name>.tmp-*`` folders beside the path.

Format 2 (files directly as ``P/<array>.npy``, ``meta.json`` without checksum) is still read, with the same
structural checks; a save over it converts it in place (the old files are removed after the switch).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from aftershock.errors import IndexBusyError, IndexExistsError, IndexFormatError
from aftershock.index.manifest import (FORMAT_VERSION, LOCK, META, READABLE_VERSIONS, StoredIndex, _GEN_FILE,
                                       _META_TMP, _NAME, _PLAIN, _is_int, canonical, load_dir, open_dir,
                                       parse_meta, read_meta)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "META", "StoredIndex", "save_dir", "check_save_target", "open_dir",
           "load_dir", "read_meta", "parse_meta", "classify", "canonical"]


def fsync_dir(path: Path) -> None:
    """fsync a directory (so a rename in it is durable); a filesystem that cannot is passed over."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """A write-only file object that hashes what passes through (so a saved file is never read back)."""

    def __init__(self, fh):
        self.fh, self.h, self.n = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.h.update(data)
        self.n += len(memoryview(data).cast("B"))
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _write_file(path: Path, write) -> dict:
    """Create ``path`` (never over an existing file), write through ``write(file)``, fsync; sha256 and size."""
    with open(path, "xb") as fh:
        w = _HashingWriter(fh)
        write(w)
        fh.flush()
        os.fsync(fh.fileno())
    return {"sha256": w.h.hexdigest(), "bytes": w.n}


# ---------------------------------------------------------------------------------------------- writer side
class _WriteLock:
    """``P/.lock`` held with ``fcntl.flock`` (released by the kernel when the holder dies)."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, None

    def __enter__(self):
        if fcntl is None:
            return self
        lock = self.path / LOCK
        deadline = time.monotonic() + max(0.0, self.timeout)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                try:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
                if time.monotonic() >= deadline:
                    raise IndexBusyError(
                        f"{self.path} is being written by another process (pid {holder}, lock {lock}); wait for it "
                        "to finish and save again (or pass lock_timeout= seconds to wait)") from None
                time.sleep(0.05)
                continue
            try:  # the lock file must still be the one at the path (not one moved away with its folder)
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return self

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def _looks_like_meta(mfile: Path) -> bool:
    try:
        with open(mfile, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    return b'"format_version"' in head


def _ours(name: str) -> bool:
    """A directory entry this layout writes (so a folder of only these is an unfinished index)."""
    return name == LOCK or name.startswith(_META_TMP) or bool(_GEN_FILE.match(name))


def classify(path) -> str:
    """What is at ``path``: "missing", "index" (has an Aftershock meta.json), "ours" (empty, or only files of
    an unfinished save), "dir" (a folder with other files) or "file" (anything that is not a folder)."""
    path = Path(path)
    if not os.path.lexists(path):
        return "missing"
    if not path.is_dir():  # a symlink to a folder is judged by the folder (overwrite replaces only the link)
        return "file"
    if (path / META).is_file() and _looks_like_meta(path / META):
        return "index"
    return "ours" if all(_ours(n) for n in os.listdir(path)) else "dir"


def _check_target(path: Path, protect) -> Path:
    target = path.resolve()
    if target == Path(target.anchor) or path.name in ("", ".", ".."):
        raise IndexExistsError(f"refusing to write an index at {path}: pick a new folder, e.g. {path}/my-index "
                               "(--output / overwrite cannot name a root or '.'/'..')")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents or target == Path.home().resolve():
        if classify(path) not in ("index", "ours", "missing"):
            raise IndexExistsError(f"refusing to replace {path}: it is the current directory, one of its parents "
                                   "or the home directory; write the index to a new folder")
    for p in protect or ():
        if p is None:
            continue
        rp = Path(p).resolve()
        if rp == target or target in rp.parents:
            raise IndexExistsError(f"refusing to write the index at {path}: that would replace the input {p}; "
                                   "choose another output folder")
    return target


def _clean_stale(path: Path, keep_gen: int | None) -> None:
    """Under the lock: remove what dead writers left (unpublished generations, temporary meta files, legacy
    ``.<name>.tmp-*`` folders beside the index)."""
    for name in os.listdir(path):
        m = _GEN_FILE.match(name)
        if name.startswith(_META_TMP) or (m and int(m.group(1)) != keep_gen):
            try:
                os.unlink(path / name)
            except FileNotFoundError:
                pass
    prefix = f".{path.name}.tmp-"
    try:
        beside = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:
        beside = []
    for name in beside:
        p = path.parent / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _remove_generation(path: Path, meta: dict | None, keep: set, verified: bool) -> None:
    """Remove the files ``meta`` lists that are not in ``keep``: any plain name when ``meta`` was a verified
    manifest (format 2 or 3), only names of this layout's generations otherwise (a damaged meta.json)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        return
    for name in meta["files"]:
        ok = isinstance(name, str) and _PLAIN.match(name) and (verified or _GEN_FILE.match(name))
        if ok and name not in keep and name != META and name != LOCK:
            try:
                os.unlink(path / name)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass


def _move_aside(path: Path) -> Path:
    aside = path.parent / f".{path.name}.old-{os.getpid()}-{os.urandom(4).hex()}"
    os.rename(path, aside)
    return aside


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except OSError:
            pass


def check_save_target(path, overwrite: bool = False, protect=()) -> None:
    """Raise the `IndexExistsError` `save_dir` would raise for ``path``, before any long work (a build)."""
    path = Path(path)
    _check_target(path, protect)
    state = classify(path)
    if state in ("dir", "file") and not overwrite:
        _refuse(path, state)


def _refuse(path: Path, state: str):
    what = "a folder that is not an Aftershock index" if state == "dir" else "a file, not an index folder"
    raise IndexExistsError(f"{path} is {what}; refusing to replace it. Choose a new path, or pass "
                           "overwrite=True (CLI: --overwrite) to replace it")


def save_dir(path, arrays: dict[str, np.ndarray], meta: dict, extra_files: dict[str, bytes] | None = None,
             overwrite: bool = False, protect=(), lock_timeout: float = 0.0) -> Path:
    """Write ``arrays`` (name -> array), ``extra_files`` (name -> bytes) and ``meta`` as a new generation of
    the index directory ``path`` (see the module docstring for what may be replaced and the guarantees)."""
    path = Path(path)
    _check_target(path, protect)
    for name in arrays:
        if not _NAME.match(str(name)):
            raise IndexFormatError(f"array name {name!r}: use letters, digits, '_' and '-'")
    for name in extra_files or {}:
        stem, _, ext = str(name).rpartition(".")
        if not (_NAME.match(stem) and ext.isalnum()):
            raise IndexFormatError(f"extra file name {name!r}: use <stem>.<ext> with letters, digits, '_' and '-'")
    state = classify(path)
    aside, created = None, state == "missing"
    if state in ("dir", "file"):
        if not overwrite:
            _refuse(path, state)
        aside = _move_aside(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    try:
        with _WriteLock(path, lock_timeout):
            _publish(path, arrays, meta, extra_files or {})
    except BaseException:
        if (aside is not None or created) and classify(path) == "ours":  # nothing published: undo our folder
            try:
                with _WriteLock(path, 0.0):  # unless another writer is now working in it
                    shutil.rmtree(path, ignore_errors=True)
                if aside is not None:
                    os.rename(aside, path)
                    aside = None
            except (OSError, IndexBusyError):
                pass
        raise
    if aside is not None:
        _remove(aside)
    return path


def _publish(path: Path, arrays: dict, meta: dict, extra_files: dict) -> None:
    state = classify(path)
    if state not in ("index", "ours"):  # changed since the first look (another process)
        raise IndexExistsError(f"{path} changed while saving (now {state}); save again")
    old, verified = _read_meta_quiet(path)
    old_gen = old.get("generation") if isinstance(old, dict) and _is_int(old.get("generation"), 1) else None
    _clean_stale(path, old_gen)
    gens = [int(m.group(1)) for m in map(_GEN_FILE.match, os.listdir(path)) if m]
    gen = max([old_gen or 0, *gens]) + 1
    files: dict = {}
    written: list[Path] = []
    try:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype.hasobject:
                raise IndexFormatError(f"array {name!r} has dtype object; indexes store only plain numeric/str arrays")
            arr = np.ascontiguousarray(arr)
            fname = f"{name}.{gen:06d}.npy"
            written.append(path / fname)
            info = _write_file(path / fname, lambda w, a=arr: np.save(w, a, allow_pickle=False))
            files[fname] = {"array": name, **info, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        for name, data in extra_files.items():
            stem, _, ext = name.rpartition(".")
            fname = f"{stem}.{gen:06d}.{ext}"
            written.append(path / fname)
            files[fname] = {"extra": name, **_write_file(path / fname, lambda w, d=data: w.write(d))}
        body = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **{k: v for k, v in meta.items() if k not in ("files", "generation", "meta_sha256")},
                "generation": gen, "files": files}
        body["format_version"] = FORMAT_VERSION
        body = json.loads(json.dumps(body, allow_nan=False))  # as a reader will parse it (int keys -> str, ...)
        full = {**body, "meta_sha256": hashlib.sha256(canonical(body)).hexdigest()}
        fsync_dir(path)
        tmp = path / f"{_META_TMP}{os.getpid()}-{os.urandom(4).hex()}"
        written.append(tmp)
        _write_file(tmp, lambda w: w.write(json.dumps(full, indent=1, allow_nan=False).encode()))
        os.replace(tmp, path / META)
        written.pop()
    except BaseException:
        for f in written:
            try:
                os.unlink(f)
            except OSError:
                pass
        raise
    fsync_dir(path)
    _remove_generation(path, old, keep=set(files), verified=verified)


def _read_meta_quiet(path: Path) -> tuple[dict | None, bool]:
    """The current meta.json and whether it verified (a damaged one still names its generation's files)."""
    try:
        return read_meta(path), True
    except (IndexFormatError, OSError):
        try:
            return json.loads((path / META).read_text(encoding="utf-8", errors="replace")), False
        except (OSError, ValueError, RecursionError):
            return None, False
