"""Streaming corpus encoding (`aftershock.lsr.stream.encode_corpus`) through the data layer's writers:
chunked output equals encoding the whole corpus at once, in every streaming format."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from aftershock.errors import FormatError
from aftershock.index import read_ids, read_vectors
from aftershock.lsr import BM25
from aftershock.lsr.stream import encode_corpus, iter_corpus_chunks

DOCS = [{"_id": "a", "title": "Wing", "text": "lift and drag of a swept wing"},
        {"_id": "b", "text": "boundary layer heat transfer"},
        {"id": "c", "contents": "drag of a blunt body"},
        {"_id": "d", "title": "Empty", "text": ""},
        {"_id": "e", "text": "lift at high speed"}]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in DOCS)
    return path


def test_chunks(corpus):
    chunks = list(iter_corpus_chunks(corpus, 2))
    assert [c[0] for c in chunks] == [["a", "b"], ["c", "d"], ["e"]]
    assert chunks[0][1][0] == "Wing lift and drag of a swept wing" and chunks[1][1] == ["drag of a blunt body", "Empty"]


@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz", "v.bin", "v.bin.gz", "v.parquet"])
def test_encode_corpus_equals_one_batch(tmp_path, corpus, name):
    texts = [t for _, ts in iter_corpus_chunks(corpus, 100) for t in ts]
    enc = BM25().fit(texts)
    ref = enc.encode_documents(texts, ids=[d.get("_id", d.get("id")) for d in DOCS])
    out = tmp_path / name
    stats = encode_corpus(enc, corpus, out, chunk=2, ids_path=tmp_path / "ids.txt", progress=False)
    assert stats == {"rows": 5, "nnz": ref.nnz, "dim": enc.dim}
    assert read_ids(tmp_path / "ids.txt") == list(ref.ids)
    got = read_vectors(out, ids=tmp_path / "ids.txt", dim=enc.dim, vocab=enc.vocab)
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-6)
    assert list(got.ids) == list(ref.ids)


def test_encode_corpus_refuses_npz(tmp_path, corpus):
    enc = BM25().fit(["lift"])
    with pytest.raises(FormatError, match="cannot stream-write"):
        encode_corpus(enc, corpus, tmp_path / "v.npz", progress=False)


def test_bar_has_a_total_and_moves_per_model_batch(tmp_path, corpus, monkeypatch):
    """The bar of `aftershock encode` has a total (so an ETA) and, for a model encoder, advances after each
    model batch, not once per chunk of 8192 texts (issue 15)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import sys
    from pathlib import Path

    import tqdm.auto

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _shared import MODEL

    from aftershock.lsr import Splade

    seen = {}

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *a, **kw):
            super().__init__(*a, **{**kw, "disable": True})
            self.mine = kw.get("desc") == "encode corpus.jsonl.gz"  # not the encoder's own (disabled) bar
            if self.mine:
                seen["total"], seen["updates"] = kw.get("total"), []

        def update(self, n=1):
            if self.mine:
                seen["updates"].append(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    enc = Splade(MODEL, batch_size=2)
    encode_corpus(enc, corpus, tmp_path / "v.jsonl", chunk=8192)
    assert seen["total"] == len(DOCS) and sum(seen["updates"]) == len(DOCS) and len(seen["updates"]) == 3
    assert enc.on_batch is None
