"""The on-disk index directory: atomic save, checksums, memory-mapping, version checks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from aftershock.errors import IndexCorruptError, IndexFormatError, IndexVersionError
from aftershock.index import FORMAT_VERSION, load_dir, read_meta, save_dir


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


def test_round_trip_mmap(tmp_path, arrays):
    path = save_dir(tmp_path / "idx", arrays, {"kind": "test", "answer": 42}, {"extra.json": b'{"x": 1}'})
    assert path == tmp_path / "idx"
    loaded, meta = load_dir(path, mmap=True)
    assert_arrays_equal(loaded, arrays)
    for k, a in loaded.items():
        if a.size:
            assert isinstance(a, np.memmap), k
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["kind"] == "test" and meta["answer"] == 42
    assert set(meta["files"]) == {f"{k}.npy" for k in arrays} | {"extra.json"}
    assert (path / "extra.json").read_bytes() == b'{"x": 1}'
    assert read_meta(path)["answer"] == 42
    assert leftovers(tmp_path, "idx") == []


def test_round_trip_without_mmap(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    loaded, _ = load_dir(tmp_path / "idx", mmap=False)
    assert_arrays_equal(loaded, arrays)
    assert not any(isinstance(a, np.memmap) for a in loaded.values())
    loaded, _ = load_dir(tmp_path / "idx", mmap=False, verify=False)
    assert_arrays_equal(loaded, arrays)


def test_creates_missing_parents(tmp_path, arrays):
    path = tmp_path / "a" / "b" / "idx"
    save_dir(path, arrays, {})
    assert_arrays_equal(load_dir(path)[0], arrays)


@pytest.mark.parametrize("where", ["header", "data"])
def test_flipped_byte_is_corrupt(tmp_path, arrays, where):
    save_dir(tmp_path / "idx", arrays, {})
    f = tmp_path / "idx" / "vals.npy"
    raw = bytearray(f.read_bytes())
    pos = 20 if where == "header" else len(raw) - 3
    raw[pos] ^= 0x41
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError) as ei:
        load_dir(tmp_path / "idx")
    assert "vals.npy" in str(ei.value)
    with pytest.raises(IndexCorruptError):
        load_dir(tmp_path / "idx", mmap=False)


def test_truncated_file_is_corrupt(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    f = tmp_path / "idx" / "ptr.npy"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(IndexCorruptError) as ei:
        load_dir(tmp_path / "idx")
    assert "ptr.npy" in str(ei.value)


def test_missing_file_is_corrupt(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    (tmp_path / "idx" / "terms.npy").unlink()
    with pytest.raises(IndexCorruptError) as ei:
        load_dir(tmp_path / "idx")
    assert "terms.npy" in str(ei.value)
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


def test_not_a_directory(tmp_path):
    with pytest.raises(IndexFormatError):
        load_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFormatError):
        read_meta(tmp_path / "file")


def test_newer_format_version(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {})
    mfile = tmp_path / "idx" / "meta.json"
    meta = json.loads(mfile.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    mfile.write_text(json.dumps(meta))
    with pytest.raises(IndexVersionError) as ei:
        load_dir(tmp_path / "idx")
    assert str(FORMAT_VERSION + 1) in str(ei.value)
    assert issubclass(IndexVersionError, IndexFormatError)


def test_save_over_existing_replaces_it(tmp_path, arrays):
    save_dir(tmp_path / "idx", arrays, {"gen": 1})
    new = {"other": np.arange(3, dtype=np.int64)}
    save_dir(tmp_path / "idx", new, {"gen": 2})
    loaded, meta = load_dir(tmp_path / "idx")
    assert_arrays_equal(loaded, new)
    assert meta["gen"] == 2
    assert not (tmp_path / "idx" / "ptr.npy").exists()  # nothing of the old index lingers
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


def test_failed_first_save_leaves_nothing(tmp_path):
    with pytest.raises(IndexFormatError):
        save_dir(tmp_path / "idx", {"bad": np.array(["x", 1], dtype=object)}, {})
    assert os.listdir(tmp_path) == []
