"""The text side of the data layer (`aftershock.index.text`) on small hand-made files, plain and .gz,
and the vector writers appending several batches."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from aftershock.errors import FormatError
from aftershock.index import (
    Document,
    SparseBatch,
    Vocabulary,
    find_beir_file,
    iter_beir,
    iter_corpus,
    iter_jsonl_records,
    open_text,
    open_vector_writer,
    read_corpus,
    read_documents,
    read_ids,
    read_jsonl_records,
    read_qrels,
    read_queries,
    read_trec_run,
    read_vectors,
    write_ids,
    write_jsonl_records,
    write_trec_run,
    write_vectors,
)

CORPUS = ('{"_id": "d1", "title": "Wings", "text": "lift and drag"}\n'
          '\n'
          '{"id": 2, "contents": "no title here"}\n'
          '{"_id": "d3", "title": "", "text": "caf\u00e9"}\n')


def _write(path, text: str) -> None:
    data = text.encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.fixture(params=["", ".gz"])
def gz(request):
    return request.param


def test_open_text_round_trip_plain_and_gzip(tmp_path, gz):
    path = tmp_path / f"x.txt{gz}"
    with open_text(path, "w") as f:
        f.write("a\u00e9\nb\n")
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == bool(gz)
    with open_text(path) as f:
        assert f.read() == "a\u00e9\nb\n"
    with open_text(path, "rb") as f:
        assert f.read() == "a\u00e9\nb\n".encode()
    with pytest.raises(ValueError, match="mode"):
        open_text(path, "r+")


def test_open_text_replaces_invalid_utf8(tmp_path, gz):
    path = tmp_path / f"bad.txt{gz}"
    _write(path, "ok\n")
    path.write_bytes(gzip.compress(b"a\xffb\n") if gz else b"a\xffb\n")
    with open_text(path) as f:
        assert f.read() == "a\ufffdb\n"
    with pytest.raises(UnicodeDecodeError), open_text(path, errors="strict") as f:
        f.read()


def test_jsonl_records_round_trip_and_errors(tmp_path, gz):
    path = tmp_path / f"r.jsonl{gz}"
    rows = [{"qid": "q1", "x": [1, 2]}, {"qid": "q\u00e92"}]
    assert write_jsonl_records(path, rows) == 2
    assert read_jsonl_records(path) == rows
    assert list(iter_jsonl_records(path)) == rows
    _write(path, '{"a": 1}\n\n{"a": \n')
    with pytest.raises(FormatError, match=r"r\.jsonl(\.gz)?:3: not valid JSON"):
        read_jsonl_records(path)
    _write(path, "[1, 2]\n")
    with pytest.raises(FormatError, match="JSON object"):
        read_jsonl_records(path)


def test_corpus_readers(tmp_path, gz):
    path = tmp_path / f"corpus.jsonl{gz}"
    _write(path, CORPUS)
    docs = list(iter_corpus(path))
    assert docs == [Document("d1", "Wings", "lift and drag"), Document("2", "", "no title here"),
                    Document("d3", "", "caf\u00e9")]
    assert docs[0].joined == "Wings lift and drag"
    assert read_corpus(path) == {"d1": "Wings lift and drag", "2": "no title here", "d3": "caf\u00e9"}
    assert read_corpus(path, {"d3"}) == {"d3": "caf\u00e9"}
    assert [r.get("_id", r.get("id")) for r in iter_beir(path)] == ["d1", 2, "d3"]
    assert read_documents(path) == {"d1": {"title": "Wings", "text": "lift and drag"},
                                    "2": {"title": None, "text": "no title here"},
                                    "d3": {"title": None, "text": "caf\u00e9"}}
    assert find_beir_file(tmp_path, "corpus") == path
    with pytest.raises(FormatError, match="no queries.jsonl"):
        find_beir_file(tmp_path, "queries")
    _write(path, '{"title": "no id"}\n')
    with pytest.raises(FormatError, match=":1: a record needs an '_id'"):
        list(iter_corpus(path))


def test_read_documents_tsv_and_bad_suffix(tmp_path, gz):
    path = tmp_path / f"docs.tsv{gz}"
    _write(path, "a\tfirst text\nb\tsecond\twith tab\n\n")
    assert read_documents(path) == {"a": {"title": None, "text": "first text"},
                                    "b": {"title": None, "text": "second\twith tab"}}
    (tmp_path / "docs.csv").write_text("a,b\n")
    with pytest.raises(FormatError, match="use a .jsonl"):
        read_documents(tmp_path / "docs.csv")
    with pytest.raises(FormatError, match="does not exist"):
        read_documents(tmp_path / "missing.jsonl")


def test_read_queries_jsonl_and_tsv(tmp_path, gz):
    _write(tmp_path / f"queries.jsonl{gz}", '{"_id": "q1", "text": "what lifts"}\n{"_id": "q2"}\n')
    assert read_queries(tmp_path / f"queries.jsonl{gz}") == {"q1": "what lifts", "q2": ""}
    _write(tmp_path / f"queries.tsv{gz}", "q1\twhat lifts\n")
    assert read_queries(tmp_path / f"queries.tsv{gz}") == {"q1": "what lifts"}


def test_read_qrels_beir_trec_and_errors(tmp_path, gz):
    beir = tmp_path / f"test.tsv{gz}"
    _write(beir, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td1\t2\n")
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}}
    _write(beir, "q1\td1\t1\n")  # no header
    assert read_qrels(beir) == {"q1": {"d1": 1}}
    trec = tmp_path / f"qrels.txt{gz}"
    _write(trec, "q1 0 d1 1\nq1 0 d2 -1\n\n")
    assert read_qrels(trec) == {"q1": {"d1": 1, "d2": -1}}
    _write(trec, "q1\td1\t1\nq2\td1\n")
    with pytest.raises(FormatError, match=":2: expected query-id"):
        read_qrels(trec)


def test_trec_run_round_trip(tmp_path, gz):
    path = tmp_path / "sub" / f"run.trec{gz}"
    run = {"q1": {"b": 1.5, "a": 1.5, "c": 3.0}, "q2": {"x": 0.25}}
    write_trec_run(run, path, tag="t")
    with open_text(path) as f:
        lines = f.read().splitlines()
    assert lines == ["q1 Q0 c 1 3 t", "q1 Q0 a 2 1.5 t", "q1 Q0 b 3 1.5 t", "q2 Q0 x 1 0.25 t"]
    assert read_trec_run(path) == run
    third = float(np.float32(1 / 3))
    write_trec_run({"q": {"d": third}}, path, tag="t")
    assert read_trec_run(path) == {"q": {"d": pytest.approx(third, rel=1e-8)}}
    for bad in ({"q 1": {"d": 1.0}}, {"q": {"": 1.0}}):
        with pytest.raises(FormatError, match="whitespace"):
            write_trec_run(bad, path, tag="t")
    with pytest.raises(FormatError, match="run tag"):
        write_trec_run(run, path, tag="my tag")
    _write(path, "q1 Q0 a 1\n")
    with pytest.raises(FormatError, match=":1: expected 'qid Q0"):
        read_trec_run(path)


def test_ids_round_trip(tmp_path, gz):
    write_ids(["a", "b\u00e9", "3"], tmp_path / f"ids.txt{gz}")
    assert read_ids(tmp_path / f"ids.txt{gz}") == ["a", "b\u00e9", "3"]


def _batches():
    vocab = Vocabulary(["alpha", 'qu"ote', "\u00e9t\u00e9", "d"])
    a = SparseBatch.from_rows([([0, 2], [1.0, 0.5]), ([], [])], ids=["x", "y"], dim=4, vocab=vocab)
    b = SparseBatch.from_rows([([1, 3], [0.25, 2.0])], ids=["z"], dim=4, vocab=vocab)
    return a, b, SparseBatch.concat([a, b])


@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz", "v.bin", "v.bin.gz", "v.parquet", "v.npz"])
def test_writers_append_batches_like_one_write(tmp_path, name):
    a, b, both = _batches()
    with open_vector_writer(tmp_path / name, dim=4) as w:
        w.write(a)
        w.write(b)
    assert w.rows == 3
    write_vectors(both, tmp_path / f"one-{name}")
    ids = ["x", "y", "z"] if name.startswith("v.bin") or name == "v.npz" else None
    got = read_vectors(tmp_path / name, ids=ids, dim=4, vocab=both.vocab)
    ref = read_vectors(tmp_path / f"one-{name}", ids=ids, dim=4, vocab=both.vocab)
    for r in (got, ref):
        np.testing.assert_array_equal(r.indptr, both.indptr)
        np.testing.assert_array_equal(r.indices, both.indices)
        np.testing.assert_allclose(r.values, both.values)
        assert list(r.ids) == ["x", "y", "z"]


def test_writer_with_no_rows_writes_a_valid_empty_file(tmp_path):
    for name in ("e.parquet", "e.bin", "e.jsonl", "e.npz"):
        open_vector_writer(tmp_path / name, dim=7).close()
        assert len(read_vectors(tmp_path / name, ids=[] if name.endswith(("bin", "npz")) else None)) == 0


def test_stream_writer_refuses_npz(tmp_path):
    with pytest.raises(FormatError, match="cannot stream-write"):
        open_vector_writer(tmp_path / "v.npz", dim=4, stream=True)
