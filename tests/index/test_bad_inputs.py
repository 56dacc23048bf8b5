"""Damaged or ill-typed vector files: each is one `FormatError` (or another named error) naming the file,
never a raw numpy/zip/gzip/pyarrow exception and never a silently truncated value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aftershock.errors import AftershockError, FormatError, InvalidVectorError
from aftershock.index import SparseBatch, read_ids, read_vectors, write_vectors


def jsonl(tmp_path, rows, name="v.jsonl"):
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


@pytest.mark.parametrize("w", ["1.5", True, None, [1], {"x": 1}])
def test_jsonl_weights_must_be_numbers(tmp_path, w):
    f = jsonl(tmp_path, [{"id": "a", "vector": {"x": 1.0}}, {"id": "b", "vector": {"y": w}}])
    with pytest.raises(FormatError) as ei:
        read_vectors(f)
    assert "v.jsonl:2" in str(ei.value) and "'b'" in str(ei.value)


def test_jsonl_id_must_be_a_string_or_int(tmp_path):
    f = jsonl(tmp_path, [{"id": {"x": 1}, "vector": {"x": 1.0}}])
    with pytest.raises(FormatError, match="'id'"):
        read_vectors(f)


def test_non_utf8_jsonl(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_bytes(b'{"id": "a", "vector": {"\xff\xfe": 1.0}}\n')
    with pytest.raises(FormatError, match="UTF-8"):
        read_vectors(f)


@pytest.mark.parametrize("name", ["v.jsonl.gz", "v.bin.gz"])
def test_bad_and_truncated_gzip(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"this is not gzip at all")
    with pytest.raises(FormatError, match="gzip"):
        read_vectors(f, dim=10)
    docs = SparseBatch.from_rows([([1, 2], [1.0, 2.0])] * 50, dim=10)
    write_vectors(docs, f)
    f.write_bytes(f.read_bytes()[:-20])  # truncated stream
    with pytest.raises(FormatError):
        read_vectors(f, dim=10)


def test_bad_npz(tmp_path):
    f = tmp_path / "v.npz"
    f.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(FormatError, match="v.npz"):
        read_vectors(f)
    f.write_bytes(b"not a zip")
    with pytest.raises(FormatError):
        read_vectors(f)
    np.savez(f, indptr=np.array([0, 1]), indices=np.array([0.7]), values=np.array([1.0]))
    with pytest.raises(InvalidVectorError, match="integers"):
        read_vectors(f, dim=3)
    np.savez(f, indptr=np.array([0, 1]), indices=np.array([1]), values=np.array(["1.5"]))
    with pytest.raises(FormatError, match="real numbers"):
        read_vectors(f, dim=3)
    np.savez(f, indptr=np.array([0, 1]), indices=np.array([1]), values=np.array([1.0]), dim=np.array([3, 4]))
    with pytest.raises(FormatError, match="dim"):
        read_vectors(f)
    np.savez(f, indptr=np.array([0, 1]), indices=np.array([1]), values=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FormatError):
        read_vectors(f, dim=3)
    np.save(tmp_path / "single.npy", np.arange(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(FormatError):
        read_vectors(tmp_path / "single.npz", dim=3)


def test_bad_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "v.parquet"
    f.write_bytes(b"PAR1 broken PAR1")
    with pytest.raises(FormatError, match="v.parquet"):
        read_vectors(f)
    t = pa.table({"indices": pa.array([[1, 2]]), "values": pa.array([["1.0", "2.0"]])})
    pq.write_table(t, f)
    with pytest.raises(FormatError, match="real numbers"):
        read_vectors(f, dim=4)
    t = pa.table({"indices": pa.array([[1.5, 2.0]]), "values": pa.array([[1.0, 2.0]])})
    pq.write_table(t, f)
    with pytest.raises(InvalidVectorError, match="integers"):
        read_vectors(f, dim=4)
    t = pa.table({"indices": pa.array([[1, 2]]), "values": pa.array([[True, False]])})
    pq.write_table(t, f)
    with pytest.raises(AftershockError):
        read_vectors(f, dim=4)


def test_non_utf8_id_file(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_bytes(b"doc-1\ndoc-\xff2\n")
    with pytest.raises(FormatError, match="UTF-8"):
        read_ids(f)
    f.write_bytes(b"a\r\nb\r\n")
    assert read_ids(f) == ["a", "b"]
