"""``aftershock serve --collection DIR``: the full service app over a writable collection (create_app with
``collection=``): upserts acknowledged once the log holds them, a filter in every search body, external ids,
payloads, counts, OpenSearch _bulk; bad filters are 4xx; ``serve --index`` refuses filters. And
``aftershock search --index COLLECTION --filter JSON``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from collection_helpers import DIM, queries, random_docs

from aftershock import Collection, CollectionConfig, ExactIndex
from aftershock.cli import main
from aftershock.index import Vocabulary, read_trec_run, write_ids, write_vectors

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from aftershock.service import ServiceSettings  # noqa: E402
from aftershock.service.app import create_app  # noqa: E402

SCHEMA = {"src": "keyword", "year": "integer"}
KJV = {"must": [{"key": "src", "match": {"value": "kjv"}}]}


def _points(n, start=0):
    return [{"id": f"p{i}", "vector": {"indices": [1, 2 + i % 40], "values": [1.0, 0.5]},
             "payload": {"src": "kjv" if i % 2 else "gcide", "year": 1900 + i}} for i in range(start, start + n)]


@pytest.fixture()
def served(tmp_path):
    c = Collection.create(tmp_path / "c", vocab=Vocabulary([f"t{i}" for i in range(50)]),
                          config=CollectionConfig(buffer_docs=5), schema=SCHEMA)
    with TestClient(create_app(None, settings=ServiceSettings(collection="docs", warmup=False), collection=c)) as cl:
        yield cl, c
    c.close()


def test_writes_then_filtered_search_on_every_route(served, tmp_path):
    cl, c = served
    r = cl.put("/collections/docs/points", json={"points": _points(12)})
    assert r.status_code == 200 and r.json()["result"]["upserted"] == 12
    # acknowledged = in the log: a second, read-only opener replays it and sees all 12
    assert Collection.open(tmp_path / "c", read_only=True).count() == 12
    q = {"indices": [1], "values": [1.0]}
    odd = {f"p{i}" for i in range(1, 12, 2)}
    hits = cl.post("/search", json={"query": q, "k": 20, "filter": KJV}).json()["hits"]
    assert {h["id"] for h in hits} == odd and all(h["score"] > 0 for h in hits)
    res = cl.post("/search/batch", json={"queries": [q, q], "k": 3, "filter": KJV}).json()["results"]
    assert len(res) == 2 and all(len(x["hits"]) == 3 and {h["id"] for h in x["hits"]} <= odd for x in res)
    pts = cl.post("/collections/docs/points/query", json={"query": q, "limit": 20, "with_payload": True,
                                                         "filter": KJV}).json()["result"]["points"]
    assert {p["id"] for p in pts} == odd and all(p["payload"]["src"] == "kjv" for p in pts)
    body = {"query": {"neural_sparse": {"v": {"query_tokens": {"t1": 1.0}}}}, "size": 20, "_source": True,
            "filter": {"must": [{"key": "year", "range": {"gte": 1909}}]}}
    os_hits = cl.post("/docs/_search", json=body).json()["hits"]["hits"]
    assert {h["_id"] for h in os_hits} == {"p9", "p10", "p11"} and os_hits[0]["_source"]["year"] >= 1909
    doc = cl.get("/documents/p3").json()
    assert doc["id"] == "p3" and doc["payload"] == {"src": "kjv", "year": 1903}
    assert cl.get("/documents/nope").status_code == 404
    assert cl.post("/collections/docs/points/delete", json={"points": ["p1", "p3"]}).json()["result"]["deleted"] == 2
    hits = cl.post("/search", json={"query": q, "k": 20, "filter": KJV}).json()["hits"]
    assert {h["id"] for h in hits} == odd - {"p1", "p3"}
    info = cl.get("/collections/docs").json()["result"]
    assert info["points_count"] == 10
    assert cl.get("/info").json()["kind"] == "collection" and cl.get("/info").json()["n_docs"] == 10
    spec = cl.get("/openapi.json").json()["paths"]  # one query route per path: the app's, with its filter
    assert "put" in spec["/collections/{c}/points"] and list(spec["/collections/{collection}/points/query"]) == ["post"]
    assert "/collections/{c}/points/query" not in spec and cl.get("/").status_code == 200
    lines = [{"index": {"_id": "b1"}}, {"vector": {"indices": [1], "values": [3.0]}, "src": "kjv", "year": 2000},
             {"delete": {"_id": "p5"}}]
    r = cl.post("/_bulk", content="\n".join(json.dumps(x) for x in lines) + "\n")
    assert r.status_code == 200 and not r.json()["errors"]
    hits = cl.post("/search", json={"query": q, "k": 1, "filter": KJV}).json()["hits"]
    assert hits[0]["id"] == "b1"


def test_search_matches_exact_filtered_after_flushes(served):
    """Enough points for several flushed segments + the buffer: /search with a filter = brute force."""
    cl, c = served
    rng = np.random.default_rng(4)
    pts = []
    for i in range(40):
        terms = sorted(rng.choice(50, 3, replace=False).tolist())
        pts.append({"id": f"d{i}", "vector": {"indices": terms, "values": [float(x) for x in rng.integers(1, 5, 3)]},
                    "payload": {"src": ["kjv", "gcide", "wordnet"][i % 3], "year": 1900 + i}})
    for a in range(0, 40, 7):
        assert cl.put("/collections/docs/points", json={"points": pts[a:a + 7]}).status_code == 200
    assert len(c.info()["segments"]) >= 1
    flt = {"must": [{"key": "year", "range": {"gte": 1910}}], "must_not": [{"key": "src", "match": {"value": "kjv"}}]}
    allowed = [p for i, p in enumerate(pts) if i >= 10 and i % 3 != 0]
    from aftershock import SparseBatch

    sub = SparseBatch.from_rows([(p["vector"]["indices"], p["vector"]["values"]) for p in allowed],
                                ids=[p["id"] for p in allowed], dim=50)
    q = {"indices": [3, 17, 30], "values": [1.0, 2.0, 0.5]}
    want = ExactIndex.build(sub).search(SparseBatch.from_rows([(q["indices"], q["values"])], dim=50), 5)
    got = cl.post("/search", json={"query": q, "k": 5, "filter": flt}).json()["hits"]
    assert [h["score"] for h in got] == pytest.approx([float(s) for s in want.scores[0] if s > -np.inf])


@pytest.mark.parametrize("flt, code", [
    ({"must": [{"key": "color", "match": {"value": "red"}}]}, "invalid_filter"),   # unknown field
    ({"must": [{"key": "year", "range": {"gte": "x"}}]}, "invalid_filter"),        # wrong type
    ({"shall": []}, "invalid_filter"),                                              # unknown clause
    ("src = kjv", "validation_error"),                                              # not an object
])
def test_bad_filters_are_422_naming_the_filter(served, flt, code):
    cl, _ = served
    cl.put("/collections/docs/points", json={"points": _points(2)})
    for path, body in (("/search", {"query": {"indices": [1], "values": [1.0]}, "filter": flt}),
                       ("/collections/docs/points/query", {"query": {"indices": [1], "values": [1.0]}, "filter": flt})):
        r = cl.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        err = r.json()
        assert err["error"] == code and err["field"].startswith("filter"), err


def test_index_server_refuses_filters(seismic_index):
    with TestClient(create_app(seismic_index, settings=ServiceSettings(warmup=False))) as cl:
        q = {"indices": [1012], "values": [1.0]}
        assert cl.post("/search", json={"query": q}).status_code == 200
        for path, body in (("/search", {"query": q, "filter": KJV}),
                           ("/collections/default/points/query", {"query": q, "filter": KJV})):
            r = cl.post(path, json=body)
            assert r.status_code == 422 and r.json()["error"] == "no_metadata"
        assert cl.put("/collections/default/points", json={"points": _points(1)}).status_code in (404, 405)


@pytest.fixture(scope="module")
def seismic_index():
    from aftershock import SeismicIndex

    return SeismicIndex.build(random_docs(np.random.default_rng(1), [f"x{i}" for i in range(60)], dim=2000),
                              n_postings=50)


def test_cli_serve_collection_wires_the_app(tmp_path, monkeypatch, capsys):
    """`aftershock serve --collection DIR` opens the collection as its writer and runs uvicorn on the
    collection app (uvicorn.run is replaced by a TestClient over the app it was given)."""
    import uvicorn

    c = Collection.create(tmp_path / "c", dim=50, schema=SCHEMA)
    c.close()
    seen = {}

    def fake_run(app, **kw):
        with TestClient(app) as cl:
            seen["put"] = cl.put("/collections/books/points", json={"points": _points(4)}).status_code
            seen["hits"] = cl.post("/search", json={"query": {"indices": [1], "values": [1.0]},
                                                    "filter": KJV}).json()["hits"]

    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert main(["serve", "--collection", str(tmp_path / "c"), "--name", "books", "--model", "none"]) == 0
    assert seen["put"] == 200 and {h["id"] for h in seen["hits"]} == {"p1", "p3"}
    assert Collection.open(tmp_path / "c").count() == 4  # closed by serve: the writer lock is free again
    assert main(["serve", "--collection", str(tmp_path / "nope"), "--model", "none"]) == 2
    assert "not a collection directory" in capsys.readouterr().err
    assert main(["serve", "--collection", str(tmp_path / "c"), "--workers", "2", "--model", "none"]) == 2
    assert "one writer" in capsys.readouterr().err


def test_cli_search_collection_with_filter(tmp_path, capsys):
    docs = random_docs(np.random.default_rng(0), [f"d{i}" for i in range(40)])
    c = Collection.create(tmp_path / "coll", dim=DIM, config=CollectionConfig(buffer_docs=15),
                          schema={"year": "integer"})
    c.upsert(docs, metadata=[{"year": 1990 + i} for i in range(40)])
    c.close()
    qs = queries()
    write_vectors(qs, tmp_path / "q.npz")
    write_ids(qs.ids, tmp_path / "q.ids.txt")
    base = ["search", "--index", str(tmp_path / "coll"), "--queries", str(tmp_path / "q.npz"), "--query-ids",
            str(tmp_path / "q.ids.txt"), "-k", "5", "--output", str(tmp_path / "run.txt")]
    assert main(base + ["--filter", '{"must": [{"key": "year", "range": {"gte": 2020}}]}']) == 0
    run = read_trec_run(tmp_path / "run.txt")
    assert run and all(int(d[1:]) >= 30 for hits in run.values() for d in hits)  # external ids, filtered
    (tmp_path / "f.json").write_text('{"must_not": [{"key": "year", "range": {"lt": 2025}}]}')
    assert main(base + ["--filter", str(tmp_path / "f.json")]) == 0
    run = read_trec_run(tmp_path / "run.txt")
    assert all(int(d[1:]) >= 35 for hits in run.values() for d in hits)
    capsys.readouterr()
    assert main(base + ["--filter", '{"must": [']) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(base + ["--filter", '{"must": [{"key": "colour", "match": {"value": 1}}]}']) == 2
    assert "colour" in capsys.readouterr().err
    # an index has no metadata: --filter is refused before anything is searched
    ExactIndex.build(docs).save(tmp_path / "ix")
    assert main(base[:2] + [str(tmp_path / "ix")] + base[3:] + ["--filter", '{"must": []}']) == 2
    assert "needs a collection" in capsys.readouterr().err


def test_hybrid_is_refused_on_a_collection_and_with_a_filter(served):
    cl, _ = served
    cl.put("/collections/docs/points", json={"points": _points(2)})
    q = {"indices": [1], "values": [1.0]}
    for body in ({"query": q, "hybrid": {"method": "rrf"}},
                 {"query": q, "hybrid": {"method": "rrf"}, "filter": {"must": [{"key": "year", "range": {"gte": 1}}]}}):
        r = cl.post("/search", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "no_hybrid" and r.json()["field"] == "hybrid"
    assert cl.post("/search", json={"query": q}).status_code == 200   # the server still answers
