"""A/B timing of two checkouts of Aftershock on ONE saved index: each round runs the old and the new code in
turn (fresh processes, 1 thread, one query per call, after a one-query warm-up), so machine noise falls on
both alike. Prints each round and the median / minimum per checkout.

    git worktree add /tmp/aftershock-old ba8109c        # the checkout to compare against
    python benchmarks/ab_search.py --old /tmp/aftershock-old --new . \
        --docs ../shared/vectors/splade-tiny/lexicon.docs.npz --queries ../shared/vectors/splade-tiny/lexicon.queries.npz

The index is built once by the new code (``--max-block-size``, default 24) into ``--index`` (default a
temporary folder) and must load in both checkouts (the index format did not change in issue 12).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
from aftershock import load_index, read_vectors
from aftershock.seismic import SearchParams
idx = load_index(sys.argv[1])
q = read_vectors(sys.argv[2], dim=idx.dim)
n = int(sys.argv[3])
out = {}
for point in sys.argv[4].split(","):
    qc, hf = point.split(":")
    p = SearchParams(query_cut=int(qc), heap_factor=float(hf), threads=1)
    idx.search(q[0:1], 10, p)
    t = time.perf_counter()
    for i in range(n):
        idx.search(q[i:i + 1], 10, p)
    out[point] = (time.perf_counter() - t) / n * 1e6
print(json.dumps(out))
"""


def run(checkout: Path, index: Path, queries: str, n: int, points: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve()), "NUMBA_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD, str(index), queries, str(n), points], env=env,
                       capture_output=True, text=True, check=True, cwd=checkout)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="checkout of the old code")
    ap.add_argument("--new", type=Path, default=Path("."), help="checkout of the new code (default: .)")
    ap.add_argument("--docs", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--index", type=Path, default=None, help="saved index (built by the new code when absent)")
    ap.add_argument("--max-block-size", type=int, default=24)
    ap.add_argument("--n-queries", type=int, default=2000)
    ap.add_argument("--points", default="10:0.8,10:0.7", help="query_cut:heap_factor points")
    ap.add_argument("--rounds", type=int, default=9)
    a = ap.parse_args(argv)
    index = a.index or Path(tempfile.mkdtemp(prefix="ab-index-")) / "idx"
    if not (index / "meta.json").exists():
        build = ("import sys; from aftershock import SeismicIndex, SeismicConfig, read_vectors; "
                 "SeismicIndex.build(read_vectors(sys.argv[1], dim=30522), SeismicConfig(max_block_size=int(sys.argv[3])))"
                 ".save(sys.argv[2])")
        subprocess.run([sys.executable, "-c", build, a.docs, str(index), str(a.max_block_size)], check=True,
                       env={**os.environ, "PYTHONPATH": str(a.new.resolve())})
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(a.rounds):
        for name, checkout in (("old", a.old), ("new", a.new)):
            res = run(checkout, index, a.queries, a.n_queries, a.points)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.1f} us" for k, v in res.items()), flush=True)
            for k, v in res.items():
                times.setdefault((name, k), []).append(v)
    print("\n| point | old median µs | new median µs | new/old (median) | old min | new min | new/old (min) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for point in a.points.split(","):
        o, n = times[("old", point)], times[("new", point)]
        print(f"| {point} | {statistics.median(o):.0f} | {statistics.median(n):.0f} | "
              f"{statistics.median(n) / statistics.median(o):.3f} | {min(o):.0f} | {min(n):.0f} | {min(n) / min(o):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
