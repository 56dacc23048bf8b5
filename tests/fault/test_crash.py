"""kill -9 in the middle of saves: the path always holds one complete generation, and the next save removes
what the killed writer left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aftershock.index import load_dir, save_dir

ROOT = str(Path(__file__).resolve().parents[2])
CHILD = """
import sys, numpy as np
from aftershock.index import save_dir
path, g = sys.argv[1], int(sys.argv[2])
while True:
    g += 1
    save_dir(path, {f"a{i}": np.full(300_000 + 7 * i, g, np.int64) for i in range(4)}, {"g": g}, lock_timeout=30)
"""


def test_kill_during_saves_keeps_a_complete_index(tmp_path):
    path = tmp_path / "idx"
    save_dir(path, {f"a{i}": np.full(10, 0, np.int64) for i in range(4)}, {"g": 0})
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    last = 0
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(1000 * (round_ + 1))], env=env, cwd=ROOT)
        time.sleep(0.6 + rng.random() * 0.8)  # the import takes ~0.5 s, then saves back to back
        p.send_signal(signal.SIGKILL)
        p.wait()
        arrays, meta = load_dir(path)
        assert set(arrays) == {f"a{i}" for i in range(4)}
        for a in arrays.values():
            assert (a == meta["g"]).all(), "a generation mixed with another"
        last = meta["g"]
    save_dir(path, {"b": np.arange(3)}, {"g": -1})
    names = sorted(os.listdir(path))
    assert names == [".lock", "b.%06d.npy" % load_dir(path)[1]["generation"], "meta.json"], names
    assert last >= 0
