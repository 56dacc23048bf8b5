"""File formats: every round trip preserves ids (term and document) and weights bit for bit."""

from __future__ import annotations

import gzip
import json
import string
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from aftershock import SparseBatch, Vocabulary, read_vectors, write_vectors
from aftershock.errors import FormatError, RaggedArrayError, UnknownTokenError
from aftershock.index import (
    FORMATS,
    from_arrow,
    iter_parquet,
    read_bin,
    read_ids,
    read_jsonl,
    read_npz,
    read_parquet,
    to_arrow,
    write_bin,
    write_ids,
    write_jsonl,
    write_npz,
    write_parquet,
)


def assert_same(a: SparseBatch, b: SparseBatch, check_ids: bool = True) -> None:
    assert len(a) == len(b), (len(a), len(b))
    assert a.dim == b.dim, (a.dim, b.dim)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.values.dtype == np.float32 and b.values.dtype == np.float32
    np.testing.assert_array_equal(a.values.view(np.uint32), b.values.view(np.uint32))  # bit for bit
    if check_ids:
        assert [str(x) for x in a.ids] == [str(x) for x in b.ids]


@pytest.fixture(scope="module")
def vocab_batch(small_batch):
    vocab = Vocabulary([f"w{i}" for i in range(small_batch.dim)])
    return SparseBatch.from_arrays(small_batch.indptr, small_batch.indices, small_batch.values,
                                   ids=small_batch.ids, vocab=vocab)


# ---------------------------------------------------------------------------------------------- JSONL
@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz"])
def test_jsonl_round_trip_with_vocabulary(tmp_path, vocab_batch, name):
    path = tmp_path / name
    write_jsonl(vocab_batch, path)
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            first = json.loads(f.readline())
    else:
        first = json.loads(path.read_text().splitlines()[0])
    assert first["id"] == vocab_batch.ids[0]
    assert set(first["vector"]) == {vocab_batch.vocab.tokens[t] for t in vocab_batch.row(0)[0]}
    back = read_jsonl(path, vocab=vocab_batch.vocab)
    assert back.vocab == vocab_batch.vocab
    assert_same(back, vocab_batch)
    assert_same(read_vectors(path, vocab=vocab_batch.vocab), vocab_batch)


@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz"])
def test_jsonl_round_trip_without_vocabulary(tmp_path, small_batch, name):
    path = tmp_path / name
    write_jsonl(small_batch, path)  # tokens are the term ids as strings
    # read back through the identity vocabulary: the very same term ids
    ident = Vocabulary([str(i) for i in range(small_batch.dim)])
    assert_same(read_jsonl(path, vocab=ident), small_batch)
    # read back without one (Seismic style): the vocabulary is built in order of first appearance;
    # every (token, weight) pair and every document id survives
    back = read_jsonl(path)
    assert back.vocab is not None
    assert [str(x) for x in back.ids] == [str(x) for x in small_batch.ids]
    assert len(back) == len(small_batch)
    for r in range(len(small_batch)):
        got = {int(k): v for k, v in back.to_dict(r).items()}
        assert got == small_batch.to_dict(r)


def test_jsonl_seismic_file_builds_vocabulary_in_order(tmp_path):
    lines = [
        {"id": "doc-a", "content": "some text", "vector": {"hello": 1.5, "world": 0.25}},
        {"id": "doc-b", "content": "", "vector": {}},
        {"id": "doc-c", "vector": {"world": 2.0, "again": 0.5}},
    ]
    path = tmp_path / "seismic.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")  # a trailing blank line is fine
    b = read_vectors(path)
    assert b.vocab.tokens == ["hello", "world", "again"]
    assert b.dim == 3 and list(b.ids) == ["doc-a", "doc-b", "doc-c"]
    assert b.to_dict(0) == {"hello": 1.5, "world": 0.25}
    assert b.to_dict(1) == {}
    assert b.to_dict(2) == {"world": 2.0, "again": 0.5}
    np.testing.assert_array_equal(b.indices, [0, 1, 1, 2])  # row 2 sorted by id


def test_jsonl_unknown_token(tmp_path):
    vocab = Vocabulary(["a", "b"])
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "q1", "vector": {"a": 1.0, "zzz": 2.0}}) + "\n")
    with pytest.raises(UnknownTokenError) as ei:
        read_jsonl(path, vocab=vocab)
    assert "zzz" in str(ei.value)
    dropped = read_jsonl(path, vocab=vocab, unknown="drop")
    assert dropped.to_dict(0) == {"a": 1.0}


@pytest.mark.parametrize("line", ['{"id": 1}', "not json", '{"vector": [1, 2]}', '{"vector": {"a": "x"}}'])
def test_jsonl_bad_records(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(FormatError):
        read_jsonl(path)


def test_read_vectors_with_ids_file_overrides_jsonl_ids(tmp_path, small_batch):
    path = tmp_path / "v.jsonl"
    write_jsonl(small_batch, path)
    new_ids = [f"n{i}" for i in range(len(small_batch))]
    write_ids(new_ids, tmp_path / "ids.txt")
    b = read_vectors(path, ids=tmp_path / "ids.txt", vocab=Vocabulary([str(i) for i in range(small_batch.dim)]))
    assert list(b.ids) == new_ids


# ---------------------------------------------------------------------------------------------- .bin
def test_bin_exact_bytes(tmp_path):
    b = SparseBatch.from_rows([([3, 1], [0.5, 2.0]), ([], []), ([7], [1.25])], dim=8)
    write_bin(b, tmp_path / "x.bin")
    raw = (tmp_path / "x.bin").read_bytes()
    expected = struct.pack("<I", 3)
    expected += struct.pack("<I", 2) + struct.pack("<II", 1, 3) + struct.pack("<ff", 2.0, 0.5)
    expected += struct.pack("<I", 0)
    expected += struct.pack("<I", 1) + struct.pack("<I", 7) + struct.pack("<f", 1.25)
    assert raw == expected


@pytest.mark.parametrize("name", ["v.bin", "v.bin.gz"])
def test_bin_round_trip(tmp_path, small_batch, name):
    path = tmp_path / name
    write_bin(small_batch, path)
    ids = list(small_batch.ids)
    assert_same(read_bin(path, ids=ids, dim=small_batch.dim), small_batch)
    # ids from a one-id-per-line companion file (plain and gzipped)
    write_ids(ids, tmp_path / "ids.txt")
    write_ids(ids, tmp_path / "ids.txt.gz")
    assert read_ids(tmp_path / "ids.txt.gz") == ids
    assert_same(read_bin(path, ids=tmp_path / "ids.txt", dim=small_batch.dim), small_batch)
    assert_same(read_bin(path, ids=str(tmp_path / "ids.txt.gz"), dim=small_batch.dim), small_batch)
    assert_same(read_vectors(path, ids=tmp_path / "ids.txt", dim=small_batch.dim), small_batch)
    # without ids: row numbers; without dim: max id + 1
    plain = read_bin(path)
    assert list(plain.ids) == [str(i) for i in range(len(small_batch))]
    assert plain.dim == int(small_batch.indices.max()) + 1


def test_bin_wrong_number_of_ids(tmp_path, small_batch):
    write_bin(small_batch, tmp_path / "v.bin")
    with pytest.raises(RaggedArrayError):
        read_bin(tmp_path / "v.bin", ids=["just-one"])


def test_bin_truncated_or_padded(tmp_path, small_batch):
    write_bin(small_batch, tmp_path / "v.bin")
    raw = (tmp_path / "v.bin").read_bytes()
    for cut in (4, 8, 2, 1, len(raw) - 4):
        (tmp_path / "t.bin").write_bytes(raw[:-cut])
        with pytest.raises(FormatError):
            read_bin(tmp_path / "t.bin")
    (tmp_path / "long.bin").write_bytes(raw + b"\x00\x00\x00\x00")
    with pytest.raises(FormatError):
        read_bin(tmp_path / "long.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(FormatError):
        read_bin(tmp_path / "empty.bin")
    with gzip.open(tmp_path / "t.bin.gz", "wb") as f:
        f.write(raw[:-4])
    with pytest.raises(FormatError):
        read_bin(tmp_path / "t.bin.gz")


def test_bin_header_claims_too_many_vectors(tmp_path):
    # a corrupt header must be a FormatError, not an attempt to allocate billions of entries
    (tmp_path / "h.bin").write_bytes(struct.pack("<II", 0xFFFFFFF0, 0))
    with pytest.raises(FormatError):
        read_bin(tmp_path / "h.bin")
    (tmp_path / "h2.bin").write_bytes(struct.pack("<III", 1, 0xFFFFFFF0, 0))  # nnz too large
    with pytest.raises(FormatError):
        read_bin(tmp_path / "h2.bin")


# ---------------------------------------------------------------------------------------------- Parquet / Arrow
def test_parquet_round_trip(tmp_path, small_batch):
    path = tmp_path / "v.parquet"
    write_parquet(small_batch, path)
    assert_same(read_parquet(path), small_batch)  # dim comes from the file's metadata
    assert_same(read_vectors(path), small_batch)
    assert_same(read_parquet(path, batch_size=3), small_batch)
    t = pq.read_table(path)
    assert t.schema.names == ["id", "indices", "values"]


def test_iter_parquet_streams_several_batches(tmp_path, small_batch):
    path = tmp_path / "v.parquet"
    write_parquet(small_batch, path, row_group_size=16)
    parts = list(iter_parquet(path, batch_size=7))
    assert len(parts) >= 6  # 40 rows, <= 7 per batch
    assert all(len(p) <= 7 for p in parts)
    assert sum(len(p) for p in parts) == len(small_batch)
    assert all(p.dim == small_batch.dim for p in parts)
    assert_same(SparseBatch.concat(parts), small_batch)


def test_arrow_round_trip(small_batch):
    table = to_arrow(small_batch)
    assert isinstance(table, pa.Table) and table.num_rows == len(small_batch)
    assert_same(from_arrow(table), small_batch)
    # a RecordBatch, and a table in several chunks
    assert_same(from_arrow(table.to_batches()[0]), small_batch)
    chunked = pa.concat_tables([table.slice(0, 13), table.slice(13)])
    assert_same(from_arrow(chunked), small_batch)
    # a sliced record batch (offsets not starting at 0)
    rb = table.to_batches()[0].slice(10, 12)
    assert_same(from_arrow(rb), small_batch[10:22])


def test_arrow_without_id_column_and_with_dim():
    t = pa.table({"indices": pa.array([[1, 3], [], [0]], pa.list_(pa.int32())),
                  "values": pa.array([[1.0, 2.0], [], [0.5]], pa.list_(pa.float32()))})
    b = from_arrow(t, dim=10)
    assert b.dim == 10 and list(b.ids) == ["0", "1", "2"]
    assert b.to_dict(0) == {1: 1.0, 3: 2.0} and b.to_dict(1) == {}


def test_arrow_bad_tables():
    with pytest.raises(FormatError):
        from_arrow(pa.table({"indices": pa.array([[1]])}))
    ragged = pa.table({"indices": pa.array([[1, 2], [3]]), "values": pa.array([[1.0], [1.0, 2.0]])})
    with pytest.raises(RaggedArrayError):
        from_arrow(ragged)
    nulls = pa.table({"indices": pa.array([[1], None]), "values": pa.array([[1.0], None])})
    with pytest.raises(FormatError):
        from_arrow(nulls)


def test_empty_batch_round_trips(tmp_path):
    empty = SparseBatch.from_arrays([0], [], [], ids=[], dim=50)
    assert_same(from_arrow(to_arrow(empty)), empty)
    write_parquet(empty, tmp_path / "e.parquet")
    assert_same(read_parquet(tmp_path / "e.parquet"), empty)
    assert list(iter_parquet(tmp_path / "e.parquet")) == []
    write_bin(empty, tmp_path / "e.bin")
    assert_same(read_bin(tmp_path / "e.bin", dim=50), empty)
    write_npz(empty, tmp_path / "e.npz")
    assert_same(read_npz(tmp_path / "e.npz"), empty)


# ---------------------------------------------------------------------------------------------- npz
def test_npz_round_trip(tmp_path, small_batch):
    path = tmp_path / "v.npz"
    write_npz(small_batch, path)
    assert_same(read_npz(path, ids=list(small_batch.ids)), small_batch)
    write_ids(small_batch.ids, tmp_path / "ids.txt")
    assert_same(read_npz(path, ids=tmp_path / "ids.txt"), small_batch)
    assert_same(read_vectors(path, ids=tmp_path / "ids.txt"), small_batch)
    assert read_npz(path).dim == small_batch.dim


def test_npz_reads_scipy_save_npz(tmp_path, small_batch):
    sp.save_npz(tmp_path / "m.npz", small_batch.to_scipy())
    assert_same(read_npz(tmp_path / "m.npz", ids=small_batch.ids), small_batch)


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", indptr=np.array([0, 1]))
    with pytest.raises(FormatError):
        read_npz(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.bin", "a.bin.gz", "a.parquet", "a.npz"])
def test_read_write_vectors_dispatch_by_suffix(tmp_path, vocab_batch, name):
    path = tmp_path / name
    write_vectors(vocab_batch, path)
    assert path.exists()
    ids = list(vocab_batch.ids)
    write_ids(ids, tmp_path / "ids.txt")
    back = read_vectors(path, ids=tmp_path / "ids.txt", dim=vocab_batch.dim, vocab=vocab_batch.vocab)
    assert_same(back, vocab_batch)


def test_format_argument_overrides_suffix(tmp_path, small_batch):
    path = tmp_path / "data.vectors"
    write_vectors(small_batch, path, format="bin")
    assert_same(read_vectors(path, format="bin", ids=list(small_batch.ids), dim=small_batch.dim), small_batch)
    with pytest.raises(FormatError):
        read_vectors(path)  # suffix says nothing
    with pytest.raises(FormatError):
        write_vectors(small_batch, tmp_path / "data.unknown")
    with pytest.raises(FormatError):
        read_vectors(tmp_path / "missing.bin")
    with pytest.raises(FormatError):
        read_vectors(path, format="csv")
    assert set(FORMATS) == {"jsonl", "bin", "parquet", "npz"}


# ---------------------------------------------------------------------------------------------- properties
_ID_CHARS = string.ascii_letters + string.digits + "-_.:"


@st.composite
def csr_batches(draw, max_rows: int = 12, max_dim: int = 300, max_nnz: int = 12, id_text=None):
    dim = draw(st.integers(1, max_dim))
    n = draw(st.integers(0, max_rows))
    weights = st.floats(min_value=0.0, max_value=float(np.finfo(np.float32).max), allow_nan=False, allow_infinity=False, width=32)
    rows = []
    for _ in range(n):
        term_ids = draw(st.lists(st.integers(0, dim - 1), unique=True, max_size=min(dim, max_nnz)))
        vals = draw(st.lists(weights, min_size=len(term_ids), max_size=len(term_ids)))
        rows.append((np.array(term_ids, np.int64), np.array(vals, np.float32)))
    text = id_text if id_text is not None else st.text(_ID_CHARS, min_size=1, max_size=8)
    ids = draw(st.lists(text, min_size=n, max_size=n))
    indptr = np.concatenate([[0], np.cumsum([len(r[0]) for r in rows])]).astype(np.int64)
    indices = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
    values = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
    return SparseBatch.from_arrays(indptr, indices, values, ids=ids, dim=dim)


@given(batch=csr_batches(), gz=st.booleans())
def test_property_bin_round_trip(tmp_path, batch, gz):
    path = tmp_path / ("p.bin.gz" if gz else "p.bin")
    write_bin(batch, path)
    write_ids(batch.ids, tmp_path / "p.ids")
    assert_same(read_bin(path, ids=tmp_path / "p.ids", dim=batch.dim), batch)


@given(batch=csr_batches(id_text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)),
       batch_size=st.integers(1, 5))
def test_property_parquet_round_trip(tmp_path, batch, batch_size):
    path = tmp_path / "p.parquet"
    write_parquet(batch, path, row_group_size=4)
    assert_same(read_parquet(path), batch)
    parts = list(iter_parquet(path, batch_size=batch_size))
    assert all(len(p) <= batch_size for p in parts)
    assert sum(len(p) for p in parts) == len(batch)
    assert_same(from_arrow(to_arrow(batch)), batch)


@given(batch=csr_batches())
def test_property_npz_and_scipy_round_trip(tmp_path, batch):
    write_npz(batch, tmp_path / "p.npz")
    assert_same(read_npz(tmp_path / "p.npz", ids=list(batch.ids)), batch)
    assert_same(SparseBatch.from_scipy(batch.to_scipy(), ids=batch.ids), batch)
