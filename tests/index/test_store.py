"""The on-disk index directory: atomic save, checksums, memory-mapping, version checks."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time

import numpy as np
import pytest

from aftershock.errors import IndexBusyError, IndexCorruptError, IndexExistsError, IndexFormatError, IndexVersionError
from aftershock.index import FORMAT_VERSION, load_dir, open_dir, read_meta, save_dir
from aftershock.index.store import canonical


@pytest.fixture
def arrays():
    rng = np.random.default_rng(5)
    return {
        "ptr": np.arange(0, 101, 5, dtype=np.int64),
        "vals": rng.random(100).astype(np.float32),
        "terms": rng.integers(0, 60000, 100).astype(np.uint16),
        "grid": rng.integers(-5, 5, (10, 3)).astype(np.int32),
        "names": np.array(["doc-a", "doc-b", "ünïcode"]),
        "none": np.zeros((7, 0), np.int32),
    }


def leftovers(parent, name):
    return sorted(p for p in os.listdir(parent) if p.startswith(f".{name}.tmp-") or p.startswith(f".{name}.old-"))


def assert_arrays_equal(got: dict, want: dict):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(np.asarray(got[k]), want[k])


def file_of(path, array):
    """The file holding ``array`` in the index at ``path`` (its current generation)."""
    meta = json.loads((path / "meta.json").read_text())
    return path / next(f for f, i in meta["files"].items() if i.get("array") == array)


def resign(path, edit):
    """Apply ``edit(meta)`` to meta.json and recompute meta_sha256 (a consistent, deliberate edit)."""
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    meta.pop("meta_sha256", None)
    meta["meta_sha256"] = hashlib.sha256(canonical(meta)).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


def test_round_trip_mmap(tmp_path, arrays):
    path = save_dir(tmp_path / "idx", arrays, {"kind": "test", "answer": 42}, {"extra.json": b'{"x": 1}'})
    assert path == tmp_path / "idx"
    stored = open_dir(path, mmap=True)
    assert_arrays_equal(stored.arrays, arrays)
    for k, a in stored.arrays.items():
        assert isinstance(a, np.memmap), k
    meta = stored.meta
    assert meta["format_version"] == FORMAT_VERSION == 3
    assert meta["kind"] == "test" and meta["answer"] == 42 and meta["generation"] == 1
    assert set(meta["files"]) == {f"{k}.000001.npy" for k in arrays} | {"extra.000001.json"}
    assert stored.extras == {"extra.json": b'{"x": 1}'}
    assert read_meta(path)["answer"] == 42
    assert leftovers(tmp_path, "idx") == []
    assert sorted(os.listdir(path)) == sorted([".lock", "meta.json", *meta["files"]])


def test_round_trip_without_mmap(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    loaded, _ = load_dir(tmp_path / "idx", mmap=False)
    assert_arrays_equal(loaded, arrays)
    assert not any(isinstance(a, np.memmap) for a in loaded.values())
    loaded["ptr"][0] = 7  # in memory: writable
    loaded, _ = load_dir(tmp_path / "idx", mmap=False, verify=False)
    assert_arrays_equal(loaded, arrays)


def test_creates_missing_parents_with_the_umask(tmp_path, arrays):
    old = os.umask(0o022)
    try:
        path = tmp_path / "a" / "b" / "idx"
        save_dir(path, arrays, {})
    finally:
        os.umask(old)
    assert_arrays_equal(load_dir(path)[0], arrays)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o755)  # not 0700
    assert oct(os.stat(file_of(path, "ptr")).st_mode & 0o777) == oct(0o644)
    assert oct(os.stat(path / "meta.json").st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("where", ["header", "data"])
def test_flipped_byte_is_corrupt(tmp_path, arrays, where):
    save_dir(tmp_path / "idx", arrays, {})
    f = file_of(tmp_path / "idx", "vals")
    raw = bytearray(f.read_bytes())
    pos = 20 if where == "header" else len(raw) - 3
    raw[pos] ^= 0x41
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError) as ei:
        load_dir(tmp_path / "idx")
    assert f.name in str(ei.value)
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx", mmap=False)


def test_truncated_file_is_corrupt_even_without_verify(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    f = file_of(tmp_path / "idx", "ptr")
    f.write_bytes(f.read_bytes()[:-8])
    for verify in (True, False):
        with pytest.raises(IndexCorruptError) as ei:
            load_dir(tmp_path / "idx", verify=verify)
        assert f.name in str(ei.value)


def test_missing_file_is_corrupt(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    f = file_of(tmp_path / "idx", "terms")
    f.unlink()
    with pytest.raises(IndexCorruptError) as ei:
        load_dir(tmp_path / "idx")
    assert f.name in str(ei.value)
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx", verify=False)


def test_missing_or_broken_meta(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    meta = tmp_path / "idx" / "meta.json"
    text = meta.read_text()
    meta.write_text("{not json")
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx")
    meta.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "format_version"}))
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx")
    meta.unlink()
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx")


def test_meta_is_checksummed_even_without_verify(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {"n_docs": 10})
    mfile = tmp_path / "idx" / "meta.json"
    meta = json.loads(mfile.read_text())
    meta["n_docs"] = 5  # halving n_docs used to pass verify=True
    mfile.write_text(json.dumps(meta))
    for verify in (True, False):
        with pytest.raises(IndexCorruptError, match="meta_sha256"):
            load_dir(tmp_path / "idx", verify=verify)
    with pytest.raises(IndexCorruptError):
        read_meta(tmp_path / "idx")


@pytest.mark.parametrize("version, error", [(0, IndexCorruptError), (-1, IndexCorruptError),
                                            (True, IndexCorruptError), ("3", IndexCorruptError),
                                            (1, IndexVersionError), (FORMAT_VERSION + 1, IndexVersionError)])
def test_format_version_must_be_known(tmp_path, arrays, version, error):
    save_dir(tmp_path / "idx", arrays, {})
    resign(tmp_path / "idx", lambda m: m.update(format_version=version))
    with pytest.raises(error) as ei:
        load_dir(tmp_path / "idx", verify=False)
    if version == FORMAT_VERSION + 1:
        assert str(FORMAT_VERSION + 1) in str(ei.value)
    assert issubclass(IndexVersionError, IndexFormatError)


@pytest.mark.parametrize("name", ["../ptr.000001.npy", "/etc/passwd", "sub/ptr.000001.npy", ".lock", "meta.json",
                                  "..", "ptr.000002.npy"])
def test_file_names_in_meta_must_be_plain_and_consistent(tmp_path, arrays, name):
    save_dir(tmp_path / "idx", arrays, {})

    def edit(m):
        m["files"][name] = m["files"].pop("ptr.000001.npy")
    resign(tmp_path / "idx", edit)
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx", verify=False)


def test_npy_header_must_match_meta_and_size(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    f = file_of(tmp_path / "idx", "ptr")
    raw = f.read_bytes()
    f.write_bytes(raw.replace(b"(21,)", b"(22,)"))  # shape edit: the data no longer fills it
    resign(tmp_path / "idx", lambda m: m["files"][f.name].update(
        sha256=hashlib.sha256(f.read_bytes()).hexdigest()))
    with pytest.raises(IndexCorruptError, match="shape"):
        load_dir(tmp_path / "idx", verify=False)
    f.write_bytes(raw.replace(b"'<i8'", b"'<f8'"))  # same size, other dtype than meta.json records
    resign(tmp_path / "idx", lambda m: m["files"][f.name].update(
        sha256=hashlib.sha256(f.read_bytes()).hexdigest()))
    with pytest.raises(IndexCorruptError, match="float64|<f8"):
        load_dir(tmp_path / "idx")


def test_not_a_directory(tmp_path):
    with pytest.raises(IndexFormatError):
        load_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFormatError):
        read_meta(tmp_path / "file")


def test_save_over_existing_replaces_it(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {"gen": 1})
    new = {"other": np.arange(3, dtype=np.int64)}
    save_dir(tmp_path / "idx", new, {"gen": 2})
    loaded, meta = load_dir(tmp_path / "idx")
    assert_arrays_equal(loaded, new)
    assert meta["gen"] == 2 and meta["generation"] == 2
    assert sorted(os.listdir(tmp_path / "idx")) == [".lock", "meta.json", "other.000002.npy"]  # nothing old lingers
    assert leftovers(tmp_path, "idx") == []
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_failed_save_keeps_old_index(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {"gen": 1})
    bad = {"fine": np.arange(10), "bad": np.array([{"a": 1}, None], dtype=object)}
    with pytest.raises(IndexFormatError) as ei:
        save_dir(tmp_path / "idx", bad, {"gen": 2})
    assert "bad" in str(ei.value)
    loaded, meta = load_dir(tmp_path / "idx")
    assert_arrays_equal(loaded, arrays)
    assert meta["gen"] == 1
    assert leftovers(tmp_path, "idx") == []
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    assert not any(".000002." in n for n in os.listdir(tmp_path / "idx"))


def test_failed_first_save_leaves_nothing(tmp_path):
    with pytest.raises(IndexFormatError):
        save_dir(tmp_path / "idx", {"bad": np.array(["x", 1], dtype=object)}, {})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------- never delete
def test_refuses_a_folder_that_is_not_an_index(tmp_path, arrays):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(IndexExistsError) as ei:
        save_dir(user, arrays, {})
    assert str(user) in str(ei.value) and "overwrite" in str(ei.value)
    assert (user / "cat.jpg").read_bytes() == b"meow" and sorted(os.listdir(user)) == ["cat.jpg"]
    save_dir(user, arrays, {}, overwrite=True)
    assert_arrays_equal(load_dir(user)[0], arrays)
    assert not (user / "cat.jpg").exists()
    assert sorted(os.listdir(tmp_path)) == ["photos"]  # the moved-aside folder is gone too


def test_refuses_a_plain_file(tmp_path, arrays):
    f = tmp_path / "notes.txt"
    f.write_text("precious")
    with pytest.raises(IndexExistsError, match="overwrite"):
        save_dir(f, arrays, {})
    assert f.read_text() == "precious"
    save_dir(f, arrays, {}, overwrite=True)
    assert f.is_dir() and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_never_replaces_the_input_root_or_cwd(tmp_path, arrays, monkeypatch):
    data = tmp_path / "work"
    data.mkdir()
    (data / "docs.npz").write_bytes(b"input")
    for target in (data, data / "docs.npz"):
        with pytest.raises(IndexExistsError, match="input"):
            save_dir(target, arrays, {}, overwrite=True, protect=[data / "docs.npz"])
    assert (data / "docs.npz").read_bytes() == b"input"
    with pytest.raises(IndexExistsError):
        save_dir("/", arrays, {}, overwrite=True)
    monkeypatch.chdir(data)
    with pytest.raises(IndexExistsError):
        save_dir(data, arrays, {}, overwrite=True)
    assert (data / "docs.npz").read_bytes() == b"input"


def test_an_empty_folder_is_fine(tmp_path, arrays):
    (tmp_path / "empty").mkdir()
    save_dir(tmp_path / "empty", arrays, {})
    assert_arrays_equal(load_dir(tmp_path / "empty")[0], arrays)


def test_second_writer_gets_a_clear_error(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {"gen": 1})
    fd = os.open(tmp_path / "idx" / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"4242\n", 0)
    try:
        with pytest.raises(IndexBusyError) as ei:
            save_dir(tmp_path / "idx", arrays, {"gen": 2})
        assert "4242" in str(ei.value) and str(tmp_path / "idx") in str(ei.value)
        threading.Timer(0.3, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
        save_dir(tmp_path / "idx", arrays, {"gen": 3}, lock_timeout=10)  # waits for the holder
    finally:
        time.sleep(0.35)
        os.close(fd)
    assert load_dir(tmp_path / "idx")[1]["gen"] == 3


def test_stale_leftovers_of_a_dead_writer_are_cleaned(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    idx = tmp_path / "idx"
    (idx / "ptr.000002.npy").write_bytes(b"half written")  # a writer killed before switching meta.json
    (idx / ".meta.json.tmp-99-abcd").write_text("{")
    legacy = tmp_path / ".idx.tmp-k3j2h1"  # what older versions left after a kill
    legacy.mkdir()
    (legacy / "big.npy").write_bytes(b"0" * 1000)
    assert_arrays_equal(load_dir(idx)[0], arrays)  # readers ignore them
    save_dir(idx, arrays, {"again": True})
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    names = os.listdir(idx)
    assert ".meta.json.tmp-99-abcd" not in names and not any(".000001." in n for n in names)
    assert load_dir(idx)[1]["generation"] == 2  # the orphan generation 2 was removed, then written afresh


# ---------------------------------------------------------------------------------------------- readers
def test_crash_at_every_step_of_a_save_leaves_one_complete_index(tmp_path, arrays, monkeypatch):
    import aftershock.index.store as store

    path = tmp_path / "idx"
    save_dir(path, arrays, {"gen": 1})
    new = {k: (v[::-1].copy() if v.ndim == 1 else v) for k, v in arrays.items()}
    points = [("_write_file", i) for i in range(len(new) + 1)] + [("fsync_dir", 0), ("replace", 0)]
    for fn, at in points:
        calls = {"n": 0}
        real = getattr(store, fn) if fn != "replace" else os.replace

        def boom(*a, _real=real, _at=at, **kw):
            if calls["n"] == _at:
                raise OSError(28, "No space left on device (injected)")
            calls["n"] += 1
            return _real(*a, **kw)
        if fn == "replace":
            monkeypatch.setattr(store.os, "replace", boom)
        else:
            monkeypatch.setattr(store, fn, boom)
        with pytest.raises(OSError):
            save_dir(path, new, {"gen": 2})
        monkeypatch.undo()
        loaded, meta = load_dir(path)  # the old generation, whole
        assert meta["gen"] == 1
        assert_arrays_equal(loaded, arrays)
    save_dir(path, new, {"gen": 2})
    loaded, meta = load_dir(path)
    assert meta["gen"] == 2
    assert_arrays_equal(loaded, new)


SAVES = 40  # per writer: 3 writers x 40 saves while 2 readers load in a loop


def test_readers_never_see_a_mix_of_generations(tmp_path):
    path = tmp_path / "idx"

    def arrays_of(g):
        return {f"a{i}": np.full(2000 + 37 * i, g, np.int64) for i in range(5)}
    save_dir(path, arrays_of(0), {"g": 0})
    errors, loads = [], [0]
    stop = threading.Event()

    def writer(w):
        for j in range(SAVES):
            try:
                g = 100 * (w + 1) + j
                save_dir(path, arrays_of(g), {"g": g}, lock_timeout=30)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    def reader():
        while not stop.is_set():
            try:
                arrays, meta = load_dir(path, mmap=bool(loads[0] % 2))
                for a in arrays.values():
                    if not (a == meta["g"]).all():
                        errors.append(AssertionError(f"mixed generations: meta g={meta['g']}, array {a[:3]}"))
                loads[0] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[:3]
    assert loads[0] > 0
    assert load_dir(path)[1]["g"] in {100 * (w + 1) + SAVES - 1 for w in range(3)}


def test_reads_and_converts_format_2(tmp_path, arrays):
    """An index written by the previous layout (files beside meta.json, no meta checksum) still loads; a save
    over it switches to generations and removes the old files."""
    path = tmp_path / "old"
    path.mkdir()
    files = {}
    for name, arr in arrays.items():
        np.save(path / f"{name}.npy", arr)
        raw = (path / f"{name}.npy").read_bytes()
        files[f"{name}.npy"] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw), "dtype": str(arr.dtype),
                                "shape": list(arr.shape)}
    (path / "vocab.json").write_text('["a"]')
    files["vocab.json"] = {"sha256": hashlib.sha256(b'["a"]').hexdigest(), "bytes": 5}
    (path / "meta.json").write_text(json.dumps({"format_version": 2, "kind": "test", "files": files}))
    (path / "notes.txt").write_text("mine")
    stored = open_dir(path)
    assert_arrays_equal(stored.arrays, arrays)
    assert stored.extras == {"vocab.json": b'["a"]'} and stored.meta["format_version"] == 2
    save_dir(path, arrays, {"kind": "test"})
    assert load_dir(path)[1]["format_version"] == FORMAT_VERSION
    names = set(os.listdir(path))
    assert not any(n in names for n in files) and "notes.txt" in names  # never what it did not write
