"""`"hybrid": {...}` in /search and /search/batch (aftershock.service.hybrid): the answer is the fusion of the
served index's and the BM25 side's lists, computed here by hand; refusals name the field."""

from __future__ import annotations

import numpy as np
import pytest

from aftershock.errors import ConfigError
from aftershock.index import read_documents
from aftershock.index.fusion import DEFAULT_WEIGHT, fuse
from aftershock.seismic import SearchParams

pytest.importorskip("fastapi")
pytest.importorskip("Stemmer")

TEXT = "supersonic flow over a swept wing"


@pytest.fixture(scope="module")
def hclient(make_client, encoder, titles_tsv):
    return make_client(encoder=encoder, documents=read_documents(titles_tsv), hybrid=True)


def _expected(client, encoder, seismic_index, texts, k, depth, method, weights):
    engine = client.app.state.engine
    lex, _ = engine.hybrid.search(texts, depth, SearchParams())
    learned = seismic_index.search(encoder.encode_queries(texts), depth, SearchParams())
    return fuse([lex, learned], method, weights, k)


def _ids(client, res, qi=0):
    return [client.app.state.engine.doc_ids[r] for r in res.ids[qi] if r >= 0]


def test_hybrid_convex_and_rrf_equal_the_hand_fusion(hclient, encoder, seismic_index):
    r = hclient.post("/search", json={"query": TEXT, "k": 5, "hybrid": {}})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    want = _expected(hclient, encoder, seismic_index, [TEXT], 5, 100, "convex", [1 - DEFAULT_WEIGHT, DEFAULT_WEIGHT])
    assert [h["id"] for h in hits] == _ids(hclient, want)
    np.testing.assert_allclose([h["score"] for h in hits], want.scores[0, :len(hits)], rtol=1e-6)
    r = hclient.post("/search", json={"query": {"text": TEXT}, "k": 3,
                                      "hybrid": {"method": "rrf", "depth": 20, "rrf_k": 10}})
    want = _expected(hclient, encoder, seismic_index, [TEXT], 3, 20, "rrf", None)
    got = r.json()["hits"]
    assert [h["id"] for h in got] == _ids(hclient, want)
    np.testing.assert_allclose([h["score"] for h in got], fuse(
        [hclient.app.state.engine.hybrid.search([TEXT], 20, SearchParams())[0],
         seismic_index.search(encoder.encode_queries([TEXT]), 20, SearchParams())], "rrf", None, 3, 10).scores[0],
        rtol=1e-6)
    # weight 1: the learned order (up to its lowest hit); weight 0: BM25's order
    r1 = hclient.post("/search", json={"query": TEXT, "k": 3, "hybrid": {"weight": 1}}).json()["hits"]
    plain = hclient.post("/search", json={"query": TEXT, "k": 3}).json()["hits"]
    assert [h["id"] for h in r1] == [h["id"] for h in plain]


def test_hybrid_batch_and_info(hclient, encoder, seismic_index):
    texts = [TEXT, "heat transfer in laminar boundary layers"]
    r = hclient.post("/search/batch", json={"queries": texts, "k": 4, "hybrid": {"weight": 0.3, "depth": 50}})
    assert r.status_code == 200, r.text
    want = _expected(hclient, encoder, seismic_index, texts, 4, 50, "convex", [0.7, 0.3])
    for qi, res in enumerate(r.json()["results"]):
        assert [h["id"] for h in res["hits"]] == _ids(hclient, want, qi)
    info = hclient.get("/info").json()["hybrid"]
    assert info["lexical"] == "bm25" and info["n_docs"] == 1400 and info["defaults"]["weight"] == DEFAULT_WEIGHT


@pytest.mark.parametrize("body, status, field", [
    ({"query": {"tokens": {"wing": 1.0}}, "hybrid": {}}, 422, "query"),
    ({"query": TEXT, "hybrid": {"weight": 1.5}}, 422, "hybrid.weight"),
    ({"query": TEXT, "hybrid": {"method": "max"}}, 422, "hybrid.method"),
    ({"query": TEXT, "hybrid": {"depth": 0}}, 422, "hybrid.depth"),
    ({"query": TEXT, "hybrid": {"depth": 5000}}, 422, "hybrid.depth"),
    ({"query": TEXT, "hybrid": {"wieght": 0.2}}, 422, "hybrid.wieght"),
    ({"query": TEXT, "hybrid": {"weight": "0.2"}}, 422, "hybrid.weight"),
])
def test_hybrid_refusals_name_the_field(hclient, body, status, field):
    r = hclient.post("/search", json=body)
    assert r.status_code == status and r.json()["field"] == field, r.text


def test_batch_refusal_names_the_query(hclient):
    r = hclient.post("/search/batch", json={"queries": [TEXT, {"indices": [1], "values": [1.0]}], "hybrid": {}})
    assert r.status_code == 422 and r.json()["field"] == "queries[1]" and r.json()["error"] == "hybrid_needs_text"


def test_server_without_hybrid_refuses_and_needs_documents(client, make_client, encoder, seismic_index):
    r = client.post("/search", json={"query": TEXT, "hybrid": {"method": "rrf"}})
    assert r.status_code == 422 and r.json()["error"] == "no_hybrid" and "--hybrid" in r.json()["message"]
    assert client.get("/info").json()["hybrid"] is None
    from aftershock.service import ServiceSettings, create_app

    with pytest.raises(ConfigError, match="--documents"):
        create_app(seismic_index, encoder=encoder, settings=ServiceSettings(hybrid=True))
