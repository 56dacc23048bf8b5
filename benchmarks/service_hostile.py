"""Head-of-line blocking under hostile batch requests (issue 13): does a plain ``POST /search`` stay fast
while 3 clients keep sending the largest batch (256 queries, k=1000, return_documents)?

Builds a Seismic index of real SPLADE vectors (SciFact), starts the real server (``python -m aftershock
serve``) on 127.0.0.1 and, per mode, measures plain ``/search`` (k=10, one SciFact query vector per request,
sequential, keep-alive) and ``/health`` latency for ``--duration`` seconds unloaded, then again while
``--hostile`` separate client processes each loop the hostile batch (streaming the answer and discarding
it). Modes:

- ``default``: the server's default limits. The hostile batch breaks ``max_hits`` / ``max_response_bytes``
  and is refused (422) before any search;
- ``raised``: ``--max-hits 256000 --max-response-bytes 8e9 --request-timeout 600``, so every hostile batch
  is searched and its multi-GB answer built and sent.

Prints one table row per mode: hostile status / seconds / MB per request, /search p50 and p99 unloaded and
loaded, the p99 ratio (target <= 3), /health p99 loaded, the server's peak RSS and the load average.

    PYTHONPATH=$PWD python benchmarks/service_hostile.py \\
        --docs /work/shared/vectors/splade-tiny/scifact.docs.npz \\
        --queries /work/shared/vectors/splade-tiny/scifact.queries.npz \\
        --documents /work/shared/data/scifact/corpus.jsonl.gz --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 30522
MODES = {"default": [],
         "raised": ["--max-hits", "256000", "--max-response-bytes", "8000000000", "--request-timeout", "600"]}


def hostile_main(argv) -> int:
    """Child process: loop the hostile batch until ``stop`` exists; print JSON stats."""
    import httpx

    url, body_file, stop, nice = argv
    os.nice(int(nice))  # the hostile clients stand for remote machines: on a small box, keep their CPU aside
    body = Path(body_file).read_bytes()
    out = {"n": 0, "status": {}, "seconds": [], "bytes": []}
    with httpx.Client(base_url=url, timeout=900) as c:
        while not os.path.exists(stop):
            t0 = time.perf_counter()
            n = 0
            with c.stream("POST", "/search/batch", content=body, headers={"content-type": "application/json"}) as r:
                for chunk in r.iter_raw(1 << 20):
                    n += len(chunk)
            out["n"] += 1
            out["status"][str(r.status_code)] = out["status"].get(str(r.status_code), 0) + 1
            out["seconds"].append(time.perf_counter() - t0)
            out["bytes"].append(n)
            if r.status_code != 200:
                time.sleep(0.01)  # a refusal is cheap: do not turn the test into a request flood
    print(json.dumps(out))
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _measure(url: str, bodies: list[bytes], duration: float) -> dict:
    """Alternate plain /search and /health for ``duration`` seconds: latencies in ms and non-200 counts."""
    import httpx

    lat_s, lat_h, bad = [], [], 0
    stop = time.perf_counter() + duration
    i = 0
    with httpx.Client(base_url=url, timeout=120) as c:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = c.post("/search", content=bodies[i % len(bodies)], headers={"content-type": "application/json"})
            lat_s.append((time.perf_counter() - t0) * 1e3)
            bad += r.status_code != 200
            t0 = time.perf_counter()
            r = c.get("/health")
            lat_h.append((time.perf_counter() - t0) * 1e3)
            bad += r.status_code != 200
            i += 1
    s, h = np.asarray(lat_s), np.asarray(lat_h)
    return {"n": len(s), "p50": float(np.percentile(s, 50)), "p99": float(np.percentile(s, 99)),
            "max": float(s.max()), "health_p99": float(np.percentile(h, 99)), "health_max": float(h.max()),
            "non_200": bad}


def _serve(index_dir: Path, documents, extra: list[str]):
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "aftershock", "serve", "--index", str(index_dir), "--port", str(port),
           "--model", "none", *(["--documents", str(documents)] if documents else []), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server not ready after 300 s")


def run_mode(mode: str, index_dir: Path, a, bodies: list[bytes], hostile_file: Path, work: Path) -> dict:
    proc, url = _serve(index_dir, a.documents, MODES[mode] + a.serve_args.split())
    try:
        _measure(url, bodies, 2.0)  # warm the connection and the caches
        load0 = os.getloadavg()[0]
        unloaded = _measure(url, bodies, a.duration)
        stop = work / f"stop-{mode}"
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        kids = [subprocess.Popen([sys.executable, __file__, "hostile", url, str(hostile_file), str(stop),
                                  str(a.client_nice)], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(a.hostile)]
        time.sleep(1.0)  # the hostile requests are in flight
        loaded = _measure(url, bodies, a.duration)
        load1 = os.getloadavg()[0]
        stop.touch()
        stats = [json.loads(k.communicate(timeout=900)[0].strip().splitlines()[-1]) for k in kids]
        rss = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    status: dict = {}
    for st in stats:
        for code, n in st["status"].items():
            status[code] = status.get(code, 0) + n
    secs = [x for st in stats for x in st["seconds"]]
    mbs = [x / 1e6 for st in stats for x in st["bytes"]]
    return {"mode": mode, "hostile_requests": sum(st["n"] for st in stats), "hostile_status": status,
            "hostile_s": float(np.median(secs)) if secs else float("nan"),
            "hostile_mb": float(np.median(mbs)) if mbs else float("nan"), "unloaded": unloaded, "loaded": loaded,
            "ratio_p99": loaded["p99"] / unloaded["p99"], "server_peak_rss_mb": rss,
            "loadavg_before_after": [load0, load1], "client_nice": a.client_nice}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "hostile":
        return hostile_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", required=True, help="document vectors (.npz; ids in the .ids.txt beside it)")
    p.add_argument("--queries", required=True, help="query vectors (.npz)")
    p.add_argument("--documents", help="corpus.jsonl[.gz] for return_documents texts (optional)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per phase (default 20)")
    p.add_argument("--hostile", type=int, default=3, help="hostile client processes (default 3)")
    p.add_argument("--modes", default="default,raised", help="comma list of: default, raised")
    p.add_argument("--client-nice", type=int, default=0,
                   help="nice value of the hostile client processes (default 0; 19 keeps their own CPU use out of "
                        "the measurement on a machine with few cores, as if they ran elsewhere)")
    p.add_argument("--serve-args", default="", help="more `aftershock serve` flags, e.g. '--batch-nice 0'")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)

    from aftershock.index import Vocabulary, read_vectors
    from aftershock.seismic import SeismicIndex

    with resources.as_file(resources.files("aftershock").joinpath("data", "cranfield", "vocab.json")) as v:
        vocab = Vocabulary.from_file(v)  # bert-base-uncased: SPLADE-tiny's vocabulary
    docs = read_vectors(a.docs, ids=str(a.docs).replace(".npz", ".ids.txt"), dim=DIM, vocab=vocab,
                        what="documents")
    queries = read_vectors(a.queries, dim=DIM, what="queries")
    rows = [queries.row(i) for i in range(len(queries)) if queries.row(i)[0].shape[0]]
    vec = [{"indices": i.tolist(), "values": v.tolist()} for i, v in rows]
    bodies = [json.dumps({"query": q, "k": 10}).encode() for q in vec]
    hostile = {"queries": [vec[i % len(vec)] for i in range(256)], "k": 1000, "return_documents": True}
    results = []
    with tempfile.TemporaryDirectory(prefix="aftershock-hostile-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        SeismicIndex.build(docs).save(work / "index")
        print(f"index: {len(docs)} SciFact documents, built in {time.perf_counter() - t0:.1f} s; hostile body "
              f"{len(json.dumps(hostile))} bytes; {os.cpu_count()} CPUs", flush=True)
        (work / "hostile.json").write_text(json.dumps(hostile))
        for mode in a.modes.split(","):
            r = run_mode(mode, work / "index", a, bodies, work / "hostile.json", work)
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| mode | hostile answers | hostile s / MB per request | /search p50 / p99 unloaded (ms) | "
          "/search p50 / p99 loaded (ms) | p99 ratio | /health p99 / max loaded (ms) | server peak RSS (MB) | "
          "load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        u, ld = r["unloaded"], r["loaded"]
        codes = ", ".join(f"{k}: {v}" for k, v in r["hostile_status"].items())
        print(f"| {r['mode']} | {r['hostile_requests']} ({codes}) | {r['hostile_s']:.2f} / {r['hostile_mb']:.1f} | {u['p50']:.2f} / {u['p99']:.2f} | "
              f"{ld['p50']:.2f} / {ld['p99']:.2f} | {r['ratio_p99']:.2f} | {ld['health_p99']:.2f} / "
              f"{ld['health_max']:.1f} | {r['server_peak_rss_mb']:.0f} | "
              f"{r['loadavg_before_after'][0]:.1f} -> {r['loadavg_before_after'][1]:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
