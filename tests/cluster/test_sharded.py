"""Sharded collections without Ray (shards opened in this process): routing by a stable hash, equality with
one collection over the same documents, routed upserts/deletes, filters, and never a silent short list."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from aftershock.cluster import ShardedCollection, ShardUnavailableError, create_cluster, read_manifest, shard_of
from aftershock.cluster.build import build_cluster
from aftershock.cluster.layout import route
from aftershock.cluster.sharded import ShardDown
from aftershock.collection import Collection, CollectionConfig
from aftershock.errors import ConfigError, IndexFormatError
from aftershock.eval.metrics import recall_at_k
from aftershock.seismic import SeismicConfig

from cluster_data import DIM, as_rows, needs_scifact, scifact


def test_routing_is_stable_across_processes():
    ids = [f"doc-{i}" for i in range(50)] + ["é", "", "x" * 300]
    here = route(ids, 7).tolist()
    code = ("from aftershock.cluster import route; import sys; "
            f"print(route({ids!r}, 7).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": "123",
                         "PATH": "", "PYTHONPATH": ":".join(sys.path)}, check=True).stdout
    assert eval(out) == here
    assert here[:5] == [shard_of(i, 7) for i in ids[:5]]
    counts = np.bincount(route([f"d{i}" for i in range(7000)], 7), minlength=7)
    assert counts.min() > 850  # about 1,000 each


def test_manifest_and_bad_inputs(tmp_path):
    create_cluster(tmp_path / "c", 3, dim=10)
    m = read_manifest(tmp_path / "c")
    assert m["shards"] == 3 and m["hash"] == "blake2b8-le-mod" and len(m["shard_dirs"]) == 3
    with pytest.raises(ConfigError, match="shards"):
        create_cluster(tmp_path / "d", 0, dim=10)
    with pytest.raises(ConfigError, match="not an empty directory"):
        create_cluster(tmp_path / "c", 2, dim=10)
    with pytest.raises(IndexFormatError, match="not an Aftershock cluster"):
        read_manifest(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    docs, qs = scifact()
    root = tmp_path_factory.mktemp("sharded")
    build_cluster(root / "cl", docs, 3, use_ray=False)
    one = Collection.create(root / "one", dim=DIM)
    one.upsert(docs)
    one.optimize()
    sc = ShardedCollection.open_local(root / "cl")
    yield docs, qs, sc, one
    sc.close()
    one.close()


@needs_scifact
def test_exact_sharded_equals_one_collection(built):
    docs, qs, sc, one = built
    assert sc.count() == len(docs) == one.count()
    a, b = one.search(qs, 10), sc.search(qs, 10)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
    assert not b.partial and b.missing_shards == ()


@needs_scifact
def test_upsert_and_delete_go_to_one_shard(built):
    docs, qs, sc, one = built
    new = docs[:4]
    ids = ["n-a", "n-b", "n-c", "n-d"]
    assert sc.upsert(new, ids=ids) == 4
    for i in ids:
        owner = shard_of(i, 3)
        for s, client in enumerate(sc.clients):
            assert (i in client.coll.get([i])[0].ids) == (s == owner)
    got, _ = sc.get(["n-c", "missing", "n-a"])
    assert list(got.ids) == ["n-c", "n-a"] and got.to_dict(1) == new.to_dict(0)
    assert sc.delete(["n-a", "n-b", "n-c", "n-d", "nope"]) == 4
    assert sc.count() == len(docs)
    a, b = one.search(qs[:20], 10), sc.search(qs[:20], 10)
    assert np.array_equal(a.ids, b.ids)


class _Down:
    """A shard client whose process is gone."""

    def submit(self, method, *args, **kw):
        return None

    def collect(self, pending, timeout):
        raise ShardDown

    def close(self):
        pass


@needs_scifact
def test_a_down_shard_is_never_a_silent_short_list(built):
    docs, qs, sc, one = built
    live = sc.clients
    sc.clients = [live[0], _Down(), live[2]]
    try:
        with pytest.raises(ShardUnavailableError, match=r"\[1\].*partial=True") as e:
            sc.search(qs[:3], 10, deadline=0.2)
        assert e.value.shards == [1]
        r = sc.search(qs[:3], 10, partial=True)
        assert r.partial and r.missing_shards == (1,) and sc.last_stats["missing_shards"] == [1]
        assert not any(shard_of(x, 3) == 1 for x in r.doc_ids()[0])
        with pytest.raises(ConfigError, match="deadline"):
            sc.search(qs[:3], 10, deadline=-1)
    finally:
        sc.clients = live


@needs_scifact
def test_filters_and_params_pass_through(tmp_path):
    docs, qs = scifact(50)
    docs = docs[:600]
    schema = {"year": "integer"}
    md = [{"year": 2000 + i % 10} for i in range(len(docs))]
    build_cluster(tmp_path / "cl", docs, 3, schema=schema, metadata=md, use_ray=False)
    one = Collection.create(tmp_path / "one", dim=DIM, schema=schema)
    one.upsert(docs, metadata=md)
    flt = {"must": [{"key": "year", "range": {"gte": 2007}}]}
    with ShardedCollection.open_local(tmp_path / "cl") as sc:
        a, b = one.search(qs, 10, filter=flt), sc.search(qs, 10, filter=flt)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
        with pytest.raises(ConfigError):
            sc.search(qs, 10, filter={"must": [{"key": "nope", "match": {"value": 1}}]})
        with pytest.raises(ConfigError, match="heap_factor"):
            sc.search(qs, 10, heap_factor=7.0)


@needs_scifact
def test_approximate_recall_within_001_of_one_collection(tmp_path):
    """Seismic segments (exact_threshold 300): recall@10 against the exact top-10, sharded vs one collection
    (the first 2,000 scifact documents; benchmarks/cluster measures the whole set)."""
    docs, qs = scifact(300)
    docs = docs[:2000]
    cfg = CollectionConfig(exact_threshold=300, seismic=SeismicConfig(n_postings=1000, centroid_fraction=0.1))
    build_cluster(tmp_path / "cl", docs, 3, config=cfg, use_ray=False)
    one = Collection.create(tmp_path / "one", dim=DIM, config=cfg)
    one.upsert(docs)
    one.optimize()
    truth = Collection.create(tmp_path / "exact", dim=DIM)
    truth.upsert(docs)
    t = as_rows(truth.search(qs, 10), docs)
    with ShardedCollection.open_local(tmp_path / "cl") as sc:
        assert all(s["kind"] == "seismic" for s in sc.info()["segments"])
        r_one = recall_at_k(t, as_rows(one.search(qs, 10, query_cut=5, heap_factor=0.8), docs), 10)
        r_sh = recall_at_k(t, as_rows(sc.search(qs, 10, query_cut=5, heap_factor=0.8), docs), 10)
    assert abs(r_sh - r_one) <= 0.01 or r_sh >= r_one, (r_sh, r_one)


@needs_scifact
def test_rest_marks_partial_and_answers_503_while_a_shard_is_down(built):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from aftershock.cluster.ingress import create_cluster_app

    docs, qs, sc, one = built
    client = TestClient(create_cluster_app(sc, name="sci"))
    q = qs.row(0)
    body = {"query": {"indices": q[0].tolist(), "values": q[1].tolist()}, "k": 5, "deadline": 0.2}
    live = sc.clients
    sc.clients = [live[0], _Down(), live[2]]
    try:
        r = client.post("/search", json=body)
        assert r.status_code == 503 and r.json()["error"]["shards"] == [1] and r.headers["Retry-After"] == "1"
        r = client.post("/search", json={**body, "partial": True}).json()
        assert r["partial"] is True and r["missing_shards"] == [1] and len(r["hits"]) == 5
        assert client.get("/health").status_code == 503
        assert client.post("/search", json={**body, "partial": "yes"}).status_code == 422
        metrics = client.get("/metrics").text
        assert 'outcome="partial"' in metrics and 'outcome="unavailable"' in metrics
    finally:
        sc.clients = live
    r = client.post("/search", json=body).json()
    assert r["partial"] is False and [h["id"] for h in r["hits"]] == [x for x in one.search(qs[:1], 5).ids[0]]
