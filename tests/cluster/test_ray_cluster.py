"""Shards as Ray actors on a local Ray (``ray.init(num_cpus=2)``, one module-scoped cluster): a 3-shard build of
scifact as Ray tasks equals one collection, writes are routed, a killed shard actor comes back with every
acknowledged write, a shard that stays down is reported (partial or an error), and the REST routes answer."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from aftershock.cluster import ShardUnavailableError, shard_of  # noqa: E402
from aftershock.cluster.build import build_cluster  # noqa: E402
from aftershock.cluster.ray_shards import RayShard, ShardActor, init_ray, open_ray, stop_shards  # noqa: E402
from aftershock.collection import Collection  # noqa: E402

from cluster_data import DIM, needs_scifact, scifact  # noqa: E402

pytestmark = needs_scifact


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-cluster")
    docs, qs = scifact(100)
    started = not ray.is_initialized()
    init_ray(num_cpus=2)
    report = build_cluster(root / "cl", docs, 3)  # one Ray task per shard
    one = Collection.create(root / "one", dim=DIM)
    one.upsert(docs)
    one.optimize()
    sc = open_ray(root / "cl", replicas=1, threads=1, deadline=60)
    sc.search(qs[:2], 10)  # every actor loads its kernels
    yield {"docs": docs, "qs": qs, "sc": sc, "one": one, "report": report, "root": root}
    stop_shards(root / "cl")
    one.close()
    if started:
        ray.shutdown()


def test_build_tasks_and_search_equal_one_collection(cluster):
    docs, qs, sc, one = cluster["docs"], cluster["qs"], cluster["sc"], cluster["one"]
    assert sorted(r["docs"] for r in cluster["report"]) == sorted(np.bincount(
        [shard_of(i, 3) for i in docs.ids], minlength=3).tolist())
    assert sc.count() == len(docs)
    a, b = one.search(qs, 10), sc.search(qs, 10)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores) and not b.partial


def test_writes_are_routed_to_their_shard(cluster):
    docs, sc = cluster["docs"], cluster["sc"]
    ids = [f"ray-new-{i}" for i in range(6)]
    sc.upsert(docs[10:16], ids=ids)
    for i in ids:
        held = [i in ray.get(c.handles[0].call.remote("get", [i]))[0].ids for c in sc.clients]
        assert held == [s == shard_of(i, 3) for s in range(3)]
    assert list(sc.get(ids[::-1])[0].ids) == ids[::-1]
    assert sc.delete(ids[:3]) == 3
    assert list(sc.get(ids)[0].ids) == ids[3:]
    sc.delete(ids)


def test_killed_shard_actor_restarts_with_its_data(cluster):
    docs, sc = cluster["docs"], cluster["sc"]
    doc = docs[20:21]
    sc.upsert(doc, ids=["survivor"])  # acknowledged: in the shard's log
    s = shard_of("survivor", 3)
    actor = sc.clients[s].handles[0]
    pid = ray.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    r = sc.search(doc, 3, deadline=60)  # waits for the restart, never a short list
    assert not r.partial and "survivor" in r.ids[0]
    assert ray.get(actor.pid.remote()) != pid
    got = sc.get(["survivor"])[0]
    assert list(got.ids) == ["survivor"] and got.to_dict(0) == doc.to_dict(0)
    sc.delete(["survivor"])


def test_a_shard_that_stays_down_is_marked(cluster):
    qs, sc = cluster["qs"], cluster["sc"]
    dead = ray.remote(ShardActor).options(num_cpus=0).remote(str(cluster["root"] / "one"), True)
    ray.get(dead.pid.remote())
    ray.kill(dead, no_restart=True)
    live = sc.clients
    sc.clients = [live[0], RayShard([dead]), live[2]]
    try:
        t0 = time.monotonic()
        with pytest.raises(ShardUnavailableError) as e:
            sc.search(qs[:2], 10, deadline=1.0)
        assert e.value.shards == [1] and time.monotonic() - t0 < 30
        r = sc.search(qs[:2], 10, partial=True)
        assert r.partial and r.missing_shards == (1,)
        assert all(shard_of(x, 3) != 1 for x in r.doc_ids()[0])
    finally:
        sc.clients = live


def test_rest_routes_over_the_ray_cluster(cluster):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from aftershock.cluster.ingress import create_cluster_app

    docs, qs, sc, one = cluster["docs"], cluster["qs"], cluster["sc"], cluster["one"]
    client = TestClient(create_cluster_app(sc, name="sci"))
    q = qs.row(0)
    body = {"query": {"indices": q[0].tolist(), "values": q[1].tolist()}, "limit": 5}
    r = client.post("/collections/sci/points/query", json=body).json()
    want = one.search(qs[:1], 5)
    assert [h["id"] for h in r["result"]["points"]] == [x for x in want.ids[0] if x is not None]
    assert r["result"]["partial"] is False
    d = docs.row(3)
    assert client.put("/collections/sci/points", json={"points": [{"id": "rest-1", "vector": {
        "indices": d[0].tolist(), "values": d[1].tolist()}}]}).status_code == 200
    batch = client.post("/search/batch", json={"queries": [{"indices": d[0].tolist(), "values": d[1].tolist()}],
                                               "k": 3}).json()
    top = batch["results"][0]["hits"]
    assert {h["id"] for h in top[:2]} == {"rest-1", str(docs.ids[3])} and top[0]["score"] == top[1]["score"]
    assert client.post("/collections/sci/points/delete", json={"points": ["rest-1"]}).json()["result"]["deleted"] == 1
    assert client.get("/health").json()["status"] == "ok"
    assert "aftershock_cluster_searches_total" in client.get("/metrics").text
    assert client.get("/collections/sci").json()["result"]["points_count"] == len(docs)


def test_cli_build_shards_on_ray(cluster, tmp_path, capsys):
    from aftershock.cli import main
    from aftershock.cluster import ShardedCollection, read_manifest

    from cluster_data import VECTORS

    out = tmp_path / "cli-cl"
    assert main(["build", "--input", str(VECTORS / "scifact.docs.npz"), "--ids", str(VECTORS / "scifact.docs.ids.txt"),
                 "--dim", str(DIM), "--output", str(out), "--shards", "2", "--exact"]) == 0
    assert "built cluster: 5183 docs in 2 shards" in capsys.readouterr().out
    assert read_manifest(out)["shards"] == 2
    with ShardedCollection.open_local(out) as sc:
        a, b = cluster["one"].search(cluster["qs"][:20], 10), sc.search(cluster["qs"][:20], 10)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)
    assert main(["serve", "--cluster", str(out), "--index", "x"]) == 2  # one source only
    assert main(["serve", "--port", "1"]) == 2  # a source is required


def test_ray_serve_ingress(cluster, tmp_path):
    pytest.importorskip("ray.serve")
    import json
    import urllib.request

    from aftershock.cluster.serve import deploy, undeploy

    docs = cluster["docs"]
    build_cluster(tmp_path / "served", docs[:300], 2)
    url = deploy(tmp_path / "served", port=18123, model="none", name="sci")
    try:
        q = docs.row(0)
        body = json.dumps({"query": {"indices": q[0].tolist(), "values": q[1].tolist()}, "limit": 3}).encode()
        req = urllib.request.Request(url + "/collections/sci/points/query", data=body,
                                     headers={"Content-Type": "application/json"})
        got = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert got["result"]["points"][0]["id"] == str(docs.ids[0]) and got["result"]["partial"] is False
        assert json.loads(urllib.request.urlopen(url + "/health", timeout=60).read())["status"] == "ok"
    finally:
        undeploy(tmp_path / "served")


def test_text_build_encodes_with_ray_data(cluster, tmp_path):
    """Text input: Ray Data map_batches over an encoder actor pool (the shipped tokenizer's binary encoder:
    no model weights), then routed and built like vectors; the vectors equal encoding in this process."""
    import json

    from aftershock.cluster.build import encode_ray
    from aftershock.lsr import load_encoder
    from aftershock.lsr.load import default_model_dir

    corpus = tmp_path / "corpus.jsonl"
    texts = [f"supersonic wing flow number {i}" if i % 2 else f"boundary layer heat transfer {i}" for i in range(40)]
    corpus.write_text("".join(json.dumps({"_id": f"t{i}", "title": "", "text": t}) + "\n"
                              for i, t in enumerate(texts)))
    model = f"binary:{default_model_dir()}"
    got = encode_ray(corpus, model, actors=1, rows_per_call=16)
    want = load_encoder(model).encode_documents(texts, ids=[f"t{i}" for i in range(40)])
    order = {str(i): j for j, i in enumerate(got.ids)}
    assert sorted(order) == sorted(str(i) for i in want.ids)
    for j, i in enumerate(want.ids):
        assert got.to_dict(order[str(i)]) == want.to_dict(j)


def test_replicas_read_their_writes_and_cover_a_dead_writer(cluster, tmp_path):
    docs = cluster["docs"]
    build_cluster(tmp_path / "rep", docs[:300], 2)
    sc = open_ray(tmp_path / "rep", replicas=2, threads=1, deadline=60)
    try:
        new = docs[400:401]
        sc.upsert(new, ids=["fresh"])
        for _ in range(4):  # round-robin: the writer and the follower both answer with the new document
            assert "fresh" in sc.search(new, 3).ids[0]
        s = shard_of("fresh", 2)
        writer = sc.clients[s].handles[0]
        os.kill(ray.get(writer.pid.remote()), signal.SIGKILL)
        for _ in range(4):  # the follower answers while the writer restarts
            r = sc.search(new, 3, partial=True)
            assert not r.partial and "fresh" in r.ids[0]
    finally:
        stop_shards(tmp_path / "rep", replicas=2)
