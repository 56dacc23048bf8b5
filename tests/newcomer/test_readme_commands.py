"""README's command blocks, as written: every ```bash block of README.md is either run here (from the
repository root, as on a fresh clone: only bundled data) or named with the test that covers it or the reason
it cannot run in a test (it installs packages, needs your own data, or is the CI itself). A new block must
be added to BLOCKS, so none goes untested by accident."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# first command line of each block -> "run", "serve" (long-running: started, used, stopped) or why not here
BLOCKS = {
    "python3 -m venv .venv": "covered: tests/newcomer/test_fresh_venv.py (fresh venv, pip install -e ., demo)",
    "pip install -e '.[service]'": "installs extras: covered by .ci/run (pip install -e '.[dev]')",
    "pip install torch --index-url": "downloads torch: not in a test",
    "aftershock demo": "run",
    "D=aftershock/data/cranfield": "run",
    "bash .ci/run": "the CI itself",
    "aftershock encode --model default": "run",
    "aftershock eval --dataset path/to/scifact": "needs a BEIR dataset: tests/eval/test_effectiveness.py runs "
                                                  "eval on a folder made from the bundled data",
    "aftershock train-data prepare": "needs BEIR datasets (--data): tests/cli/test_train_cli.py runs prepare on a "
                                     "generated folder",
    "aftershock train --config": "needs a training config and data: tests/train/test_trainer.py",
    "aftershock serve --index /tmp/my_index": "serve",
    "curl -s localhost:8000/search": "after serve",
    "aftershock collection create coll": "needs your vectors and metadata: tests/collection/test_cli_collection.py "
                                         "runs create / upsert / delete / optimize / info / search",
    "aftershock build --input docs.npz --ids docs.ids.txt --dim 30522 --output my-cluster --shards": "needs your "
        "vectors and Ray: tests/cluster/test_ray_cluster.py builds shards of a real set on a local Ray (CLI included)",
    "aftershock serve --cluster my-cluster": "serves a cluster: tests/cluster/test_ray_cluster.py runs the Ray Serve ingress",
    "aftershock bench scale": "a benchmark of minutes to hours: tests/bench/test_scale.py runs the driver on a tiny N",
    "python benchmarks/collection/ingest.py --dataset lexicon": "benchmarks of many minutes on 268,640 documents "
                                                               "(RESULTS.md); the mechanisms are tests/collection/test_merge.py",
    "python benchmarks/train/make_backbone.py": "the training recipe (a GPU run of minutes): tests/lsr/test_backbone.py "
                                                "and tests/train/test_trainer.py run its parts on tiny inputs",
    "aftershock eval --dataset ../shared/data/scifact": "needs ../shared: tests/eval/test_hybrid_eval.py runs hybrid "
                                                        "systems on a folder made from the bundled data",
    "aftershock serve --index idx/ --model default --documents corpus.jsonl --hybrid": "starts a server: "
                                                        "tests/service/test_hybrid_service.py drives the hybrid routes",
    "aftershock search --index coll": "needs a collection: "
                                      "tests/collection/test_serve_collection.py::test_cli_search_collection_with_filter",
    "aftershock build --input aftershock/data/cranfield/cranfield.docs.npz": "starts a server and schemathesis in "
                                     "the background: tests/service/test_schemathesis.py runs it in-process",
}


def blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def first_line(block: str) -> str:
    return next(line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def kind(block: str) -> str:
    line = first_line(block)
    found = [v for k, v in BLOCKS.items() if line.startswith(k)]
    assert len(found) == 1, f"README block starting {line!r} is not classified in BLOCKS"
    return found[0]


def test_every_block_is_classified():
    for b in blocks():
        kind(b)


def bash(block: str, timeout=900, env=None):
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert p.returncode == 0, f"README block failed:\n{block}\n--- stderr:\n{p.stderr[-3000:]}"
    return p


def env_with_cli() -> dict:
    """The environment of a user: `aftershock` on PATH (the console script of this interpreter's install)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if shutil.which("aftershock") is None:
        pytest.skip("the aftershock console script is not on PATH (pip install -e . first)")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def runnable() -> list[str]:
    """The blocks run by `test_block_runs_as_written` (kind "run"); "serve" and "after serve" are run by
    `test_serve_and_curl_blocks`, the others are classified (`test_every_block_is_classified`), not run."""
    found = []
    for b in blocks():
        try:
            if kind(b) == "run":
                found.append(b)
        except AssertionError:  # an unclassified block fails test_every_block_is_classified, not collection
            pass
    return found


def test_runnable_blocks_exist():
    assert runnable(), "README has no block of kind 'run'"


@pytest.mark.parametrize("block", runnable(), ids=lambda b: first_line(b)[:40])
def test_block_runs_as_written(block):
    if first_line(block).startswith("aftershock encode"):
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
    bash(block, env=env_with_cli())


def test_serve_and_curl_blocks():
    pytest.importorskip("fastapi")
    env = env_with_cli()
    all_blocks = blocks()
    build = next(b for b in all_blocks if first_line(b).startswith("D=aftershock/data/cranfield")
                 and "/tmp/my_index" in b)
    serve = next(b for b in all_blocks if kind(b) == "serve")
    curl = next(b for b in all_blocks if kind(b) == "after serve")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    bash(build, env=env)
    with socket_free(8000):
        proc = subprocess.Popen(["bash", "-c", "exec " + serve.replace("\\\n", " ").split("#")[0]], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:8000/health/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "the README's serve command did not start"
                time.sleep(0.3)
            out = bash(curl, env=env).stdout
            assert '"hits"' in out and '"title"' in out
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


class socket_free:
    """Skip when the README's port is taken (another server on this machine)."""

    def __init__(self, port: int):
        self.port = port

    def __enter__(self):
        import socket

        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                pytest.skip(f"port {self.port} of the README's example is in use")
        return self

    def __exit__(self, *exc):
        return False
