"""Crash harness for `aftershock.collection.Collection`: a writer process ingests real vectors (upserts,
replacements, deletes, flushes, merges, optimize) and prints every call before it starts (``B``) and after
it is acknowledged (``A``); it is killed with SIGKILL at a random moment, then the collection is reopened
and checked against the acknowledged history:

* every acknowledged write is present (an upserted id has exactly its vector; a deleted id is absent);
* the one call in flight when the process died is applied entirely or not at all (never half);
* the collection always opens (a torn log tail is reported and skipped, counted as ``tail_repairs``).

    python benchmarks/collection/crash.py --kills 200            # the long run (RESULTS-collection.md)
    python benchmarks/collection/crash.py --kills 20 --max-seconds 50   # the CI run (tests/collection)

Prints one JSON line: kills, lost acknowledged writes, half-applied calls, unopenable opens, tail repairs,
documents at the end, seconds. Exit status 1 when anything was lost, half-applied or unopenable.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "splade-tiny" / "scifact.docs.npz"
POOL = 1500  # external ids d0..d1499: upserts replace often


def load_vectors(path):
    from aftershock.index import read_npz

    return read_npz(path)


def config():
    from aftershock import CollectionConfig, SeismicConfig

    # float32 forward values: `get` returns the vectors bit for bit, from exact and Seismic segments alike
    return CollectionConfig(exact_threshold=1000, buffer_docs=250, max_segments=4, durability="fsync",
                            seismic=SeismicConfig(value_dtype="float32", n_postings=200))


# ---------------------------------------------------------------------------------------------- writer
def writer(path: str, vectors: str, seed: int) -> None:
    from aftershock import Collection

    docs = load_vectors(vectors)
    rng = random.Random(seed)
    p = Path(path)
    c = Collection.open(p) if (p / "CURRENT").exists() else Collection.create(p, dim=docs.dim, config=config())
    print("READY", flush=True)
    while True:
        r = rng.random()
        if r < 0.7:
            n = rng.randint(1, 40)
            ids = rng.sample(range(POOL), n)
            shift = rng.randrange(len(docs))
            rows = [(i + shift) % len(docs) for i in ids]
            batch = docs[np.array(rows)]
            print(f"B U {shift} {','.join(f'd{i}' for i in ids)}", flush=True)
            c.upsert(batch, ids=[f"d{i}" for i in ids])
        elif r < 0.9:
            ids = rng.sample(range(POOL), rng.randint(1, 15))
            print(f"B D 0 {','.join(f'd{i}' for i in ids)}", flush=True)
            c.delete([f"d{i}" for i in ids])
        elif r < 0.985:
            print("B F 0 -", flush=True)
            c.flush()
        else:
            print("B O 0 -", flush=True)
            c.optimize()
        print("A", flush=True)


# ---------------------------------------------------------------------------------------------- harness
def parse(log: str, n_docs: int):
    """Acknowledged calls and the one in flight: [(op, {id: row or None})], in_flight or None."""
    done, pending = [], None
    for line in log.split("\n")[:-1]:  # the last piece may be a torn line
        if line.startswith("B "):
            _, op, shift, ids = line.split(" ")
            eff = {}
            if op in "UD":
                for x in ids.split(","):
                    eff[x] = (int(x[1:]) + int(shift)) % n_docs if op == "U" else None
            pending = (op, eff)
        elif line == "A" and pending is not None:
            done.append(pending)
            pending = None
    return done, pending


def observe(c, ids, docs):
    """id -> source row it holds (None: absent; -1: a vector that is no source row it could hold)."""
    batch, _ = c.get(ids)
    got = {str(i): j for j, i in enumerate(batch.ids)}
    return got, batch


def matches(batch, j, docs, row) -> bool:
    t, v = batch.row(j)
    t0, v0 = docs.row(row)
    return np.array_equal(t, t0) and np.array_equal(v, v0)


def check(path, model: dict, pending, docs) -> dict:
    from aftershock import Collection

    out = {"lost": 0, "half": 0, "unopenable": 0, "tail": 0}
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            c = Collection.open(path)
        out["tail"] = int(any("skipped" in str(x.message) for x in w))
    except Exception as e:  # noqa: BLE001 - the harness counts every failure to open
        print(f"unopenable: {e!r}", file=sys.stderr)
        out["unopenable"] = 1
        return out
    try:
        ids = sorted(set(model) | (set(pending[1]) if pending else set()))
        got, batch = observe(c, ids, docs)

        def state_ok(i, want) -> bool:
            if want is None:
                return i not in got
            return i in got and matches(batch, got[i], docs, want)

        flight = pending[1] if pending else {}
        if flight:
            new = all(state_ok(i, r) for i, r in flight.items())
            old = all(state_ok(i, model.get(i)) for i in flight)
            if not (new or old):
                out["half"] += 1
            if new:
                model.update(flight)
        for i, want in model.items():
            if i in flight:
                continue
            if not state_ok(i, want):
                out["lost"] += 1
        for i in [i for i, r in model.items() if r is None]:
            del model[i]
        if c.count() != len(model):
            print(f"count {c.count()} != model {len(model)}", file=sys.stderr)
            out["lost"] += abs(c.count() - len(model))
        out["count"] = c.count()
    finally:
        c.close()
    return out


def warm_up(docs) -> None:
    """Compile (and cache on disk) the build and search kernels once, so writers do not die compiling."""
    from aftershock import ExactIndex, SeismicIndex

    part = docs[np.arange(min(len(docs), 400))]
    SeismicIndex.build(part, config().seismic).search(part[np.arange(3)], 5)
    ExactIndex.build(part).search(part[np.arange(3)], 5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--vectors", default=str(DEFAULT_VECTORS))
    ap.add_argument("--dir", help="collection directory (default: a temporary one, removed at the end)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=float("inf"), help="stop starting rounds after this")
    ap.add_argument("--max-delay", type=float, default=1.5, help="kill within this many seconds of READY")
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.writer:
        writer(args.writer, args.vectors, args.seed)
        return 0
    if not Path(args.vectors).exists():
        print(json.dumps({"skipped": f"{args.vectors} not found"}))
        return 0
    docs = load_vectors(args.vectors)
    warm_up(docs)
    tmp = tempfile.TemporaryDirectory(prefix="aftershock-crash-") if not args.dir else None
    root = Path(args.dir or tmp.name)
    path = root / "coll"
    rng = random.Random(args.seed)
    model: dict = {}
    tot = {"kills": 0, "lost": 0, "half": 0, "unopenable": 0, "tail_repairs": 0, "acknowledged_calls": 0,
           "writer_errors": 0}
    t0 = time.time()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for k in range(args.kills):
        if time.time() - t0 > args.max_seconds:
            break
        log, errlog = root / f"writer-{k}.log", root / f"writer-{k}.err"
        with open(log, "w") as out, open(errlog, "w") as err:
            proc = subprocess.Popen([sys.executable, __file__, "--writer", str(path), "--vectors", args.vectors,
                                     "--seed", str(args.seed * 100003 + k)], stdout=out, stderr=err, env=env)
            deadline = time.time() + 60
            while "READY" not in log.read_text() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, args.max_delay))
            if proc.poll() is not None:  # the writer died on its own: an error, not a kill
                tot["writer_errors"] += 1
                print(errlog.read_text()[-3000:], file=sys.stderr)
            else:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        done, pending = parse(log.read_text(), len(docs))
        for op, eff in done:
            model.update(eff)
        tot["acknowledged_calls"] += len(done)
        res = check(path, model, pending, docs)
        tot["kills"] += 1
        tot["lost"] += res["lost"]
        tot["half"] += res["half"]
        tot["unopenable"] += res["unopenable"]
        tot["tail_repairs"] += res["tail"]
        tot["count"] = res.get("count")
        log.unlink()
        errlog.unlink()
        if res["unopenable"]:
            break
    tot["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(tot))
    if tmp is not None:
        tmp.cleanup()
    return 1 if tot["lost"] or tot["half"] or tot["unopenable"] or tot["writer_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
