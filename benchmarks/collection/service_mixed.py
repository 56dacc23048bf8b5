"""Mixed read/write load on ``aftershock serve --collection``: 64 concurrent clients, 90 % searches (half of
them with a filter) and 10 % upserts, for 60 s, on real vectors; then every acknowledged upsert is checked.

    PYTHONPATH=$PWD python benchmarks/collection/service_mixed.py                 # scifact, 64 clients, 60 s
    PYTHONPATH=$PWD python benchmarks/collection/service_mixed.py --duration 10  # a short run

Setup: a collection of the scifact SPLADE-tiny document vectors (5,183 docs, metadata ``src`` / ``year``)
with ``--durability`` (default fsync: an upsert is answered after its log record is fsynced), a Seismic
segment (``--exact-threshold``) and a small ``--buffer-docs`` so the run flushes new segments while it
serves. The server is the real ``python -m aftershock serve --collection DIR --model none`` on 127.0.0.1;
the load comes from a separate process (httpx async, keep-alive connections). Each upsert writes 1-5 new
points with fresh ids (vectors of random scifact documents, random payloads).

After the load: every acknowledged id is fetched (``GET /documents/{id}``: present, with the vector sent) and
found by a search with its own vector and a ``has_id`` filter; then the server is stopped (SIGINT), the
collection reopened from disk (log replayed) and every acknowledged id looked up again. Prints one JSON
object: QPS, p50/p99 per operation, errors (non-2xx or transport), 5xx, and the checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO.parent / "shared" / "vectors" / "splade-tiny"
SOURCES = ("gcide", "wordnet", "kjv")


def _vec(batch, i: int) -> dict:
    idx, val = batch.row(i)
    return {"indices": idx.tolist(), "values": [float(v) for v in val]}


async def _drive(url: str, docs, queries, clients: int, duration: float, write_frac: float, seed: int) -> tuple[dict, dict]:
    import httpx

    lat = {"search": [], "upsert": []}
    errors: list[str] = []
    status_5xx = 0
    acked: dict[str, dict] = {}
    stop = time.perf_counter() + duration
    # pooled connections are dropped after 2 s idle, before the server's 5 s keep-alive timeout closes them:
    # otherwise a request sent as the server closes its connection fails (a client race, not a server error)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0) as client:
        async def worker(w: int):
            nonlocal status_5xx
            rng = random.Random(seed * 1000 + w)
            n = 0
            while time.perf_counter() < stop:
                if rng.random() < write_frac:
                    op, pts = "upsert", []
                    for _ in range(rng.randint(1, 5)):
                        pts.append({"id": f"u{w}-{n}", "vector": _vec(docs, rng.randrange(len(docs))),
                                    "payload": {"src": rng.choice(SOURCES), "year": rng.randint(1500, 2024)}})
                        n += 1
                    req = client.put("/collections/default/points", json={"points": pts})
                else:
                    op = "search"
                    body = {"query": _vec(queries, rng.randrange(len(queries))), "k": 10}
                    if rng.random() < 0.5:
                        body["filter"] = {"must": [{"key": "year", "range": {"gte": rng.randint(1500, 2000)}}],
                                          "should": [{"key": "src", "match": {"any": list(rng.sample(SOURCES, 2))}}]}
                    req = client.post("/search", json=body)
                t0 = time.perf_counter()
                try:
                    r = await req
                    if r.status_code == 200:
                        lat[op].append(time.perf_counter() - t0)
                        if op == "upsert":
                            acked.update({p["id"]: p["vector"] for p in pts})
                    else:
                        status_5xx += r.status_code >= 500
                        errors.append(f"{op} HTTP {r.status_code}: {r.text[:200]}")
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(f"{op} {type(e).__name__}: {e}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    out = {"clients": clients, "wall_s": round(wall, 1), "errors": len(errors), "status_5xx": status_5xx,
           "error_samples": errors[:5], "requests": sum(len(v) for v in lat.values()) + len(errors)}
    out["qps"] = round(out["requests"] / wall, 1)
    for op, v in lat.items():
        a = np.array(v) * 1e3 if v else np.zeros(1)
        out[op] = {"ok": len(v), "qps": round(len(v) / wall, 1), "p50_ms": round(float(np.percentile(a, 50)), 1),
                   "p99_ms": round(float(np.percentile(a, 99)), 1)}
    out["acked_points"] = len(acked)
    return out, acked


async def _check_live(url: str, acked: dict) -> dict:
    """Every acknowledged id: stored with the vector sent, and found by a search with its own vector."""
    import httpx

    bad_doc, not_found, transport = [], [], []
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:
        async def call(method, path, **kw):
            for attempt in range(3):  # a keep-alive connection the server just closed: retry, and count it
                try:
                    return await client.request(method, path, **kw)
                except httpx.TransportError as e:
                    transport.append(f"{type(e).__name__}: {e}")
                    await asyncio.sleep(0.5)
            return await client.request(method, path, **kw)

        async def one(doc_id, vec):
            async with sem:
                r = await call("GET", f"/documents/{doc_id}")
                if r.status_code != 200 or r.json()["vector"]["indices"] != vec["indices"] or not np.allclose(
                        r.json()["vector"]["values"], vec["values"], rtol=1e-3):
                    bad_doc.append(doc_id)
                r = await call("POST", "/search", json={"query": vec, "k": 1,
                                                         "filter": {"must": [{"has_id": [doc_id]}]}})
                if r.status_code != 200 or [h["id"] for h in r.json()["hits"]] != [doc_id]:
                    not_found.append(doc_id)

        await asyncio.gather(*(one(d, v) for d, v in acked.items()))
    return {"checked": len(acked), "missing_or_wrong_vector": len(bad_doc), "not_searchable": len(not_found),
            "samples": (bad_doc + not_found)[:5], "transport_retries": len(transport),
            "transport_samples": transport[:3]}


def client_main(argv) -> int:
    from aftershock.index import read_npz

    p = argparse.ArgumentParser()
    for name in ("--url", "--docs", "--queries", "--acked"):
        p.add_argument(name, required=True)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--write-frac", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    docs, queries = read_npz(a.docs), read_npz(a.queries)
    out, acked = asyncio.run(_drive(a.url, docs, queries, a.clients, a.duration, a.write_frac, a.seed))
    print(json.dumps(out), file=sys.stderr, flush=True)
    Path(a.acked).write_text(json.dumps(sorted(acked)), encoding="utf-8")
    out["live_check"] = asyncio.run(_check_live(a.url, acked))
    print(json.dumps(out))
    return 0


def main(argv=None) -> int:
    from aftershock import Collection, CollectionConfig
    from aftershock.index import read_ids, read_npz

    sys.path.insert(0, str(REPO / "benchmarks"))
    from service_load import _free_port, _wait_ready  # the service load test's port and readiness helpers

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--write-frac", type=float, default=0.1)
    ap.add_argument("--durability", default="fsync")
    ap.add_argument("--buffer-docs", type=int, default=500)
    ap.add_argument("--exact-threshold", type=int, default=2000)
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--server-log", help="keep the server's log here (default: dropped with the temp dir)")
    args = ap.parse_args(argv)
    docs_npz, q_npz = VECTORS / f"{args.dataset}.docs.npz", VECTORS / f"{args.dataset}.queries.npz"
    docs = read_npz(docs_npz, ids=read_ids(VECTORS / f"{args.dataset}.docs.ids.txt"))
    rng = np.random.default_rng(0)
    md = [{"src": SOURCES[int(i)], "year": int(y)} for i, y in zip(rng.integers(0, 3, len(docs)),
                                                                 rng.integers(1500, 2025, len(docs)))]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "coll"
        cfg = CollectionConfig(durability=args.durability, buffer_docs=args.buffer_docs,
                               exact_threshold=args.exact_threshold)
        c = Collection.create(path, dim=docs.dim, config=cfg, schema={"src": "keyword", "year": "integer"})
        c.upsert(docs, metadata=md)
        c.flush()
        segments = [s["kind"] for s in c.info()["segments"]]
        n0 = c.count()
        c.close()
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "aftershock", "serve", "--collection", str(path),
                                   "--model", "none", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(args.server_log or Path(tmp) / "server.log", "w"))
        try:
            _wait_ready(url, server, workers=1)
            load = subprocess.run([sys.executable, str(Path(__file__).resolve()), "client", "--url", url,
                                   "--docs", str(docs_npz), "--queries", str(q_npz), "--acked",
                                   str(Path(tmp) / "acked.json"), "--clients", str(args.clients), "--duration",
                                   str(args.duration), "--write-frac", str(args.write_frac)],
                                  env=env, capture_output=True, text=True, timeout=args.duration * 10 + 600)
            if load.returncode != 0:
                raise RuntimeError(f"load client failed: {load.stderr[-3000:]}")
            out = json.loads(load.stdout.strip().splitlines()[-1])
        finally:
            server.send_signal(signal.SIGINT)  # graceful: the collection is closed (log synced)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        acked = json.loads((Path(tmp) / "acked.json").read_text())
        c = Collection.open(path, read_only=True)
        found, _ = c.get(acked)
        info = c.info()
        out["after_restart"] = {"acked": len(acked), "present": len(found), "count": c.count(),
                                "expected_count": n0 + len(acked), "segments": len(info["segments"]),
                                "buffer_docs": info["buffer_docs"]}
        out.update({"dataset": args.dataset, "docs": n0, "initial_segments": segments,
                    "durability": args.durability, "buffer_docs": args.buffer_docs,
                    "duration_s": args.duration, "write_frac": args.write_frac,
                    "server_exit": server.returncode})
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    ok = (out["errors"] == 0 and out["live_check"]["missing_or_wrong_vector"] == 0
          and out["live_check"]["not_searchable"] == 0 and out["after_restart"]["present"] == len(acked))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        raise SystemExit(client_main(sys.argv[2:]))
    raise SystemExit(main())
