"""Collection basics: create / upsert / delete / flush / optimize / reopen, exact search equal to brute
force, the manifest and log on disk, a corrupt log tail, the writer lock, read-only readers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from collection_helpers import DIM, check_topk, model_of, queries, random_docs

from aftershock import Collection, CollectionConfig, SearchParams, SeismicConfig, SparseBatch
from aftershock.collection import CollectionLockedError
from aftershock.errors import ConfigError, FormatError, TermIdOutOfRangeError

EXACT = CollectionConfig(exact_threshold=10**9, buffer_docs=25, max_segments=3)


def test_upsert_search_delete_reopen(tmp_path):
    rng = np.random.default_rng(0)
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT)
    docs = random_docs(rng, [f"d{i}" for i in range(60)])
    for a in range(0, 60, 20):  # the buffer (25) flushes twice
        c.upsert(docs[a:a + 20])
    model = model_of(docs)
    qs = queries()
    check_topk(c.search(qs, k=5), model, qs, 5)
    assert c.count() == 60 and len(c.info()["segments"]) == 1 and c.info()["buffer_docs"] == 20
    again = random_docs(rng, [f"d{i}" for i in range(0, 60, 3)])  # replace every third
    c.upsert(again)
    model_of(again, model)
    assert c.delete(["d1", "d2", "nope"]) == 2
    del model["d1"], model["d2"]
    check_topk(c.search(qs, k=7), model, qs, 7)
    assert c.count() == len(model)
    c.close()
    c = Collection.open(tmp_path / "c")  # the buffer comes back from the log
    check_topk(c.search(qs, k=7), model, qs, 7)
    c.flush()
    c.optimize()
    info = c.info()
    assert len(info["segments"]) == 1 and info["segments"][0]["n_deleted"] == 0 and info["count"] == len(model)
    check_topk(c.search(qs, k=200), model, qs, 200)
    got, md = c.get(["d3", "d1", "d5"])
    assert list(got.ids) == ["d3", "d5"] and md == [{}, {}]
    for j, i in enumerate(got.ids):
        t, v = got.row(j)
        np.testing.assert_array_equal(t, model[i][0])
        np.testing.assert_allclose(v, model[i][1])
    c.close()


def test_manifest_generations_and_files(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT)
    c.upsert(random_docs(np.random.default_rng(1), ["a", "b", "c"]))
    c.flush()
    c.delete(["a"])
    c.flush()
    current = (tmp_path / "c" / "CURRENT").read_text()
    assert current == "manifest-000002.json"
    m = json.loads((tmp_path / "c" / current).read_text())
    assert m["wal"] == "wal-000002.log" and m["segments"][0]["deletions"].endswith(".del-000002.npy")
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["CURRENT", "LOCK", "manifest-000002.json", "segments", "wal-000002.log"]
    c.close()
    assert Collection.open(tmp_path / "c").count() == 2


def test_corrupt_and_truncated_log_tail_is_reported_and_skipped(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT)
    c.upsert(random_docs(np.random.default_rng(2), ["a", "b"]))
    c.upsert(random_docs(np.random.default_rng(3), ["c"]))
    c.close()
    wal = tmp_path / "c" / "wal-000000.log"
    data = bytearray(wal.read_bytes())
    data[-3] ^= 0xFF  # flip a byte of the last record
    wal.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="skipped"):
        c = Collection.open(tmp_path / "c")
    assert c.count() == 2 and c.info()["replay"]["skipped_bytes"] > 0
    assert "crc32" in c.info()["replay"]["skipped_reason"]
    c.upsert(random_docs(np.random.default_rng(4), ["d"]))  # appended after the cut: readable
    c.close()
    with open(wal, "ab") as f:
        f.write(b"AWL1\x10\x00")  # a torn header
    with pytest.warns(RuntimeWarning):
        c = Collection.open(tmp_path / "c")
    assert sorted(c.get(["a", "b", "c", "d"])[0].ids) == ["a", "b", "d"]
    c.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Collection.open(tmp_path / "c").close()  # the tail was moved aside: clean now


def test_one_writer_many_readers(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT)
    c.upsert(random_docs(np.random.default_rng(5), ["a", "b"]))
    with pytest.raises(CollectionLockedError):
        Collection.open(tmp_path / "c")
    r = Collection.open(tmp_path / "c", read_only=True)
    assert r.count() == 2
    with pytest.raises(ConfigError):
        r.upsert(random_docs(np.random.default_rng(6), ["x"]))
    c.close()
    Collection.open(tmp_path / "c").close()


def test_search_sees_one_generation_during_writes(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT)
    docs = random_docs(np.random.default_rng(7), [f"d{i}" for i in range(20)])
    c.upsert(docs)
    c.flush()
    snap = c.snapshot()
    c.delete([f"d{i}" for i in range(10)])
    c.optimize()
    from aftershock.collection.search import search_generation

    res = search_generation(snap, queries(), 30, SearchParams(), None, c.config)
    check_topk(res, model_of(docs), queries(), 30)  # the old generation, whole
    check_topk(c.search(queries(), k=30), model_of(docs[10:]), queries(), 30)


@pytest.mark.parametrize("durability", ["fsync", "batch", "none"])
def test_durability_modes_replay(tmp_path, durability):
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT.with_(durability=durability))
    docs = random_docs(np.random.default_rng(8), [f"d{i}" for i in range(10)])
    c.upsert(docs)
    c.close()
    c = Collection.open(tmp_path / "c")
    check_topk(c.search(queries(), k=4), model_of(docs), queries(), 4)


def test_seismic_segments_and_deletions(tmp_path):
    rng = np.random.default_rng(9)
    cfg = CollectionConfig(exact_threshold=50, buffer_docs=80, max_segments=4,
                           seismic=SeismicConfig(pruning="none", summary_energy=1.0, value_dtype="float32"))
    c = Collection.create(tmp_path / "c", dim=DIM, config=cfg)
    docs = random_docs(rng, [f"d{i}" for i in range(200)])
    c.upsert(docs)
    c.flush()
    assert {s["kind"] for s in c.info()["segments"]} == {"seismic"}
    model = model_of(docs)
    dead = [f"d{i}" for i in range(0, 200, 2)]
    c.delete(dead)
    for i in dead:
        del model[i]
    res = c.search(queries(), k=10, heap_factor=1.0, query_cut=100)
    assert not set(res.ids.ravel()) & set(dead)
    check_topk(res, model, queries(), 10)
    c.optimize()
    check_topk(c.search(queries(), k=10, heap_factor=1.0, query_cut=100), model, queries(), 10)


def test_bad_input(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, config=EXACT)
    with pytest.raises(FormatError, match="twice"):
        c.upsert(random_docs(np.random.default_rng(0), ["a", "a"]))
    with pytest.raises(TermIdOutOfRangeError):
        c.upsert(SparseBatch.from_rows([([DIM + 3], [1.0])], ids=["a"], dim=DIM + 10))
    with pytest.raises(ConfigError):
        c.search(queries(), k=0)
    with pytest.raises(ConfigError):
        Collection.create(tmp_path / "c", dim=DIM)
    assert c.count() == 0
