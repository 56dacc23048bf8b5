"""``python -m benchmarks.fault --cases 1000 [--seed 0] [--timeout 60] [--out results.json]``: corrupt saved
exact and Seismic indexes in every way `benchmarks.fault.fuzz` knows, load and search each one in a worker
process (crashes and hangs detected), print a Markdown table; exit status 1 when any case crashed, hung,
raised an unnamed exception or answered wrongly."""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.fault.fuzz import failures, fuzz, table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fault", description=__doc__)
    p.add_argument("--cases", type=int, default=1000, help="corrupted-index cases (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    p.add_argument("--out", help="write every case's record as JSON here")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    done = [0]

    def progress(r):
        done[0] += 1
        if done[0] % 100 == 0:
            print(f"... {done[0]}/{a.cases} cases", file=sys.stderr, flush=True)

    results = fuzz(a.cases, seed=a.seed, timeout=a.timeout, progress=progress)
    print(table(results))
    bad = failures(results)
    print(f"\n{len(results)} cases in {time.perf_counter() - t0:.0f} s; {len(bad)} failing")
    for r in bad[:20]:
        print(f"  FAIL {r}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
