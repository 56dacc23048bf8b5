"""The short crash run in CI (<= 60 s): a writer ingesting real vectors (scifact, SPLADE-tiny) killed with
SIGKILL ~20 times; after each kill the collection opens, every acknowledged write is present and the call
in flight is applied entirely or not at all. The long run is `benchmarks/collection/crash.py --kills 200`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "collection" / "crash.py"
VECTORS = ROOT.parent / "shared" / "vectors" / "splade-tiny" / "scifact.docs.npz"


@pytest.mark.skipif(not VECTORS.exists(), reason=f"{VECTORS} is not here")
def test_short_crash_run(tmp_path):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # the writer imports this checkout
    out = subprocess.run([sys.executable, str(SCRIPT), "--kills", "20", "--max-seconds", "45", "--max-delay", "0.8",
                          "--vectors", str(VECTORS), "--dir", str(tmp_path), "--seed", "1"],
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": path})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["lost"] == 0 and res["half"] == 0 and res["unopenable"] == 0 and res["writer_errors"] == 0
    # a loaded machine fits fewer kills in the 45 s box (the issue allows 60 s); the 200-kill run is benchmarks/collection/crash.py
    assert res["kills"] >= 4 and res["acknowledged_calls"] > 0, res
