"""Fixtures of the service tests: the bundled Cranfield vectors (real SPLADE-tiny encodings) indexed once,
a small real query encoder (the tokenizer shipped in aftershock/models/default, weight 1.0 per token) and
app/client factories. Nothing here needs files outside the package."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from aftershock.index import SparseBatch, Vocabulary, read_vectors
from aftershock.seismic import SeismicConfig, SeismicIndex

DIM = 30522
CONFIG = SeismicConfig(n_postings=400, centroid_fraction=0.1, summary_energy=0.4, doc_cut=15)


def _data(name: str) -> Path:
    with resources.as_file(resources.files("aftershock").joinpath("data", "cranfield", name)) as p:
        return Path(p)


@pytest.fixture(scope="session")
def cranfield():
    vocab = Vocabulary.from_file(_data("vocab.json"))
    docs = read_vectors(_data("cranfield.docs.npz"), ids=_data("cranfield.docs.ids.txt"), dim=DIM, vocab=vocab,
                        what="documents")
    queries = read_vectors(_data("cranfield.queries.npz"), ids=_data("cranfield.queries.ids.txt"), dim=DIM,
                           vocab=vocab, what="queries")
    return docs, queries


@pytest.fixture(scope="session")
def seismic_index(cranfield):
    return SeismicIndex.build(cranfield[0], CONFIG)


@pytest.fixture(scope="session")
def index_dir(seismic_index, tmp_path_factory):
    d = tmp_path_factory.mktemp("svc-index") / "cranfield"
    seismic_index.save(d)
    return d


@pytest.fixture(scope="session")
def titles_tsv() -> Path:
    return _data("titles.tsv")


class TokenizerEncoder:
    """A real (if simple) query encoder: the WordPiece tokenizer shipped with the package's default model
    (aftershock/models/default, the bert-base-uncased vocabulary), weight 1.0 per distinct token."""

    name = "tokenizer-bag-of-words"

    def __init__(self, tokenizer_file):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tokenizer_file))
        vocab = self.tok.get_vocab()
        tokens = [""] * len(vocab)
        for t, i in vocab.items():
            tokens[i] = t
        self.vocab = Vocabulary(tokens)

    def encode_queries(self, texts: list[str]) -> SparseBatch:
        rows = []
        for text in texts:
            ids = sorted(set(self.tok.encode(text, add_special_tokens=False).ids))
            rows.append((np.array(ids, np.int64), np.ones(len(ids), np.float32)))
        return SparseBatch.from_rows(rows, dim=len(self.vocab), vocab=self.vocab, what="queries")


@pytest.fixture(scope="session")
def encoder():
    pytest.importorskip("tokenizers")
    with resources.as_file(resources.files("aftershock").joinpath("models", "default", "tokenizer.json")) as p:
        return TokenizerEncoder(p)


def wait_ready(client, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("service did not become ready")


@pytest.fixture(scope="session")
def make_client(seismic_index):
    """``make_client(index=None, encoder=None, documents=None, **settings)`` -> a started TestClient."""
    from fastapi.testclient import TestClient

    from aftershock.service import ServiceSettings, create_app

    started = []

    def make(index=None, encoder=None, documents=None, **settings):
        app = create_app(index if index is not None else seismic_index, encoder=encoder,
                         settings=ServiceSettings(**settings), documents=documents)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        started.append(client)
        wait_ready(client)
        return client

    yield make
    for c in started:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def client(make_client, encoder, titles_tsv):
    from aftershock.index import read_documents

    return make_client(encoder=encoder, documents=read_documents(titles_tsv))
