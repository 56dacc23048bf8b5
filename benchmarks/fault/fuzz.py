"""Corruption fuzzer for saved indexes (exact and Seismic): byte flips, truncation, appended bytes, deleted
files, ``.npy`` header shape/dtype edits, array value edits and meta.json edits, each optionally re-signed
(every sha256 and ``meta_sha256`` recomputed, so only the structural checks stand between the file and the
kernels), over every file of both index kinds.

Cases run in a worker subprocess (``faulthandler`` on) that the parent feeds one case at a time: a worker
that dies (segfault, abort) is a crash, one that does not answer within ``timeout`` seconds is a hang;
either is recorded and a fresh worker continues. Each case loads the damaged index with ``verify=True`` and
``verify=False`` and searches it. Outcomes:

* ``error``: a named `AftershockError` (the expected outcome for almost every case);
* ``same``: the index loaded and answered exactly like the original (e.g. whitespace flipped in meta.json);
* ``consistent``: a re-signed or ``verify=False`` edit that is structurally valid loaded, and every answer
  is right *for the data as loaded* (exact: equal to brute force over its arrays; Seismic: every returned
  score is the exact dot product of the returned document, ids unique, scores descending);
* failures: ``crash``, ``hang``, ``unnamed`` (an exception that is not an `AftershockError`), ``wrong``
  (answers that differ with hashes verified and not re-signed, or that are wrong for the loaded data).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FAIL = ("crash", "hang", "unnamed", "wrong")
KINDS = ("exact", "seismic")
MUTATIONS = ("flip", "truncate", "append", "delete", "shape", "dtype", "value", "meta", "flip_resigned")
RESIGNED_ALWAYS = {"value", "flip_resigned"}
K = 10


# ------------------------------------------------------------------------------------------- base indexes
def make_data(seed: int = 3, n: int = 240, dim: int = 400, nq: int = 16):
    from aftershock.index import SparseBatch, Vocabulary

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n + nq):
        m = int(rng.integers(3, 25))
        idx = np.sort(rng.choice(dim, m, replace=False))
        rows.append((idx, rng.uniform(0.05, 2.0, m).astype(np.float32)))
    vocab = Vocabulary([f"t{i}" for i in range(dim)])
    docs = SparseBatch.from_rows(rows[:n], ids=[f"d{i}" for i in range(n)], dim=dim, vocab=vocab)
    queries = SparseBatch.from_rows(rows[n:], dim=dim)
    return docs, queries


def build_bases(root: Path) -> dict:
    """Save the two base indexes under ``root``; returns kind -> path."""
    from aftershock.seismic import ExactIndex, SeismicIndex

    docs, _ = make_data()
    out = {}
    ExactIndex.build(docs).save(root / "exact")
    SeismicIndex.build(docs, n_postings=40, centroid_fraction=0.3, knn=2, threads=1).save(root / "seismic")
    out["exact"], out["seismic"] = str(root / "exact"), str(root / "seismic")
    return out


# ------------------------------------------------------------------------------------------- mutations
def _files(d: Path) -> list[str]:
    meta = json.loads((d / "meta.json").read_text())
    return ["meta.json"] + sorted(meta["files"])


def _resign(d: Path) -> None:
    """Recompute every listed file's size/sha256 (and .npy dtype/shape from its header) and meta_sha256."""
    from aftershock.index.store import canonical

    try:
        meta = json.loads((d / "meta.json").read_text())
    except ValueError:
        return
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        return
    for name, info in meta["files"].items():
        f = d / name if isinstance(name, str) and "/" not in name and ".." not in name else None
        if f is None or not f.is_file() or not isinstance(info, dict):
            continue
        raw = f.read_bytes()
        info["sha256"], info["bytes"] = hashlib.sha256(raw).hexdigest(), len(raw)
        if name.endswith(".npy"):
            try:
                import io

                fp = io.BytesIO(raw)
                version = np.lib.format.read_magic(fp)
                shape, _, dtype = np.lib.format._read_array_header(fp, version)
                info["dtype"], info["shape"] = dtype.str, list(shape)
            except Exception:
                pass
    meta.pop("meta_sha256", None)
    try:
        meta["meta_sha256"] = hashlib.sha256(canonical(meta)).hexdigest()
    except (TypeError, ValueError):
        pass
    (d / "meta.json").write_text(json.dumps(meta, indent=1))


def _npy_parts(raw: bytes):
    import ast

    major = raw[6]
    start = 10 if major == 1 else 12
    hlen = int.from_bytes(raw[8:start], "little")
    header = ast.literal_eval(raw[start:start + hlen].decode("latin1"))
    return header, raw[start + hlen:]


def _npy_bytes(header: dict, data: bytes) -> bytes:
    text = repr(header)
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1") + data


_SAME_SIZE = {1: ["|u1", "|i1", "|b1"], 2: ["<u2", "<i2", "<f2", ">u2"], 4: ["<u4", "<i4", "<f4", ">i4", ">f4"],
              8: ["<i8", "<u8", "<f8", ">i8"]}


def mutate(d: Path, kind: str, rng: random.Random, mutation: str) -> str:
    """Apply ``mutation`` to the index copy in ``d``; returns a description. Re-signs where the case says."""
    files = _files(d)
    npys = [f for f in files if f.endswith(".npy")]
    resign = mutation in RESIGNED_ALWAYS or (mutation in ("shape", "dtype", "meta") and rng.random() < 0.5)
    if mutation in ("flip", "flip_resigned", "truncate", "append", "delete"):
        name = rng.choice(files)
        f = d / name
        raw = bytearray(f.read_bytes())
        if mutation in ("flip", "flip_resigned"):
            nflip = rng.randint(1, 4)
            for _ in range(nflip):
                pos = rng.randrange(min(len(raw), 160)) if rng.random() < 0.5 else rng.randrange(len(raw))
                raw[pos] ^= 1 << rng.randrange(8)
            f.write_bytes(bytes(raw))
            desc = f"{mutation} {nflip} bit(s) of {name}"
        elif mutation == "truncate":
            cut = rng.randrange(len(raw))
            f.write_bytes(bytes(raw[:cut]))
            desc = f"truncate {name} to {cut} of {len(raw)} bytes"
        elif mutation == "append":
            f.write_bytes(bytes(raw) + os.urandom(rng.choice([1, 8, 100])))
            desc = f"append bytes to {name}"
        else:
            f.unlink()
            desc = f"delete {name}"
    elif mutation in ("shape", "dtype", "value"):
        name = rng.choice(npys)
        f = d / name
        header, data = _npy_parts(f.read_bytes())
        if mutation == "shape":
            shape = list(header["shape"])
            if not shape:
                shape = [1]
            ax = rng.randrange(len(shape))
            shape[ax] = max(0, rng.choice([shape[ax] - 1, shape[ax] + 1, shape[ax] * 2, shape[ax] // 2, 0]))
            if rng.random() < 0.2:
                shape = shape + [1]
            header["shape"] = tuple(shape)
            desc = f"shape of {name} -> {tuple(shape)}"
        elif mutation == "dtype":
            size = np.dtype(header["descr"]).itemsize
            header["descr"] = rng.choice(_SAME_SIZE.get(size, ["<u1"]))
            desc = f"dtype of {name} -> {header['descr']}"
        else:
            arr = np.frombuffer(data, dtype=np.dtype(header["descr"])).copy()
            if arr.size == 0 or arr.dtype.kind == "U":
                header["shape"] = tuple(max(0, s - 1) if i == 0 else s for i, s in enumerate(header["shape"]))
                desc = f"value edit impossible, shape of {name} -> {header['shape']}"
            else:
                flat = arr.reshape(-1)
                for _ in range(rng.randint(1, 3)):
                    i = rng.randrange(flat.size)
                    info = np.iinfo(flat.dtype) if flat.dtype.kind in "iu" else np.finfo(flat.dtype)
                    choices = [0, 1, flat.size, flat.size - 1, int(info.max), 255, 65535, 400, 240]
                    v = rng.choice(choices) if flat.dtype.kind in "iu" else rng.choice(
                        [0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30])
                    if flat.dtype.kind == "i" and rng.random() < 0.3:
                        v = -1
                    if flat.dtype.kind in "iu":
                        v = int(np.clip(v, info.min, info.max))
                    flat[i] = v
                    data = flat.tobytes()
                desc = f"values of {name} edited"
        f.write_bytes(_npy_bytes(header, data))
    elif mutation == "meta":
        meta = json.loads((d / "meta.json").read_text())
        key = rng.choice(["n_docs", "dim", "n_blocks", "format_version", "kind", "generation", "vocab_size",
                          "config", "files_rename", "files_drop", "files_add", "build_stats"])
        if key.startswith("files_"):
            fname = rng.choice(sorted(meta["files"]))
            if key == "files_rename":
                new = rng.choice(["../" + fname, "/etc/passwd", "sub/" + fname, ".", "meta.json", ".lock", fname + "x"])
                meta["files"][new] = meta["files"].pop(fname)
            elif key == "files_drop":
                meta["files"].pop(fname)
            else:
                meta["files"]["extra.000001.npy"] = dict(meta["files"][fname])
            desc = f"meta {key} {fname}"
        else:
            old = meta.get(key)
            pool = [0, -1, 1, 2, 99, 2**31, 2**40, "3", True, None, 1.5, [], {}]
            if isinstance(old, int) and not isinstance(old, bool):
                pool += [old // 2, old * 2, old + 1, old - 1]
            if key == "kind":
                pool = ["exact", "seismic", "other", 3, None]
            if key == "config":
                cfg = dict(meta.get("config") or {})
                field = rng.choice(sorted(cfg) or ["n_postings"])
                cfg[field] = rng.choice(pool + ["x"])
                new_val = cfg
            else:
                new_val = rng.choice(pool)
            meta[key] = new_val
            desc = f"meta {key}: {old!r:.40} -> {new_val!r:.60}"
        (d / "meta.json").write_text(json.dumps(meta, indent=1))
    else:
        raise ValueError(mutation)
    if resign:
        _resign(d)
        desc += " (re-signed)"
    return desc


# ------------------------------------------------------------------------------------------- judging
def _sane(res, n_docs: int, k: int) -> str | None:
    s, ids = np.asarray(res.scores), np.asarray(res.ids)
    if s.shape != ids.shape or s.shape[1] != k:
        return "result shape"
    for r in range(ids.shape[0]):
        got = ids[r][ids[r] >= 0]
        if np.any(ids[r] >= n_docs) or np.any(ids[r] < -1) or len(np.unique(got)) != len(got):
            return "ids out of range or repeated"
        sc = s[r][: len(got)]
        if not np.all(np.isfinite(sc)) or np.any(np.diff(sc) > 1e-6 * (1 + np.abs(sc[:-1]))):
            return "scores not finite or not descending"
        if got.shape[0] and not np.all(ids[r][: len(got)] >= 0):
            return "padding before results"
    return None


def _consistent(index, queries, res) -> str | None:
    """Are the answers right for the data as loaded?"""
    import scipy.sparse as sp

    bad = _sane(res, index.n_docs, K)
    if bad:
        return bad
    q = queries.to_scipy().astype(np.float64)
    if index.kind == "exact":
        d = sp.csc_matrix((np.asarray(index.inv_vals, np.float64), np.asarray(index.inv_docs),
                           np.asarray(index.inv_ptr)), shape=(index.n_docs, index.dim))
        full = (q @ d.T).toarray()
        pattern = sp.csc_matrix((np.ones(d.nnz), d.indices, d.indptr), shape=d.shape)  # stored zeros count
        touched = ((q != 0).astype(np.float64) @ pattern.T).toarray() > 0
        for r in range(full.shape[0]):
            cand = np.sort(full[r][touched[r]])[::-1][:K]
            got = res.scores[r][res.ids[r] >= 0].astype(np.float64)
            if got.shape[0] != cand.shape[0] or not np.allclose(got, cand, rtol=1e-4, atol=1e-5):
                return f"exact query {r}: scores differ from brute force over the loaded arrays"
        return None
    for r in range(res.ids.shape[0]):
        qi, qv = queries.row(r)
        qd = dict(zip(qi.tolist(), qv.tolist()))
        for score, row in zip(res.scores[r], res.ids[r]):
            if row < 0:
                continue
            ti, tv = index.document(int(row))
            want = float(sum(qd.get(int(t), 0.0) * float(v) for t, v in zip(ti, tv)))
            if not np.isclose(float(score), want, rtol=1e-3, atol=1e-4):
                return f"seismic query {r}: doc {row} scored {score}, its dot product is {want}"
    return None


def _search(index, queries):
    if index.kind == "seismic":
        return index.search(queries, K, query_cut=8, heap_factor=0.9, n_knn=2, threads=1)
    return index.search(queries, K, threads=1)


def run_case(case: dict, bases: dict, ref: dict, queries, work: Path) -> dict:
    """One case inside the worker: copy, mutate, load (verify True and False) and judge."""
    from aftershock.errors import AftershockError
    from aftershock.seismic import load_index

    d = work / "case"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(bases[case["kind"]], d)
    rng = random.Random(case["seed"])
    desc = mutate(d, case["kind"], rng, case["mutation"])
    resigned = "(re-signed)" in desc
    out = {"desc": desc}
    for verify in (True, False):
        key = "verify" if verify else "noverify"
        try:
            index = load_index(d, verify=verify, mmap=rng.random() < 0.7)
            res = _search(index, queries)
        except AftershockError as e:
            out[key] = "error"
            out[key + "_msg"] = f"{type(e).__name__}: {str(e)[:160]}"
            continue
        except Exception as e:  # noqa: BLE001 - the point is to catch what should not happen
            out[key] = "unnamed"
            out[key + "_msg"] = f"{type(e).__name__}: {str(e)[:200]}"
            continue
        r_s, r_i = ref[case["kind"]]
        if np.array_equal(res.ids, r_i) and np.array_equal(res.scores, r_s):
            out[key] = "same"
        elif verify and not resigned:
            out[key] = "wrong"
            out[key + "_msg"] = "hash-verified load answered differently"
        else:
            why = _consistent(index, queries, res)
            out[key] = "wrong" if why else "consistent"
            if why:
                out[key + "_msg"] = why
    return out


def worker_main() -> None:
    """Worker loop: a JSON line {"bases": ...} first, then one case per line; one JSON answer per line."""
    import faulthandler

    faulthandler.enable()
    from aftershock.seismic import load_index

    setup = json.loads(sys.stdin.readline())
    bases = setup["bases"]
    _, queries = make_data()
    ref = {}
    for kind, p in bases.items():
        res = _search(load_index(p), queries)
        ref[kind] = (res.scores, res.ids)
        _search(load_index(p, mmap=False), queries)  # compile (or load from cache) the writable-array variant too
    work = Path(tempfile.mkdtemp(prefix="fuzz-worker-"))
    print(json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            case = json.loads(line)
            print(json.dumps(run_case(case, bases, ref, queries, work)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------- parent
class Worker:
    def __init__(self, bases: dict, startup_timeout: float = 600.0):
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: warnings can never fill it and block
        self.p = subprocess.Popen([sys.executable, "-c", "from benchmarks.fault.fuzz import worker_main; worker_main()"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  cwd=root, env=env)
        self.p.stdin.write(json.dumps({"bases": bases}) + "\n")
        self.p.stdin.flush()
        ready = self._read(startup_timeout)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"fuzz worker did not start: {self._stderr()[-2000:]}")

    def _stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def _read(self, timeout: float):
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
        line = self.p.stdout.readline()
        return json.loads(line) if line else None

    def run(self, case: dict, timeout: float) -> dict:
        self.p.stdin.write(json.dumps(case) + "\n")
        self.p.stdin.flush()
        t0 = time.monotonic()
        got = self._read(timeout)
        if got is not None:
            got["seconds"] = time.monotonic() - t0
            return got
        if self.p.poll() is None:
            self.kill()
            return {"verify": "hang", "noverify": "hang", "desc": "?", "seconds": timeout}
        self.p.wait()
        err = self._stderr()
        return {"verify": "crash", "noverify": "crash", "desc": "?", "crash": f"exit {self.p.returncode}: "
                f"{err[-600:]}", "seconds": time.monotonic() - t0}

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def close(self) -> None:
        try:
            self.p.stdin.close()
            self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


def make_cases(n: int, seed: int) -> list[dict]:
    """``n`` cases spread evenly over (kind, mutation), each with its own seed."""
    rng = random.Random(seed)
    combos = [(k, m) for k in KINDS for m in MUTATIONS]
    return [{"id": i, "kind": combos[i % len(combos)][0], "mutation": combos[i % len(combos)][1],
             "seed": rng.randrange(2**31)} for i in range(n)]


def fuzz(n_cases: int, seed: int = 0, timeout: float = 60.0, progress=None) -> list[dict]:
    """Run ``n_cases`` cases; returns one record per case (case fields + outcome per verify mode)."""
    root = Path(tempfile.mkdtemp(prefix="aftershock-fuzz-"))
    try:
        bases = build_bases(root)
        worker = Worker(bases)
        results = []
        for case in make_cases(n_cases, seed):
            out = worker.run(case, timeout)
            if out["verify"] in ("crash", "hang"):
                out["desc"] = f"(case {case['id']}, seed {case['seed']})"
                worker = Worker(bases)
            results.append({**case, **out})
            if progress:
                progress(results[-1])
        worker.close()
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(results: list[dict]) -> str:
    """A Markdown table: cases per (kind, mutation) and outcomes (verify=True / verify=False)."""
    from collections import Counter

    rows = []
    header = ("| index | mutation | cases | error | same | consistent | crash | hang | unnamed | wrong |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    groups: dict = {}
    for r in results:
        groups.setdefault((r["kind"], r["mutation"]), []).append(r)
    total = Counter()
    for (kind, mut), rs in sorted(groups.items()):
        c = Counter()
        for r in rs:
            c.update([r["verify"], r["noverify"]])
        total.update(c)
        cells = [f"{c[o]}" for o in ("error", "same", "consistent", "crash", "hang", "unnamed", "wrong")]
        rows.append(f"| {kind} | {mut} | {len(rs)} | " + " | ".join(cells) + " |")
    cells = [f"{total[o]}" for o in ("error", "same", "consistent", "crash", "hang", "unnamed", "wrong")]
    rows.append(f"| **all** | | **{len(results)}** | " + " | ".join(f"**{x}**" for x in cells) + " |")
    return header + "\n" + "\n".join(rows) + "\n\n(each case is loaded twice, verify=True and verify=False: the " \
        "outcome columns count loads)"


def failures(results: list[dict]) -> list[dict]:
    return [r for r in results if r["verify"] in FAIL or r["noverify"] in FAIL]
