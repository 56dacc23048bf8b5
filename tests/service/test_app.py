"""The FastAPI app through TestClient: results equal in-process search, every bad input is a 4xx JSON error
naming the field, documents, info, health, metrics, API key, CORS and the Qdrant/OpenSearch aliases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aftershock.index import FORMAT_VERSION
from aftershock.seismic import ExactIndex, SearchParams

K = 10


def _vector(queries, i):
    idx, val = queries.row(i)
    return {"indices": idx.tolist(), "values": val.tolist()}


def _expected(index, batch, k=K, **params):
    res = index.search(batch, k, SearchParams(**params))
    out = []
    for s, r in zip(res.scores, res.ids):
        out.append([(str(index.doc_ids[j]), float(x)) for x, j in zip(s, r) if j >= 0])
    return out


def _pairs(hits):
    return [(h["id"], h["score"]) for h in hits]


# ---------------------------------------------------------------------------------------------- results
def test_vector_query_equals_in_process_search(client, seismic_index, cranfield):
    _, queries = cranfield
    for i in (0, 7, 100):
        r = client.post("/search", json={"query": _vector(queries, i), "k": K})
        assert r.status_code == 200, r.text
        body = r.json()
        assert _pairs(body["hits"]) == _expected(seismic_index, queries[i:i + 1])[0]
        assert len(body["hits"]) == K
        assert set(body["timing"]) == {"encode_ms", "search_ms", "total_ms"}


# a Cranfield query (9 terms) whose top 5 is exact at the defaults and changes with query_cut=2 and with
# query_cut=1 (found by measuring on the bundled vectors of the shipped model; with them heap_factor alone changes
# no query's top 5 on this small index, so it is checked together with query_cut)
SENSITIVE = 8


@pytest.mark.parametrize("knobs", [{"query_cut": 2}, {"query_cut": 1}, {"query_cut": 2, "heap_factor": 1.0}])
def test_search_params_are_applied(client, seismic_index, cranfield, knobs):
    _, queries = cranfield
    q = queries[SENSITIVE:SENSITIVE + 1]
    default = _pairs(client.post("/search", json={"query": _vector(queries, SENSITIVE), "k": 5}).json()["hits"])
    assert default == _expected(seismic_index, q, 5)[0] == _expected(ExactIndex.build(cranfield[0]), q, 5)[0]
    got = _pairs(client.post("/search", json={"query": _vector(queries, SENSITIVE), "k": 5, **knobs}).json()["hits"])
    assert got == _expected(seismic_index, q, 5, **knobs)[0]
    assert [i for i, _ in got] != [i for i, _ in default]  # the knobs reached the index


def test_token_map_equals_vector_form(client, cranfield):
    _, queries = cranfield
    tokens = queries.to_dict(5)  # {token: weight} through the index's vocabulary
    a = client.post("/search", json={"query": {"tokens": tokens}}).json()["hits"]
    b = client.post("/search", json={"query": _vector(queries, 5)}).json()["hits"]
    assert _pairs(a) == _pairs(b) and a


def test_text_query_is_encoded_server_side(client, seismic_index, encoder):
    text = "flow over a swept wing at supersonic speed"
    for query in (text, {"text": text}):
        r = client.post("/search", json={"query": query, "k": 5})
        assert r.status_code == 200, r.text
        assert _pairs(r.json()["hits"]) == _expected(seismic_index, encoder.encode_queries([text]), 5)[0]


def test_batch_keeps_request_order_and_mixes_forms(client, seismic_index, cranfield, encoder):
    _, queries = cranfield
    items = [_vector(queries, 9), {"tokens": queries.to_dict(2)}, "boundary layer transition", _vector(queries, 0)]
    r = client.post("/search/batch", json={"queries": items, "k": 4})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 4
    singles = [_pairs(client.post("/search", json={"query": q, "k": 4}).json()["hits"]) for q in items]
    assert [_pairs(x["hits"]) for x in results] == singles
    assert singles[0] == _expected(seismic_index, queries[9:10], 4)[0]


def test_return_documents_attaches_vector_and_text(client, cranfield):
    docs, queries = cranfield
    hits = client.post("/search", json={"query": _vector(queries, 1), "k": 3, "return_documents": True}).json()["hits"]
    assert len(hits) == 3
    for h in hits:
        d = h["document"]
        assert d["id"] == h["id"] and d["text"]  # titles.tsv loaded as the texts
        row = list(docs.ids).index(h["id"])
        idx, val = docs.row(row)
        assert d["vector"]["indices"] == idx.tolist()
        np.testing.assert_allclose(d["vector"]["values"], val.astype(np.float16).astype(np.float32))
        assert list(d["tokens"]) == [docs.vocab.tokens[t] for t in idx]


# ---------------------------------------------------------------------------------------------- documents, info
def test_document_lookup(client, cranfield, make_client):
    docs, _ = cranfield
    r = client.get("/documents/42")
    assert r.status_code == 200
    d = r.json()
    idx, _ = docs.row(list(docs.ids).index("42"))
    assert d["id"] == "42" and d["vector"]["indices"] == idx.tolist() and d["text"]
    r = client.get("/documents/no-such-doc")
    assert r.status_code == 404 and r.json()["field"] == "doc_id" and "no-such-doc" in r.json()["message"]
    # an exact index has no forward index: the vector comes from its inverted lists, without texts
    exact = make_client(index=ExactIndex.build(docs))
    e = exact.get("/documents/42").json()
    assert e["vector"]["indices"] == d["vector"]["indices"] and e["text"] is None
    np.testing.assert_allclose(e["vector"]["values"], docs.row(list(docs.ids).index("42"))[1])


def test_info_and_health(client, seismic_index):
    info = client.get("/info").json()
    assert info["kind"] == "seismic" and info["n_docs"] == 1400 and info["dim"] == 30522
    assert info["backend"] == "numba"
    assert info["index_bytes"] == seismic_index.nbytes() > 0
    assert info["vocab_size"] == 30522 and info["format_version"] == FORMAT_VERSION
    assert info["config"]["n_postings"] == 400 and info["limits"]["max_k"] == 1000
    assert info["encoder"] == "tokenizer-bag-of-words" and info["documents"] == 1400
    for path in ("/health", "/health/live", "/health/ready"):
        h = client.get(path)
        assert h.status_code == 200 and h.json()["ready"] and h.json()["live"]


def test_metrics_count_requests_latency_and_errors(client):
    client.post("/search", json={"query": {"indices": [1], "values": [1.0]}})
    client.post("/search", json={"query": {"indices": [1], "values": [1.0]}, "k": 0})
    text = client.get("/metrics").text
    assert 'aftershock_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert 'aftershock_http_requests_total{method="POST",route="/search",status="422"}' in text
    assert 'aftershock_http_request_duration_seconds_bucket{le="0.005",route="/search"}' in text
    assert 'aftershock_http_errors_total{code="validation_error",route="/search"}' in text
    assert 'aftershock_search_duration_seconds_count{endpoint="search"}' in text
    assert "aftershock_ready 1.0" in text


# ---------------------------------------------------------------------------------------------- bad input
RAW = {"content-type": "application/json"}
BAD = [  # (request body, expected status, field, error code)
    ({"query": {"tokens": {"zzzzqqq": 1.0}}}, 422, "query.tokens.zzzzqqq", "unknown_token"),
    ({"query": {"indices": [5, 30522], "values": [1, 1]}}, 422, "query.indices[1]", "term_id_out_of_range"),
    ({"query": {"indices": [5, 5], "values": [1, 2]}}, 422, "query.indices[1]", "duplicate_term"),
    ({"query": {"indices": [5, 6], "values": [1]}}, 422, "query.values", "ragged_vector"),
    ({"query": {"indices": [5], "values": [-1.0]}}, 422, "query.values[0]", "validation_error"),
    ({"query": {"indices": [5], "values": [1e9]}}, 422, "query.values[0]", "validation_error"),
    ({"query": {"indices": [-3], "values": [1.0]}}, 422, "query.indices[0]", "validation_error"),
    ({"query": {"indices": [2**40], "values": [1.0]}}, 422, "query.indices[0]", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "k": 0}, 422, "k", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "query_cut": 2**63}, 422, "query_cut", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "n_knn": 2**31}, 422, "n_knn", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "k": 1001}, 422, "k", "limit_exceeded"),
    ({"query": {"indices": [5], "values": [1.0]}, "k": "10"}, 422, "k", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "k": 2.5}, 422, "k", "validation_error"),
    ({"query": {"indices": ["5"], "values": [1.0]}}, 422, "query.indices[0]", "validation_error"),
    ({"query": {"indices": [], "values": []}}, 422, "query.indices", "empty_query"),
    ({"query": {"tokens": {}}}, 422, "query.tokens", "empty_query"),
    ({"query": ""}, 422, "query", "empty_query"),
    ({"query": "   "}, 422, "query", "empty_query"),
    ({"query": {"text": ""}}, 422, "query.text", "validation_error"),
    ({"query": {}}, 422, "query", "validation_error"),
    ({"query": {"text": "wing", "indices": [1], "values": [1.0]}}, 422, "query", "validation_error"),
    ({"query": {"indices": [1]}}, 422, "query", "validation_error"),
    ({"query": 7}, 422, "query", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "limt": 3}, 422, "limt", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "heap_factor": 2}, 422, "heap_factor", "validation_error"),
    ({"query": {"indices": [5], "values": [1.0]}, "n_knn": 3}, 422, "n_knn", "invalid_parameter"),
    ({}, 422, "query", "validation_error"),
    ({"query": "x" * 20001}, 422, "query", "limit_exceeded"),
    ({"query": {"indices": list(range(4097)), "values": [1.0] * 4097}}, 422, "query.indices", "limit_exceeded"),
]


@pytest.mark.parametrize("body,status,field,code", BAD, ids=[f"{b[3]}:{b[2]}" for b in BAD])
def test_bad_input_is_4xx_naming_the_field(client, body, status, field, code):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    e = r.json()
    assert e["error"] == code and e["field"] == field, e
    assert len(e["message"]) > 20


@pytest.mark.parametrize("raw,field", [
    (b'{"query": {"indices": [5], "values": [NaN]}}', "query.values[0]"),
    (b'{"query": {"indices": [5], "values": [Infinity]}}', "query.values[0]"),
    (b'{"query": {"indices": [5], "values": [1.0]', "body"),
    (b"[1, 2]", "body"),
    (b"", "body"),
])
def test_non_json_and_non_finite_bodies(client, raw, field):
    r = client.post("/search", content=raw, headers=RAW)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["message"]


def test_batch_limits_and_field_paths(client):
    q = {"indices": [5], "values": [1.0]}
    r = client.post("/search/batch", json={"queries": [q, {"indices": [5, 99999], "values": [1, 1]}]})
    assert r.status_code == 422 and r.json()["field"] == "queries[1].indices[1]"
    r = client.post("/search/batch", json={"queries": [q] * 257})
    assert r.status_code == 422 and r.json()["field"] == "queries" and "max_batch=256" in r.json()["message"]
    r = client.post("/search/batch", json={"queries": []})
    assert r.status_code == 422 and r.json()["field"] == "queries"


def test_text_without_encoder_and_tokens_without_vocabulary(make_client, cranfield):
    docs, _ = cranfield
    bare = make_client()  # no encoder
    r = bare.post("/search", json={"query": "wing"})
    assert r.status_code == 422 and r.json()["error"] == "no_encoder" and "--model" in r.json()["message"]
    no_vocab = ExactIndex.build(docs)
    no_vocab.vocab = None
    r = make_client(index=no_vocab).post("/search", json={"query": {"tokens": {"wing": 1.0}}})
    assert r.status_code == 422 and r.json()["error"] == "no_vocabulary"


def test_settings_reject_an_unknown_backend():
    from aftershock.errors import ConfigError
    from aftershock.service import ServiceSettings

    with pytest.raises(ConfigError, match=r"backend='tpu' is unknown; choose one of \['auto', 'cuda', 'numba'\]"):
        ServiceSettings(backend="tpu")


def test_body_size_limit(make_client):
    small = make_client(max_body_bytes=200)
    body = json.dumps({"query": {"indices": list(range(60)), "values": [1.0] * 60}}).encode()
    r = small.post("/search", content=body, headers=RAW)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large" and "max_body_bytes=200" in r.json()["message"]

    def chunks():  # no Content-Length: the streamed body is counted
        yield body[:150]
        yield body[150:]

    r = small.post("/search", content=chunks(), headers=RAW)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def test_unknown_route_and_method_are_json_4xx(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.get("/search")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


# ---------------------------------------------------------------------------------------------- security
def test_api_key(make_client):
    c = make_client(api_key="s3cret")
    q = {"query": {"indices": [5], "values": [1.0]}}
    assert c.post("/search", json=q).status_code == 401
    assert c.post("/search", json=q, headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.post("/search", json=q, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/metrics").status_code == 401
    assert c.get("/health").status_code == 200 and c.get("/openapi.json").status_code == 200
    assert c.get("/info", headers={"X-API-Key": "s3cret"}).json()["limits"]


def test_cors_off_by_default_and_configurable(client, make_client):
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/search", headers=pre).headers
    c = make_client(cors_origins=["https://app.example"])
    r = c.options("/search", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in c.options("/search", headers={**pre, "Origin": "https://x.y"}).headers


# ---------------------------------------------------------------------------------------------- aliases
def test_qdrant_style_query(client, cranfield):
    _, queries = cranfield
    native = client.post("/search", json={"query": _vector(queries, 4), "k": 3}).json()["hits"]
    r = client.post("/collections/default/points/query",
                    json={"query": _vector(queries, 4), "limit": 3, "with_payload": True, "with_vector": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    points = body["result"]["points"]
    assert _pairs(points) == _pairs(native)
    assert points[0]["payload"]["text"] and points[0]["vector"]["indices"]
    r = client.post("/collections/other/points/query", json={"query": _vector(queries, 4)})
    assert r.status_code == 404 and r.json()["field"] == "collection"
    r = client.post("/collections/default/points/query", json={"query": _vector(queries, 4), "filter": {}})
    assert r.status_code == 422 and r.json()["field"] == "filter"


def test_opensearch_neural_sparse(client, cranfield):
    _, queries = cranfield
    tokens = queries.to_dict(6)
    native = client.post("/search", json={"query": {"tokens": tokens}, "k": 3}).json()["hits"]
    body = {"query": {"neural_sparse": {"passage_embedding": {"query_tokens": tokens}}}, "size": 3, "_source": True}
    r = client.post("/default/_search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [(h["_id"], h["_score"]) for h in hits["hits"]] == _pairs(native)
    assert hits["max_score"] == native[0]["score"] and hits["hits"][0]["_source"]["text"]
    text = client.post("/default/_search", json={"query": {"neural_sparse": {"f": {"query_text": "wing"}}}})
    assert text.status_code == 200 and text.json()["hits"]["hits"]
    bad = client.post("/default/_search", json={"query": {"neural_sparse": {"f": {"query_tokens": {"zzqq": 1.0}}}}})
    assert bad.status_code == 422 and bad.json()["field"] == "query.neural_sparse.f.query_tokens.zzqq"


def test_openapi_carries_this_servers_limits(make_client):
    spec = make_client(max_k=77, max_batch=9).get("/openapi.json").json()["components"]["schemas"]
    indices = next(m for m in spec["SparseQuery"]["properties"]["indices"]["anyOf"] if m.get("type") == "array")
    assert indices["items"]["maximum"] == 30521 and indices["maxItems"] == 4096
    assert spec["SearchRequest"]["properties"]["k"]["maximum"] == 77
    assert spec["BatchSearchRequest"]["properties"]["queries"]["maxItems"] == 9
