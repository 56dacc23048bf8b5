"""SparseBatch constructors: validation (each bad input raises its named error), sorting, empty vectors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from aftershock import SparseBatch, Vocabulary
from aftershock.errors import (
    AftershockError,
    DuplicateTermError,
    FormatError,
    InvalidVectorError,
    NegativeWeightError,
    NonFiniteValueError,
    RaggedArrayError,
    TermIdOutOfRangeError,
    UnknownTokenError,
)


def assert_batch_equal(a: SparseBatch, b: SparseBatch, check_ids: bool = True) -> None:
    assert len(a) == len(b)
    assert a.dim == b.dim
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    # weights bit for bit
    np.testing.assert_array_equal(np.asarray(a.values, np.float32).view(np.uint32),
                                  np.asarray(b.values, np.float32).view(np.uint32))
    if check_ids:
        assert [str(x) for x in a.ids] == [str(x) for x in b.ids]


# ---------------------------------------------------------------------------------------------- happy paths
def test_from_arrays_dtypes_and_accessors():
    b = SparseBatch.from_arrays([0, 2, 2, 3], [1, 4, 0], [0.5, 1.5, 2.0], ids=["a", "b", "c"], dim=5)
    assert b.indptr.dtype == np.int64 and b.indices.dtype == np.int32 and b.values.dtype == np.float32
    assert len(b) == 3 and b.nnz == 3 and b.dim == 5
    assert list(b.ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(b.nnz_per_row(), [2, 0, 1])
    idx, val = b.row(0)
    np.testing.assert_array_equal(idx, [1, 4])
    np.testing.assert_array_equal(val, np.float32([0.5, 1.5]))
    assert b.to_dict(0) == {1: 0.5, 4: 1.5}
    assert b.to_dict(1) == {}


def test_default_ids_are_row_numbers_and_dim_is_inferred():
    b = SparseBatch.from_rows([([3], [1.0]), ([0, 7], [1.0, 2.0])])
    assert list(b.ids) == ["0", "1"]
    assert b.dim == 8


def test_unsorted_ids_are_sorted_and_values_follow():
    b = SparseBatch.from_rows([([5, 1, 3], [0.5, 0.1, 0.3]), ([2, 0], [2.0, 0.25])], dim=6)
    np.testing.assert_array_equal(b.indices, [1, 3, 5, 0, 2])
    np.testing.assert_array_equal(b.values, np.float32([0.1, 0.3, 0.5, 0.25, 2.0]))
    assert b.to_dict(0) == {1: np.float32(0.1), 3: np.float32(0.3), 5: 0.5}


def test_sorting_does_not_mutate_caller_arrays_with_copy_false():
    indices = np.array([4, 2, 0], np.int32)
    values = np.array([4.0, 2.0, 0.5], np.float32)
    b = SparseBatch.from_arrays(np.array([0, 3]), indices, values, dim=5, copy=False)
    np.testing.assert_array_equal(b.indices, [0, 2, 4])
    np.testing.assert_array_equal(b.values, np.float32([0.5, 2.0, 4.0]))
    np.testing.assert_array_equal(indices, [4, 2, 0])
    np.testing.assert_array_equal(values, np.float32([4.0, 2.0, 0.5]))


def test_empty_vectors_are_allowed():
    b = SparseBatch.from_rows([([], []), ([2], [1.0]), ([], [])], dim=3)
    np.testing.assert_array_equal(b.nnz_per_row(), [0, 1, 0])
    assert b.to_dict(0) == {} and b.to_dict(2) == {}
    e = SparseBatch.from_rows([], dim=10)
    assert len(e) == 0 and e.nnz == 0 and e.dim == 10
    z = SparseBatch.from_arrays([0, 0, 0], [], [], dim=4)
    assert len(z) == 2 and z.nnz == 0
    d = SparseBatch.from_dicts([{}, {1: 2.0}], dim=3)
    np.testing.assert_array_equal(d.nnz_per_row(), [0, 1])


def test_from_dense_round_trip():
    rng = np.random.default_rng(3)
    dense = rng.uniform(0.1, 1.0, size=(7, 11)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.6] = 0
    dense[2] = 0  # an empty vector
    b = SparseBatch.from_dense(dense, ids=[f"x{i}" for i in range(7)])
    assert b.dim == 11 and len(b) == 7
    np.testing.assert_array_equal(b.to_scipy().toarray(), dense)
    assert b.nnz_per_row()[2] == 0
    with pytest.raises(RaggedArrayError):
        SparseBatch.from_dense(np.ones(5))


def test_from_scipy_to_scipy_round_trip(small_batch):
    m = small_batch.to_scipy()
    assert m.shape == (len(small_batch), small_batch.dim)
    back = SparseBatch.from_scipy(m, ids=small_batch.ids)
    assert_batch_equal(back, small_batch)
    # other sparse layouts convert (COO with unsorted entries, CSC)
    coo = m.tocoo()
    perm = np.random.default_rng(0).permutation(coo.nnz)
    shuffled = sp.coo_matrix((coo.data[perm], (coo.row[perm], coo.col[perm])), shape=coo.shape)
    assert_batch_equal(SparseBatch.from_scipy(shuffled, ids=small_batch.ids), small_batch)
    assert_batch_equal(SparseBatch.from_scipy(m.tocsc(), ids=small_batch.ids), small_batch)


def test_from_rows_round_trip(small_batch):
    rows = [small_batch.row(i) for i in range(len(small_batch))]
    back = SparseBatch.from_rows(rows, ids=small_batch.ids, dim=small_batch.dim)
    assert_batch_equal(back, small_batch)
    # plain python lists work too
    rows_l = [(i.tolist(), v.tolist()) for i, v in rows]
    assert_batch_equal(SparseBatch.from_rows(rows_l, ids=small_batch.ids, dim=small_batch.dim), small_batch)


def test_from_dicts_round_trip_with_ids_and_tokens(small_batch):
    dicts = [small_batch.to_dict(i) for i in range(len(small_batch))]
    back = SparseBatch.from_dicts(dicts, ids=small_batch.ids, dim=small_batch.dim)
    assert_batch_equal(back, small_batch)

    vocab = Vocabulary([f"tok{i}" for i in range(small_batch.dim)])
    with_vocab = SparseBatch.from_arrays(small_batch.indptr, small_batch.indices, small_batch.values,
                                         ids=small_batch.ids, vocab=vocab)
    tok_dicts = [with_vocab.to_dict(i) for i in range(len(with_vocab))]
    assert all(isinstance(k, str) for d in tok_dicts for k in d)
    back = SparseBatch.from_dicts(tok_dicts, ids=small_batch.ids, vocab=vocab)
    assert back.vocab == vocab
    assert_batch_equal(back, small_batch)


def test_getitem_and_concat(small_batch):
    part = small_batch[5:9]
    assert len(part) == 4 and list(part.ids) == list(small_batch.ids[5:9])
    for j in range(4):
        a, b = part.row(j), small_batch.row(5 + j)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    picked = small_batch[np.array([3, 0])]
    assert list(picked.ids) == [small_batch.ids[3], small_batch.ids[0]]
    whole = SparseBatch.concat([small_batch[:10], small_batch[10:]])
    assert_batch_equal(whole, small_batch)


# ---------------------------------------------------------------------------------------------- errors
def test_error_hierarchy():
    for cls in (NonFiniteValueError, NegativeWeightError, TermIdOutOfRangeError, DuplicateTermError,
                RaggedArrayError, UnknownTokenError):
        assert issubclass(cls, InvalidVectorError) and issubclass(cls, ValueError)
        assert issubclass(cls, AftershockError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight(bad):
    with pytest.raises(NonFiniteValueError) as ei:
        SparseBatch.from_rows([([0], [1.0]), ([1, 2], [0.5, bad])], ids=["ok", "bad-doc"], dim=4)
    msg = str(ei.value)
    assert str(np.float32(bad)) in msg  # the value (nan / inf / -inf)
    assert "bad-doc" in msg and "term 2" in msg


def test_non_finite_in_from_arrays_and_dense():
    with pytest.raises(NonFiniteValueError):
        SparseBatch.from_arrays([0, 1], [0], [np.nan], dim=1)
    with pytest.raises(NonFiniteValueError):
        SparseBatch.from_dense([[0.0, np.inf]])
    with pytest.raises(NonFiniteValueError):
        SparseBatch.from_dicts([{0: float("nan")}], dim=2)


def test_negative_weight():
    with pytest.raises(NegativeWeightError) as ei:
        SparseBatch.from_rows([([3, 1], [1.0, -0.25])], ids=["q7"], dim=5)
    msg = str(ei.value)
    assert "-0.25" in msg and "q7" in msg and "term 1" in msg
    with pytest.raises(NegativeWeightError):
        SparseBatch.from_dense([[0.0, -1.0]])


def test_term_id_at_or_above_dim():
    with pytest.raises(TermIdOutOfRangeError) as ei:
        SparseBatch.from_rows([([1, 7], [1.0, 1.0])], ids=["doc-x"], dim=5)
    msg = str(ei.value)
    assert "7" in msg and "dim=5" in msg and "doc-x" in msg
    with pytest.raises(TermIdOutOfRangeError) as ei:
        SparseBatch.from_arrays([0, 1], [5], [1.0], dim=5)  # id == dim
    assert "5" in str(ei.value) and "dim=5" in str(ei.value)


def test_negative_term_id():
    with pytest.raises(TermIdOutOfRangeError) as ei:
        SparseBatch.from_rows([([-3, 1], [1.0, 1.0])], dim=5)
    assert "-3" in str(ei.value)
    with pytest.raises(TermIdOutOfRangeError):
        SparseBatch.from_dicts([{-1: 1.0}], dim=5)


def test_term_id_outside_vocabulary():
    vocab = Vocabulary(["a", "b", "c"])
    with pytest.raises(TermIdOutOfRangeError) as ei:
        SparseBatch.from_rows([([0, 3], [1.0, 1.0])], vocab=vocab)
    assert "3" in str(ei.value) and "dim=3" in str(ei.value)


def test_non_integer_term_ids():
    with pytest.raises(TermIdOutOfRangeError):
        SparseBatch.from_arrays([0, 1], np.array([0.5]), [1.0], dim=3)


def test_duplicate_term():
    with pytest.raises(DuplicateTermError) as ei:
        SparseBatch.from_rows([([1, 2], [1.0, 1.0]), ([4, 2, 4], [1.0, 1.0, 2.0])], ids=["a", "b"], dim=6)
    msg = str(ei.value)
    assert "4" in msg and "'b'" in msg
    with pytest.raises(DuplicateTermError):
        SparseBatch.from_arrays([0, 2], [3, 3], [1.0, 2.0], dim=4)  # sorted duplicate


@pytest.mark.parametrize(
    "indptr, indices, values",
    [
        ([0, 2], [0, 1], [1.0, 2.0, 3.0]),      # indices / values lengths differ
        ([0, 2], [0, 1, 2], [1.0, 2.0]),
        ([1, 2], [0, 1], [1.0, 2.0]),           # indptr does not start at 0
        ([0, 1], [0, 1], [1.0, 2.0]),           # indptr does not end at nnz
        ([0, 2, 1, 2], [0, 1], [1.0, 2.0]),     # indptr decreases
        ([], [], []),                            # indptr empty
        ([[0, 1]], [0], [1.0]),                 # indptr 2-D
        ([0, 1], [[0]], [[1.0]]),               # indices 2-D
    ],
)
def test_ragged_arrays(indptr, indices, values):
    with pytest.raises(RaggedArrayError):
        SparseBatch.from_arrays(indptr, indices, values, dim=4)


def test_ragged_message_names_lengths():
    with pytest.raises(RaggedArrayError) as ei:
        SparseBatch.from_arrays([0, 2], [0, 1], [1.0, 2.0, 3.0], dim=4)
    assert "(2,)" in str(ei.value) and "(3,)" in str(ei.value)


def test_wrong_number_of_ids():
    with pytest.raises(RaggedArrayError) as ei:
        SparseBatch.from_rows([([0], [1.0]), ([1], [1.0])], ids=["only-one"], dim=2)
    assert "1 ids for 2 vectors" in str(ei.value)
    with pytest.raises(RaggedArrayError):
        SparseBatch.from_arrays([0, 1], [0], [1.0], ids=["a", "b"], dim=2)
    with pytest.raises(RaggedArrayError):
        SparseBatch.from_dicts([{0: 1.0}], ids=["a", "b"], dim=2)
    with pytest.raises(RaggedArrayError):  # a single string is not a list of ids
        SparseBatch.from_arrays([0, 1], [0], [1.0], ids="ids.txt", dim=2)


def test_from_rows_pair_length_mismatch():
    with pytest.raises(RaggedArrayError) as ei:
        SparseBatch.from_rows([([0, 1], [1.0, 2.0]), ([0, 1, 2], [1.0, 2.0])], dim=4)
    msg = str(ei.value)
    assert "row 1" in msg and "3 term ids" in msg and "2 weights" in msg
    with pytest.raises(RaggedArrayError):
        SparseBatch.from_rows([([0], [1.0], "extra")], dim=4)


def test_vocab_dim_mismatch():
    with pytest.raises(RaggedArrayError):
        SparseBatch.from_rows([([0], [1.0])], dim=5, vocab=Vocabulary(["a", "b"]))


def test_unknown_token():
    vocab = Vocabulary(["apple", "banana", "cherry"])
    with pytest.raises(UnknownTokenError) as ei:
        SparseBatch.from_dicts([{"apple": 1.0}, {"banana": 1.0, "durian": 2.0}], ids=["d1", "d2"], vocab=vocab)
    msg = str(ei.value)
    assert "durian" in msg and "d2" in msg
    with pytest.raises(UnknownTokenError):  # token keys without a vocabulary
        SparseBatch.from_dicts([{"apple": 1.0}])
    with pytest.raises(UnknownTokenError):
        vocab.id_of("zzz")
    assert vocab.id_of("cherry") == 2


def test_vocabulary_basics(tmp_path):
    v = Vocabulary(["a", "b", "c"])
    assert len(v) == 3 and v == Vocabulary(["a", "b", "c"]) and v != Vocabulary(["a", "c", "b"])
    with pytest.raises(FormatError):
        Vocabulary(["a", "b", "a"])
    v.save(tmp_path / "v.json")
    assert Vocabulary.from_file(tmp_path / "v.json") == v
    (tmp_path / "vocab.txt").write_text("x\ny\nz\n", encoding="utf-8")
    assert Vocabulary.from_file(tmp_path / "vocab.txt").tokens == ["x", "y", "z"]
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "tokenizer.json").write_text('{"model": {"vocab": {"b": 1, "a": 0, "c": 2}}}')
    assert Vocabulary.from_file(tmp_path / "hf").tokens == ["a", "b", "c"]


def test_large_vocabulary_dim_over_uint16():
    dim = 100_000
    vocab = Vocabulary([f"t{i}" for i in range(dim)])
    rows = [{"t99999": 1.5, "t0": 0.5, "t65536": 2.0}, {"t70000": 1.0}, {}]
    b = SparseBatch.from_dicts(rows, vocab=vocab)
    assert b.dim == dim and b.vocab is vocab
    np.testing.assert_array_equal(b.indices, [0, 65536, 99999, 70000])
    assert b.to_dict(0) == {"t0": 0.5, "t65536": 2.0, "t99999": 1.5}
    ids = SparseBatch.from_rows([([99_999, 65_535, 65_536], [1.0, 2.0, 3.0])], dim=dim)
    np.testing.assert_array_equal(ids.indices, [65_535, 65_536, 99_999])
    with pytest.raises(TermIdOutOfRangeError):
        SparseBatch.from_rows([([100_000], [1.0])], dim=dim)


# ---------------------------------------------------------------------------------------------- issue 13
@pytest.mark.parametrize("ids", [np.array([0.0, 1.7]), np.array([True, False]), [1.5, 2.0]])
def test_float_or_bool_term_ids_are_rejected_not_truncated(ids):
    with pytest.raises(TermIdOutOfRangeError, match="integers"):
        SparseBatch.from_rows([(ids, [1.0, 1.0])], dim=4)
    with pytest.raises(TermIdOutOfRangeError):
        SparseBatch.from_arrays([0, 2], np.asarray(ids), [1.0, 1.0], dim=4)


@pytest.mark.parametrize("key", [1.5, 2.0, True, None])
def test_dict_keys_must_be_integers(key):
    with pytest.raises(InvalidVectorError):
        SparseBatch.from_dicts([{key: 1.0}], dim=4)


@pytest.mark.parametrize("w", ["1.5", True, None, [1.0], b"1"])
def test_weights_must_be_real_numbers(w):
    with pytest.raises(FormatError, match="real numbers|weight"):
        SparseBatch.from_dicts([{1: w}], dim=4)
    if not isinstance(w, (list, type(None))):
        with pytest.raises(FormatError):
            SparseBatch.from_rows([([1], np.array([w]))], dim=4)
        with pytest.raises(FormatError):
            SparseBatch.from_arrays([0, 1], [1], np.array([w]), dim=4)


@pytest.mark.parametrize("indptr, indices, values, dim, error", [
    ([0, 10**6], [1], [1.0], 4, RaggedArrayError),            # the example: ends past nnz
    ([0, 2, 1], [1, 2], [1.0, 1.0], 4, RaggedArrayError),     # decreasing
    ([1, 1], [1], [1.0], 4, RaggedArrayError),                # does not start at 0
    ([0, 1], [4], [1.0], 4, TermIdOutOfRangeError),           # id == dim
    ([0, 1], [-1], [1.0], 4, TermIdOutOfRangeError),
    ([0, 1], [1], [np.nan], 4, NonFiniteValueError),
    ([0, 1], [1], [-2.0], 4, NegativeWeightError),
    ([0, 1], [1.0], [1.0], 4, RaggedArrayError),              # float ids
    ([0, 1], [1], ["x"], 4, RaggedArrayError),                # string weights
    ([0, 1], [1], [1.0], 2**40, AftershockError),             # dim above its limit
    ([0, 1], [1], [1.0], True, AftershockError),              # dim must be an int
])
def test_batch_built_directly_is_checked(indptr, indices, values, dim, error):
    with pytest.raises(error):
        SparseBatch(np.asarray(indptr), np.asarray(indices), np.asarray(values), np.array(["a"], dtype=object), dim)


def test_batch_changed_after_construction_is_rechecked():
    b = SparseBatch.from_rows([([1, 2], [1.0, 1.0])], dim=4)
    b.indptr = np.array([0, 10**6])
    with pytest.raises(RaggedArrayError):
        b.check()


def test_direct_construction_converts_dtypes():
    b = SparseBatch(np.array([0, 2]), np.array([1, 3], dtype=np.int64), np.array([1, 2], dtype=np.int64),
                    ["x"], 4)
    assert (b.indptr.dtype, b.indices.dtype, b.values.dtype) == (np.int64, np.int32, np.float32)
    assert list(b.ids) == ["x"]


@pytest.mark.parametrize("text", ["{not json", '{"model": {"vocab": {"a": 0, "b": 5}}}', '[1, 2]',
                                  '{"model": {"vocab": {"a": "0"}}}', '{"model": 3}'])
def test_bad_vocabulary_files(tmp_path, text):
    f = tmp_path / "tokenizer.json"
    f.write_text(text)
    with pytest.raises(FormatError):
        Vocabulary.from_file(f)
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(FormatError, match="UTF-8"):
        Vocabulary.from_file(f)
