"""REST routes over a writable collection (aftershock.service.collection): Qdrant-shaped upsert / delete /
query with a filter / info, and OpenSearch-shaped _bulk."""

from __future__ import annotations

import json

import pytest

from aftershock import Collection, CollectionConfig

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from aftershock.service.collection import create_collection_app  # noqa: E402


@pytest.fixture()
def client(tmp_path):
    c = Collection.create(tmp_path / "c", dim=50, config=CollectionConfig(buffer_docs=3),
                          schema={"src": "keyword", "year": "integer"})
    with TestClient(create_collection_app(c, name="docs")) as cl:
        yield cl, c
    c.close()


def test_upsert_query_filter_delete(client):
    cl, c = client
    pts = [{"id": f"p{i}", "vector": {"indices": [1, 2 + i], "values": [1.0, 0.5]},
            "payload": {"src": "kjv" if i % 2 else "gcide", "year": 1900 + i}} for i in range(6)]
    r = cl.put("/collections/docs/points", json={"points": pts})
    assert r.status_code == 200 and r.json()["result"]["upserted"] == 6
    q = {"query": {"indices": [1], "values": [1.0]}, "limit": 10, "with_payload": True,
         "filter": {"must": [{"key": "src", "match": {"value": "kjv"}}]}}
    hits = cl.post("/collections/docs/points/query", json=q).json()["result"]["points"]
    assert sorted(h["id"] for h in hits) == ["p1", "p3", "p5"] and hits[0]["payload"]["src"] == "kjv"
    assert cl.post("/collections/docs/points/delete", json={"points": ["p1"]}).json()["result"]["deleted"] == 1
    hits = cl.post("/collections/docs/points/query", json=q).json()["result"]["points"]
    assert sorted(h["id"] for h in hits) == ["p3", "p5"]
    info = cl.get("/collections/docs").json()["result"]
    assert info["points_count"] == 5
    assert c.count() == 5


def test_errors_are_4xx(client):
    cl, _ = client
    assert cl.get("/collections/nope").status_code == 404
    r = cl.put("/collections/docs/points", json={"points": [{"id": "a", "vector": {"indices": [99], "values": [1]}}]})
    assert r.status_code == 422 and "dim" in r.json()["error"]["message"]
    r = cl.post("/collections/docs/points/query", json={"query": {"indices": [1], "values": [1.0]},
                                                       "filter": {"must": [{"key": "color", "match": {"value": 1}}]}})
    assert r.status_code == 422
    r = cl.put("/collections/docs/points", json={"points": [{"id": "a", "vector": {"indices": [1], "values": [1]},
                                                            "payload": {"year": "x"}}]})
    assert 400 <= r.status_code < 500


def test_bulk(client):
    cl, c = client
    lines = [{"index": {"_id": "a"}}, {"vector": {"indices": [3], "values": [1.0]}, "src": "kjv"},
             {"index": {"_id": "b"}}, {"vector": {"indices": [3, 4], "values": [1.0, 1.0]}},
             {"delete": {"_id": "a"}}, {"index": {"_id": "a"}}, {"vector": {"indices": [4], "values": [2.0]}}]
    r = cl.post("/_bulk", content="\n".join(json.dumps(x) for x in lines) + "\n")
    assert r.status_code == 200 and not r.json()["errors"] and len(r.json()["items"]) == 4
    batch, _ = c.get(["a", "b"])
    assert list(batch.ids) == ["a", "b"] and batch.to_dict(0) == {4: 2.0}
