"""Ctrl-C during `aftershock build` stops it within about a second (the build kernels run in chunks and
return to Python between them): exit status 130, `aftershock: interrupted`, no index left behind. Runs on
the first 100k documents of ../shared's lexicon vectors when present, else on generated vectors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aftershock.index import SparseBatch, read_vectors, write_vectors

REPO = Path(__file__).resolve().parents[2]
LEXICON = REPO.parent / "shared" / "vectors" / "splade-tiny" / "lexicon.docs.npz"


def _docs(n: int) -> SparseBatch:
    if LEXICON.is_file():
        return read_vectors(LEXICON, dim=30522)[:n]
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 120, size=n)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    terms = (rng.zipf(1.3, size=int(indptr[-1])) % 30522).astype(np.int32)
    rows = [np.unique(terms[indptr[i]:indptr[i + 1]]) for i in range(n)]
    lengths = np.array([len(r) for r in rows])
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.random(int(indptr[-1])).astype(np.float32) + 0.01
    return SparseBatch.from_arrays(indptr, np.concatenate(rows), values, dim=30522)


def test_ctrl_c_stops_a_build_within_two_seconds(tmp_path):
    docs = _docs(100_000)
    write_vectors(docs, tmp_path / "docs.npz")
    out, log = tmp_path / "idx", tmp_path / "build.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "aftershock", "build", "--input", str(tmp_path / "docs.npz"),
                                 "--row-ids", "--dim", "30522", "--output", str(out)],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while "blocking" not in log.read_text(errors="replace"):  # interrupt the longest step while it runs
            if proc.poll() is not None:
                pytest.fail(f"the build ended before its blocking step: {log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert rc == 130, text[-2000:]
    assert "aftershock: interrupted" in text and "Traceback" not in text
    assert took < 2.0, f"exit took {took:.2f} s after SIGINT"
    assert not out.exists()
    print(f"exit {took:.2f} s after SIGINT")
