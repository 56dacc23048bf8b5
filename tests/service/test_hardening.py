"""Service hardening (issue 13) through TestClient: response limits, the per-request deadline, undecodable
text, HEAD on health routes, zero-weight queries, errors' fields from attributes, and concurrent searches on
one index (no per-index lock) matching serial ones."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from aftershock.errors import ConfigError, InvalidVectorError
from aftershock.service.engine import api_error_from

RAW = {"content-type": "application/json"}
Q = {"indices": [2129, 3358, 4834], "values": [1.2, 0.8, 1.5]}


def test_batch_times_k_limit_names_the_flag(make_client):
    c = make_client(max_hits=50)
    r = c.post("/search/batch", json={"queries": [Q] * 6, "k": 10})
    assert r.status_code == 422, r.text
    e = r.json()
    assert e["error"] == "limit_exceeded" and e["field"] == "k"
    assert "max_hits=50" in e["message"] and "--max-hits" in e["message"]
    assert c.post("/search/batch", json={"queries": [Q] * 5, "k": 10}).status_code == 200


def test_response_bytes_estimated_before_search(make_client):
    c = make_client(max_response_bytes=20_000)
    r = c.post("/search", json={"query": Q, "k": 100, "return_documents": True})
    assert r.status_code == 422, r.text
    e = r.json()
    assert e["error"] == "response_too_large" and "max_response_bytes=20000" in e["message"]
    assert "--max-response-bytes" in e["message"]
    assert c.post("/search", json={"query": Q, "k": 10}).status_code == 200  # small answers still pass


def test_response_bytes_checked_while_building(make_client):
    """The estimate uses the mean document size; the real size is charged while the body is built."""
    c = make_client(max_response_bytes=400_000)
    eng = c.app.state.engine
    eng._doc_bytes = 1.0  # pretend documents are tiny: the estimate passes, the build must stop
    r = c.post("/search/batch", json={"queries": [Q] * 20, "k": 100, "return_documents": True})
    assert r.status_code == 422 and r.json()["error"] == "response_too_large", r.text[:300]


def test_large_answer_is_streamed_and_complete(client, seismic_index):
    r = client.post("/search/batch", json={"queries": [Q] * 10, "k": 100, "return_documents": True})
    assert r.status_code == 200, r.text[:300]
    assert len(r.content) > (1 << 20)  # above STREAM_BYTES: streamed in parts
    body = r.json()
    assert len(body["results"]) == 10 and len(body["results"][0]["hits"]) == 100
    assert body["results"][0]["hits"][0]["document"]["vector"]["indices"]


class SlowEncoder:
    """Takes ``delay`` seconds per call (a stand-in for a slow model)."""

    name = "slow"

    def __init__(self, inner, delay):
        self.inner, self.delay, self.vocab = inner, delay, inner.vocab

    def encode_queries(self, texts):
        time.sleep(self.delay)
        return self.inner.encode_queries(texts)


def test_request_deadline_answers_504_at_the_deadline(make_client, encoder):
    c = make_client(encoder=SlowEncoder(encoder, 2.0), request_timeout=0.3, warmup=False)
    t0 = time.perf_counter()
    r = c.post("/search", json={"query": "wing flow", "k": 3})
    dt = time.perf_counter() - t0
    assert r.status_code == 504, r.text
    assert r.json()["error"] == "deadline_exceeded" and "--request-timeout" in r.json()["message"]
    assert dt < 1.5, dt
    assert c.get("/health").status_code == 200


@pytest.mark.parametrize("body", [
    b'{"query": "wing \\ud800 flow", "k": 3}',
    b'{"query": {"text": "wing \\udfff flow"}, "k": 3}',
    b'{"query": "wing \xff\xfe flow", "k": 3}',
    b'{"queries": ["wing \\ud800", "flow \\udc00 \xc3"], "k": 3}',
])
def test_undecodable_text_becomes_replacement_character(client, body):
    path = "/search/batch" if b"queries" in body else "/search"
    r = client.post(path, content=body, headers=RAW)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"] if path == "/search" else r.json()["results"][0]["hits"]
    assert hits


def test_surrogate_token_key_is_a_named_422(client):
    r = client.post("/search", content=b'{"query": {"tokens": {"wing \\ud800": 1.0}}}', headers=RAW)
    assert r.status_code == 422, r.text
    e = r.json()
    assert e["error"] == "unknown_token" and e["field"] == "query.tokens.wing \ufffd"
    r = client.post("/default/_search", headers=RAW,
                    content=b'{"query": {"neural_sparse": {"f": {"query_tokens": {"\\udbff": 1.0}}}}}')
    assert r.status_code == 422 and r.json()["error"] == "unknown_token"


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_head_on_health_routes(client, path):
    r = client.head(path)
    assert r.status_code == 200 and r.content == b""


def test_zero_weight_query_returns_no_hits(client):
    for q in ({"indices": [2129, 3358], "values": [0.0, 0.0]}, {"tokens": {"wing": 0.0}}):
        r = client.post("/search", json={"query": q, "k": 10})
        assert r.status_code == 200 and r.json()["hits"] == [], r.text
    r = client.post("/search/batch", json={"queries": [{"indices": [5], "values": [0.0]}, Q], "k": 5})
    res = r.json()["results"]
    assert res[0]["hits"] == [] and len(res[1]["hits"]) == 5
    r = client.post("/collections/default/points/query", json={"query": {"indices": [5], "values": [0.0]}})
    assert r.status_code == 200 and r.json()["result"]["points"] == []


def test_errors_take_the_field_from_attributes():
    e = api_error_from(ConfigError("whatever the text says", field="heap_factor", value=2))
    assert e.status == 422 and e.field == "heap_factor"
    assert api_error_from(ConfigError("k=3 looks like a field but is not marked")).field is None
    assert api_error_from(InvalidVectorError("bad", field="values[2]"), "queries[1]").field == "queries[1].values[2]"


def test_concurrent_searches_on_one_index_match_serial(seismic_index, cranfield):
    """No per-index lock: each search has its own scratch; 8 threads x single queries and batches."""
    _, queries = cranfield
    expect = seismic_index.search(queries, 10)
    errors = []

    def worker(t):
        try:
            for i in range(t, len(queries), 8):
                got = seismic_index.search(queries[i:i + 1], 10)
                assert np.array_equal(got.ids[0], expect.ids[i]) and np.array_equal(got.scores[0], expect.scores[i])
            got = seismic_index.search(queries[t * 20:t * 20 + 20], 10, threads=2)
            assert np.array_equal(got.ids, expect.ids[t * 20:t * 20 + 20])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_settings_validate_the_new_limits():
    from aftershock.service import ServiceSettings

    for bad in ({"request_timeout": 0}, {"body_timeout": -1}, {"max_hits": 0}, {"batch_slots": 1.5},
                {"header_timeout": True}, {"max_connections": 0}):
        with pytest.raises(ConfigError):
            ServiceSettings(**bad)
    s = ServiceSettings(request_timeout=2.5, max_hits=10)
    assert json.loads(s.to_json())["request_timeout"] == 2.5
