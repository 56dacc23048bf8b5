"""Issue 13 at the index level: build input checks (ids, terms per document), resource limits (k, dim,
memory), strict parameter types, and the structural checks every load runs (verify=False included)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from aftershock.errors import (AftershockError, ConfigError, DuplicateIdError, IndexCorruptError, InvalidIdError,
                               ResourceLimitError)
from aftershock.index import SparseBatch, Vocabulary, write_vectors
from aftershock.index.store import canonical
from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex, load_index

DIM = 300


def batch(n=60, seed=0, ids=None, big_row: int | None = None, dim=DIM, vocab=None):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n):
        m = big_row if r == 0 and big_row else int(rng.integers(3, 12))
        idx = rng.choice(dim, m, replace=False)
        rows.append((idx, rng.uniform(0.1, 1.0, m)))
    return SparseBatch.from_rows(rows, ids=ids or [f"d{i}" for i in range(n)], dim=dim, vocab=vocab)


BUILDERS = [lambda d, **kw: ExactIndex.build(d, **kw),
            lambda d, **kw: SeismicIndex.build(d, n_postings=20, threads=1, **kw)]


@pytest.mark.parametrize("build", BUILDERS)
def test_duplicate_document_ids_are_rejected(build):
    ids = [f"d{i}" for i in range(60)]
    ids[41] = "d7"
    with pytest.raises(DuplicateIdError) as ei:
        build(batch(ids=ids))
    assert "'d7'" in str(ei.value) and "7" in str(ei.value) and "41" in str(ei.value)


@pytest.mark.parametrize("bad", ["has space", "tab\there", "new\nline", "", "nul\x00", "bell\x07", "nbsp\u00a0x"])
@pytest.mark.parametrize("build", BUILDERS)
def test_ids_a_trec_run_cannot_hold_are_rejected_at_build(build, bad):
    ids = [f"d{i}" for i in range(60)]
    ids[5] = bad
    with pytest.raises(InvalidIdError) as ei:
        build(batch(ids=ids))
    assert "row 5" in str(ei.value)


@pytest.mark.parametrize("build", BUILDERS)
def test_terms_per_document_limit(build):
    docs = batch(dim=6000, big_row=5000)
    with pytest.raises(ResourceLimitError) as ei:
        build(docs)
    msg = str(ei.value)
    assert "'d0'" in msg and "5000" in msg and "4096" in msg and "--max-terms-per-doc" in msg
    index = build(docs, max_terms_per_doc=6000)
    assert index.n_docs == 60


def test_terms_per_document_limit_in_readers(tmp_path):
    docs = batch(dim=6000, big_row=5000, vocab=Vocabulary([f"t{i}" for i in range(6000)]))
    from aftershock.index import read_vectors

    for suffix in ("npz", "jsonl", "bin", "parquet"):
        f = tmp_path / f"docs.{suffix}"
        write_vectors(docs, f)
        with pytest.raises(ResourceLimitError, match="4096"):
            read_vectors(f, dim=6000 if suffix in ("npz", "bin") else None, what="documents")
        assert len(read_vectors(f, dim=6000 if suffix in ("npz", "bin") else None, max_terms_per_doc=5000)) == 60


def test_env_raises_the_terms_limit(monkeypatch):
    monkeypatch.setenv("AFTERSHOCK_MAX_TERMS_PER_DOC", "8000")
    assert ExactIndex.build(batch(dim=6000, big_row=5000)).n_docs == 60


@pytest.fixture(scope="module")
def indexes():
    docs = batch(n=80, seed=3)
    return docs, ExactIndex.build(docs), SeismicIndex.build(docs, n_postings=20, knn=2, threads=1)


def test_k_limits(indexes):
    docs, exact, seismic = indexes
    for index in (exact, seismic):
        with pytest.raises(ResourceLimitError, match="AFTERSHOCK_MAX_K"):
            index.search(docs[:2], k=10**9)
        for k in (True, 0, -1, 2.5, "10"):
            with pytest.raises(ConfigError):
                index.search(docs[:2], k=k)
        assert index.search(docs[:2], k=200).ids.shape == (2, 200)  # k above n_docs: padded, fine


def test_memory_estimate_before_allocating(indexes, monkeypatch):
    docs, exact, seismic = indexes
    monkeypatch.setenv("AFTERSHOCK_MAX_MEMORY", "2000")
    with pytest.raises(ResourceLimitError, match="AFTERSHOCK_MAX_MEMORY"):
        SeismicIndex.build(docs, n_postings=20, threads=1)
    with pytest.raises(ResourceLimitError, match="memory"):
        exact.search(docs[:50], k=5000)


def test_dim_limit():
    with pytest.raises(ResourceLimitError, match="AFTERSHOCK_MAX_DIM"):
        SparseBatch.from_rows([([1], [1.0])], dim=2**31 - 1)


@pytest.mark.parametrize("kw", [{"query_cut": True}, {"query_cut": 2.0}, {"heap_factor": "0.5"},
                                {"heap_factor": True}, {"n_knn": True}, {"threads": True}, {"heap_factor": float("nan")}])
def test_search_params_are_strictly_typed(kw):
    with pytest.raises(ConfigError):
        SearchParams(**kw)


@pytest.mark.parametrize("kw", [{"max_fraction": True}, {"summary_energy": "0.4"}, {"centroid_fraction": None},
                                {"seed": -1}, {"seed": 1.5}, {"max_terms_per_doc": 0}, {"n_postings": True}])
def test_build_config_is_strictly_typed(kw):
    with pytest.raises(ConfigError):
        SeismicConfig(**kw)


# ---------------------------------------------------------------------------------------------- structure on load
def resign(path, edit):
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    meta.pop("meta_sha256", None)
    meta["meta_sha256"] = hashlib.sha256(canonical(meta)).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit", [
    lambda m: m.update(n_docs=m["n_docs"] // 2), lambda m: m.update(n_docs=m["n_docs"] * 2),
    lambda m: m.update(dim=m["dim"] + 1), lambda m: m.update(dim=2**31 - 1), lambda m: m.update(n_docs=-1),
    lambda m: m.update(dim="300"), lambda m: m.update(kind="nope"),
])
@pytest.mark.parametrize("which", [1, 2])
def test_consistent_meta_edits_fail_structurally(tmp_path, indexes, which, edit):
    """A meta.json edited *and* re-signed (so its checksum holds) still cannot reach the kernels."""
    indexes[which].save(tmp_path / "i")
    resign(tmp_path / "i", edit)
    for verify in (True, False):
        with pytest.raises(AftershockError):
            load_index(tmp_path / "i", verify=verify)


def test_array_edits_fail_structurally_without_hashes(tmp_path, indexes):
    """verify=False skips only the hashes: an out-of-range document row is still caught."""
    _, exact, seismic = indexes
    for index, array in ((exact, "inv_docs"), (seismic, "blk_docs"), (seismic, "comp_cnt"), (seismic, "ent_delta"),
                         (seismic, "knn"), (seismic, "fwd_ptr")):
        index.save(tmp_path / "i")
        meta = json.loads((tmp_path / "i" / "meta.json").read_text())
        f = tmp_path / "i" / next(n for n, i in meta["files"].items() if i.get("array") == array)
        a = np.load(f)
        a.reshape(-1)[-1] = np.iinfo(a.dtype).max if a.dtype.kind in "iu" else 1e30
        np.save(f, a)
        with pytest.raises(IndexCorruptError, match="damaged"):
            load_index(tmp_path / "i", verify=False)
        with pytest.raises(IndexCorruptError, match="sha256"):
            load_index(tmp_path / "i")


def test_missing_vocabulary_is_detected(tmp_path):
    vocab = Vocabulary([f"t{i}" for i in range(DIM)])
    ExactIndex.build(batch(vocab=vocab)).save(tmp_path / "v")

    def drop_vocab(m):
        m["files"] = {k: v for k, v in m["files"].items() if v.get("extra") != "vocab.json"}
    resign(tmp_path / "v", drop_vocab)
    with pytest.raises(IndexCorruptError, match="vocab"):
        load_index(tmp_path / "v", verify=False)


def test_loaded_index_answers_like_the_built_one(tmp_path, indexes):
    docs, exact, seismic = indexes
    for index in (exact, seismic):
        index.save(tmp_path / index.kind)
        for verify in (True, False):
            loaded = load_index(tmp_path / index.kind, verify=verify)
            a, b = index.search(docs[:10], 5), loaded.search(docs[:10], 5)
            np.testing.assert_array_equal(a.ids, b.ids)
