"""Load test of the REST service against in-process search on the same queries.

Builds (or reuses) an index of real SPLADE vectors, measures in-process single-query search QPS
(one thread, one query per call: the "single-worker" baseline), then starts the real server
(``python -m aftershock serve``) on 127.0.0.1 and drives ``POST /search`` from a separate process
(httpx async, N concurrent clients, keep-alive connections) for a bounded time per level.
Prints QPS, p50/p99 latency and errors per level beside the in-process QPS, and the ratio,
for each number of uvicorn worker processes asked for (``--workers 1,2``).

    PYTHONPATH=$PWD python benchmarks/service_load.py \\
        --docs /work/shared/vectors/splade-tiny/scifact.docs.npz \\
        --queries /work/shared/vectors/splade-tiny/scifact.queries.npz --duration 10

The load generator shares the machine with the server (and, here, with other users): its CPU use
is part of what is measured; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- load generator
def _payloads(queries_npz: str, dim: int, k: int, n: int) -> list[bytes]:
    from aftershock.index import read_vectors

    q = read_vectors(queries_npz, dim=dim, what="queries")
    out = []
    for i in range(min(n, len(q))):
        idx, val = q.row(i)
        if idx.shape[0]:
            out.append(json.dumps({"query": {"indices": idx.tolist(), "values": val.tolist()}, "k": k}).encode())
    return out


async def _drive(url: str, payloads: list[bytes], clients: int, duration: float) -> dict:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + duration
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        async def worker(w: int):
            i = w
            while time.perf_counter() < stop:
                body = payloads[i % len(payloads)]
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await client.post("/search", content=body, headers=headers)
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    else:
                        lat.append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(e).__name__}: {e}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1e3 if lat else np.zeros(1)
    return {"clients": clients, "ok": len(lat), "errors": len(errors), "error_samples": errors[:3],
            "qps": len(lat) / wall, "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "wall_s": wall}


def client_main(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--dim", type=int, default=30522)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--n-queries", type=int, default=1000)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    a = p.parse_args(argv)
    payloads = _payloads(a.queries, a.dim, a.k, a.n_queries)
    try:  # the client's own CPU cost is part of the measurement: keep it low
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print(json.dumps(run(_drive(a.url, payloads, a.clients, a.duration))))
    return 0


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/search", nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(url: str, bodies: Path, clients: int, duration: float, workdir: Path) -> dict:
    """wrk (C, one thread) as the load generator: far less client CPU than Python on a small machine."""
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % bodies)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
                          "-s", str(script), url], capture_output=True, text=True, timeout=duration * 4 + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    w = json.loads(line[4:])
    errors = w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"]
    ok = w["requests"] - w["status"]
    return {"clients": clients, "ok": ok, "errors": errors, "error_samples": [] if not errors else [w],
            "qps": ok / (w["duration_us"] / 1e6), "p50_ms": w["p50_us"] / 1e3, "p99_ms": w["p99_us"] / 1e3,
            "wall_s": w["duration_us"] / 1e6}


def run_httpx(url: str, qfile: Path, a, clients: int, env) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "client", "--url", url, "--queries",
                          str(qfile), "--dim", str(a.dim), "--k", str(a.k), "--n-queries", str(a.n_queries),
                          "--clients", str(clients), "--duration", str(a.duration)],
                         env=env, capture_output=True, text=True, timeout=a.duration * 4 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- orchestration
def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc, workers: int, timeout: float = 300.0) -> None:
    """Until /health/ready answers 200 (twice in a row per worker: each worker warms up on its own)."""
    import httpx

    deadline = time.time() + timeout
    streak = 0
    while time.time() < deadline and streak < 2 * workers:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            with httpx.Client(timeout=2) as c:  # a new connection each time, so another worker may answer
                streak = streak + 1 if c.get(f"{url}/health/ready").status_code == 200 else 0
        except httpx.HTTPError:
            streak = 0
        time.sleep(0.3)
    if streak < 2 * workers:
        raise RuntimeError(f"server at {url} not ready after {timeout} s")
    time.sleep(1.0 if workers > 1 else 0)


def _in_process(index, queries, k: int, duration: float) -> dict:
    """Single worker: one query per call, one thread, cycling over the queries for ``duration`` seconds."""
    from aftershock.seismic import SearchParams

    params = SearchParams(threads=1)
    search = (lambda b: index.search(b, k, threads=1)) if index.kind == "exact" else \
        (lambda b: index.search(b, k, params))
    singles = [queries[i:i + 1] for i in range(len(queries))]
    search(singles[0])
    lat = []
    stop = time.perf_counter() + duration
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() < stop:
        t = time.perf_counter()
        search(singles[i % len(singles)])
        lat.append(time.perf_counter() - t)
        i += 1
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1e3
    return {"qps": len(lat) / wall, "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "n": len(lat)}


def _load(a):
    from aftershock.index import read_vectors

    ids = a.doc_ids or str(a.docs).replace(".npz", ".ids.txt")
    docs = read_vectors(a.docs, ids=ids if Path(ids).exists() else None, dim=a.dim, what="documents")
    queries = read_vectors(a.queries, dim=a.dim, what="queries")
    queries = queries[np.flatnonzero(queries.nnz_per_row() > 0)[: a.n_queries]]
    return docs, queries


def _index(a, docs, workdir: Path) -> Path:
    from aftershock.seismic import ExactIndex, SeismicConfig, SeismicIndex

    if a.index:
        return Path(a.index)
    out = workdir / "index"
    if a.exact:
        ExactIndex.build(docs).save(out)
    else:
        SeismicIndex.build(docs, SeismicConfig(n_postings=a.n_postings, summary_energy=a.summary_energy)).save(out)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "client":
        return client_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", default="/work/shared/vectors/splade-tiny/scifact.docs.npz")
    p.add_argument("--doc-ids", help="default: <docs>.ids.txt beside the .npz")
    p.add_argument("--queries", default="/work/shared/vectors/splade-tiny/scifact.queries.npz")
    p.add_argument("--dim", type=int, default=30522)
    p.add_argument("--index", help="serve this index directory instead of building one")
    p.add_argument("--exact", action="store_true", help="build an exact index instead of Seismic")
    p.add_argument("--n-postings", type=int, default=1000)
    p.add_argument("--summary-energy", type=float, default=0.4)
    p.add_argument("--n-queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    p.add_argument("--workers", default="1,2", help="uvicorn worker processes to run, e.g. 1,2")
    p.add_argument("--driver", default="auto", help="load generator(s): wrk, httpx, wrk,httpx or auto (wrk when "
                                                   "installed, else httpx)")
    p.add_argument("--json", help="write all numbers here")
    a = p.parse_args(argv)
    levels = [int(c) for c in a.clients.split(",")]
    worker_levels = [int(w) for w in a.workers.split(",")]
    drivers = (["wrk" if shutil.which("wrk") else "httpx"] if a.driver == "auto" else a.driver.split(","))
    load0 = os.getloadavg()
    t_start = time.time()

    from aftershock.seismic import load_index

    docs, queries = _load(a)
    with tempfile.TemporaryDirectory(prefix="svc-load-") as tmp:
        index_dir = _index(a, docs, Path(tmp))
        index = load_index(index_dir, mmap=True)
        inproc = _in_process(index, queries, a.k, a.duration)
        qfile = Path(tmp) / "queries.npz"
        from aftershock.index import write_vectors

        write_vectors(queries, qfile)
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_bytes(b"\n".join(_payloads(str(qfile), a.dim, a.k, a.n_queries)) + b"\n")
        rows = []
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for driver, workers in itertools.product(drivers, worker_levels):
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "aftershock", "serve", "--index", str(index_dir), "--port", str(port),
                   "--workers", str(workers)]
            server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_ready(url, server, workers)
                for c in levels:
                    cpu0 = _children_cpu()
                    r = run_wrk(url, bodies, c, a.duration, Path(tmp)) if driver == "wrk" else \
                        run_httpx(url, qfile, a, c, env)
                    r.update(driver=driver, workers=workers, load1=os.getloadavg()[0],
                             client_cpu=(_children_cpu() - cpu0) / r["wall_s"])
                    rows.append(r)
                    print(f"  {driver} workers={workers} clients={c}: {r['qps']:.0f} QPS, "
                          f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors {r['errors']}",
                          file=sys.stderr, flush=True)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
        load1 = os.getloadavg()
        inproc_after = _in_process(index, queries, a.k, a.duration)  # the load on the machine drifts: bracket it
        base = max(inproc["qps"], inproc_after["qps"])  # the conservative baseline for the ratio
        for r in rows:
            r["ratio"] = r["qps"] / base

    print(f"data: {len(docs):,} docs ({docs.nnz / len(docs):.1f} nnz/doc), {len(queries):,} queries "
          f"({queries.nnz / len(queries):.1f} nnz/query), index {index.kind}"
          + ("" if index.kind == "exact" else f" (n_postings={a.n_postings}, summary_energy={a.summary_energy}, "
                                             "query_cut=10, heap_factor=0.7 defaults)")
          + f", k={a.k}, {a.duration:g} s per level, nproc {os.cpu_count()}")
    print(f"load average (1/5/15 min) before: {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after: {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}")
    for when, x in (("before", inproc), ("after", inproc_after)):
        print(f"in-process single worker (1 thread, 1 query per call), {when} the service runs: {x['qps']:.0f} QPS, "
              f"p50 {x['p50_ms']:.3f} ms, p99 {x['p99_ms']:.3f} ms")
    print(f"ratios below use the larger of the two: {base:.0f} QPS; client CPU = the load generator's CPU seconds "
          "per second (1.0 = one core saturated)")
    print()
    print("| driver | workers | clients | service QPS | p50 ms | p99 ms | errors | in-process QPS "
          "| service / in-process | client CPU | load avg 1 min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['driver']} | {r['workers']} | {r['clients']} | {r['qps']:,.0f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {base:,.0f} | {r['ratio']:.2f} | "
              f"{r['client_cpu']:.2f} | {r['load1']:.1f} |")
    for r in rows:
        if r["error_samples"]:
            print(f"errors ({r['driver']}, workers={r['workers']}, {r['clients']} clients): {r['error_samples']}")
    print(f"\ntotal {time.time() - t_start:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"inproc": inproc, "inproc_after": inproc_after, "rows": rows, "load_before": load0, "load_after": load1,
                                            "args": vars(a)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
