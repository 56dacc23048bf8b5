"""The fast REST part of the fault suite (issue 13): a table of bad inputs (wrong types, out-of-range and huge
values, huge k and batches, bad JSON, oversize bodies, bad routes and methods) on every search endpoint,
each a 4xx with a JSON error body; undecodable text, 0 5xx; then random JSON values per field
(hypothesis). Slow bodies, slow headers and connection floods are in test_connections.py (a real server)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Q = {"indices": [2129, 3358, 4834], "values": [1.2, 0.8, 1.5]}
RAW = {"content-type": "application/json"}

K_BAD = [None, "10", 1.5, 0, -1, 2**70, True, [], {}, 1001, 10**18]
QUERY_CUT_BAD = [0, -5, "3", 2.5, 2**40, [], True]
HEAP_BAD = [0, -0.5, 1.5, "0.5", [], True, {}]
N_KNN_BAD = [-1, "1", 1.5, 2**40, 3, True]
RETURN_DOCS_BAD = [None, "yes", 1, 0, [], {}]
QUERY_BAD = [None, 7, 1.5, True, [], "", "   ", {}, {"text": ""}, {"indices": [1]}, {"values": [1.0]},
             {"indices": [1], "values": [1.0], "tokens": {"wing": 1.0}}, {"indices": [-1], "values": [1.0]},
             {"indices": [30522], "values": [1.0]}, {"indices": [1, 1], "values": [1.0, 1.0]},
             {"indices": [1], "values": [-1.0]}, {"indices": [1], "values": [1e7]}, {"indices": [1], "values": ["1"]},
             {"indices": ["1"], "values": [1.0]}, {"indices": [1.5], "values": [1.0]},
             {"indices": [True], "values": [1.0]}, {"tokens": {"zzzqqq": 1.0}}, {"tokens": {"wing": "1"}},
             {"tokens": {"wing": -1.0}}, {"tokens": []}, {"tokens": {}}, {"indices": [], "values": []},
             {"indices": list(range(5000)), "values": [1.0] * 5000}, "x" * 20001, {"text": 5},
             {"indices": [1, 2], "values": [1.0]}, {"indices": [2**31], "values": [1.0]}]


def _cases():
    cases = []
    for field, bad in (("k", K_BAD), ("query_cut", QUERY_CUT_BAD), ("heap_factor", HEAP_BAD),
                       ("n_knn", N_KNN_BAD), ("return_documents", RETURN_DOCS_BAD)):
        for v in bad:
            cases.append(("/search", {"query": Q, field: v}))
            cases.append(("/search/batch", {"queries": [Q], field: v}))
    for q in QUERY_BAD:
        cases.append(("/search", {"query": q}))
        cases.append(("/search/batch", {"queries": [Q, q]}))
    for qs in (None, [], "abc", [Q] * 257, {}, 7):
        cases.append(("/search/batch", {"queries": qs}))
    cases += [
        ("/search/batch", {"queries": [Q] * 200, "k": 1000}),  # 200,000 results > max_hits
        ("/search/batch", {"queries": [Q] * 100, "k": 1000, "return_documents": True}),  # > max_response_bytes
        ("/search", {"query": Q, "limt": 3}), ("/search", {"query": Q, "": 1}), ("/search", {}),
        ("/search/batch", {"query": Q}),
        ("/collections/default/points/query", {"query": Q, "limit": 0}),
        ("/collections/default/points/query", {"query": Q, "limit": "3"}),
        ("/collections/default/points/query", {"query": Q, "limit": 1001}),
        ("/collections/default/points/query", {"query": Q, "with_payload": "yes"}),
        ("/collections/default/points/query", {"query": Q, "params": {"heap_factor": 2}}),
        ("/collections/default/points/query", {"query": Q, "filter": {}}),
        ("/collections/default/points/query", {"query": "text is not a Qdrant sparse query"}),
        ("/collections/other/points/query", {"query": Q}),
        ("/default/_search", {"query": {"neural_sparse": {}}}),
        ("/default/_search", {"query": {"neural_sparse": {"a": {"query_text": "x"}, "b": {"query_text": "y"}}}}),
        ("/default/_search", {"query": {"neural_sparse": {"f": {"query_text": "x", "query_tokens": {"a": 1}}}}}),
        ("/default/_search", {"query": {"neural_sparse": {"f": {"query_tokens": {"wing": 1.0}}}}, "size": 0}),
        ("/default/_search", {"query": {"neural_sparse": {"f": {"query_tokens": {"wing": 1.0}}}}, "size": 1001}),
        ("/default/_search", {"query": {"neural_sparse": {"f": {"query_tokens": {"wing": 1.0}}}}, "_source": 1}),
        ("/default/_search", {"query": {"match": {"f": "x"}}}),
        ("/other/_search", {"query": {"neural_sparse": {"f": {"query_tokens": {"wing": 1.0}}}}}),
    ]
    return cases


CASES = _cases()
RAW_BODIES = [b"", b"{", b"[]", b"null", b"1", b'"str"', b"{'a': 1}", b'{"query": NaN}',
              b'{"query": {"indices": [1], "values": [Infinity]}}',
              b'{"query": {"indices": [1], "values": [1]}, "k": 1e400}', b"\xff\xfe",
              b'{"query":' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"query": "a"', b'{"query": {"tokens": {"a": 1}}}}',
              b"\x00" * 10, json.dumps({"query": Q, "k": 10}).encode("utf-16")]


def _assert_json_4xx(r):
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body["error"], str) and len(body["message"]) > 10, body


def test_the_table_is_large_enough():
    assert len(CASES) + 2 * len(RAW_BODIES) >= 150


@pytest.mark.parametrize("path,body", CASES, ids=[f"{i}:{c[0]}" for i, c in enumerate(CASES)])
def test_bad_json_input_is_a_json_4xx(client, path, body):
    _assert_json_4xx(client.post(path, json=body))


@pytest.mark.parametrize("path", ["/search", "/search/batch"])
@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_malformed_body_is_a_json_4xx(client, path, raw):
    _assert_json_4xx(client.post(path, content=raw, headers=RAW))


def test_wrong_content_type_routes_and_methods(client):
    _assert_json_4xx(client.post("/search", content=json.dumps({"query": Q}), headers={"content-type": "text/plain"}))
    _assert_json_4xx(client.get("/search"))
    _assert_json_4xx(client.delete("/health"))
    _assert_json_4xx(client.get("/nope"))
    _assert_json_4xx(client.get("/documents/no-such-doc"))
    _assert_json_4xx(client.get("/documents/%ED%A0%80"))


def test_oversize_bodies(make_client):
    small = make_client(max_body_bytes=1000)
    body = json.dumps({"query": {"indices": list(range(300)), "values": [1.0] * 300}}).encode()
    r = small.post("/search", content=body, headers=RAW)
    _assert_json_4xx(r)
    assert r.status_code == 413 and r.headers.get("connection") == "close"

    def chunks():
        yield body[:600]
        yield body[600:]

    r = small.post("/search/batch", content=chunks(), headers=RAW)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


@pytest.mark.parametrize("raw", [b'{"query": "wing \\ud800 flow"}', b'{"query": {"tokens": {"\\ud800": 1.0}}}',
                                 b'{"query": "\\udc00\\ud800"}', b'{"query": "wing \xed\xa0\x80 flow"}',
                                 b'{"query": "\xc3\x28 flow"}', b'{"queries": ["\\ud83d\\ude00 wing", "\\ud83d"]}'])
def test_undecodable_text_is_never_5xx(client, raw):
    path = "/search/batch" if b"queries" in raw else "/search"
    r = client.post(path, content=raw, headers=RAW)
    assert r.status_code < 500 and r.json(), r.text[:300]


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(SCALARS,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=8)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["query", "k", "query_cut", "heap_factor", "n_knn", "return_documents", "extra"]),
       value=JSON_VALUES, batch=st.booleans())
def test_random_field_values_are_never_5xx(client, field, value, batch):
    body = {"queries": [Q]} if batch else {"query": Q}
    if field == "query" and batch:
        body["queries"] = [value]
    else:
        body[field] = value
    r = client.post("/search/batch" if batch else "/search", json=body)
    assert r.status_code < 500, r.text[:300]
    assert r.status_code == 200 or r.json()["error"]
