"""Fixtures of the newcomer tests: the repository root, a small Cranfield index built from the bundled data
(no ../shared), and a live `aftershock serve` on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRAN = REPO / "aftershock" / "data" / "cranfield"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cran_index(tmp_path_factory) -> Path:
    """A Seismic index of the bundled Cranfield vectors, with their vocabulary (built through the CLI)."""
    from aftershock.cli import main

    out = tmp_path_factory.mktemp("cran") / "idx"
    rc = main(["build", "--input", str(CRAN / "cranfield.docs.npz"), "--ids", str(CRAN / "cranfield.docs.ids.txt"),
               "--vocab", str(CRAN / "vocab.json"), "--n-postings", "400", "--output", str(out), "--threads", "1"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def live_server(cran_index, tmp_path_factory):
    """`aftershock serve` of the Cranfield index with its titles, on a free loopback port; yields the base URL."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "aftershock", "serve", "--index", str(cran_index),
                                 "--documents", str(CRAN / "titles.tsv"), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(base + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aftershock serve did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
