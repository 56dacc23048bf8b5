"""`aftershock serve` as a real uvicorn process on 127.0.0.1, the CLI's errors, and text search through the
real `aftershock.lsr.load_encoder` (skipped until that module exists)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from aftershock.cli import main

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(index_dir, titles_tsv):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "aftershock", "serve", "--index", str(index_dir), "--port",
                             str(port), "--documents", str(titles_tsv), "--max-k", "50"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}): {proc.stdout.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("server not ready after 180 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_real_server_searches_like_in_process(server, seismic_index, cranfield):
    _, queries = cranfield
    idx, val = queries.row(11)
    with httpx.Client(base_url=server, timeout=30) as c:
        r = c.post("/search", json={"query": {"indices": idx.tolist(), "values": val.tolist()}, "k": 5,
                                    "return_documents": True})
        assert r.status_code == 200, r.text
        res = seismic_index.search(queries[11:12], 5)
        assert [h["id"] for h in r.json()["hits"]] == [str(seismic_index.doc_ids[j]) for j in res.ids[0]]
        assert r.json()["hits"][0]["document"]["text"]
        bad = c.post("/search", json={"query": {"indices": idx.tolist(), "values": val.tolist()}, "k": 51})
        assert bad.status_code == 422 and "max_k=50" in bad.json()["message"]
        assert c.get("/info").json()["n_docs"] == 1400
        assert "aftershock_http_requests_total" in c.get("/metrics").text


def test_slow_request_does_not_block_others(server, cranfield):
    """A big batch search runs in the thread pool (kernels release the GIL): /health answers meanwhile."""
    _, queries = cranfield
    items = [{"indices": queries.row(i)[0].tolist(), "values": queries.row(i)[1].tolist()} for i in range(225)]
    done = threading.Event()
    answered_during = []
    search_ms = []

    def big():
        try:
            with httpx.Client(base_url=server, timeout=120) as c:
                r = c.post("/search/batch", json={"queries": items + items[:31], "k": 1, "heap_factor": 0.05,
                                                  "query_cut": 200})
                search_ms.append((r.status_code, r.json()["timing"]["search_ms"] if r.status_code == 200 else r.text))
        finally:
            done.set()

    t = threading.Thread(target=big)
    t.start()
    with httpx.Client(base_url=server, timeout=120) as c:
        while not done.is_set():
            r = c.get("/health/live")
            if not done.is_set():
                answered_during.append(r.status_code)
    t.join()
    # one search call of the whole batch (k=1: searching dominates the request)
    assert search_ms and search_ms[0][0] == 200, search_ms
    assert len(answered_during) >= 5 and set(answered_during) == {200}, (len(answered_during), search_ms)


def test_search_kernels_release_the_gil():
    """The service searches in worker threads; with the GIL held, a search would stall the event loop."""
    from aftershock.seismic import kernels as K

    for kernel in (K.seismic_search_serial, K.seismic_search_batch, K.exact_search_batch):
        assert kernel.targetoptions.get("nogil") is True, kernel


def test_cli_serve_reports_bad_index_and_model(tmp_path, capsys, index_dir):
    assert main(["serve", "--index", str(tmp_path / "missing")]) == 2
    assert "is not an index directory" in capsys.readouterr().err
    assert main(["serve", "--index", str(index_dir), "--model", str(tmp_path / "nomodel")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["serve", "--index", str(index_dir), "--api-key-env", "AFTERSHOCK_TEST_UNSET_KEY"]) == 2
    assert "unset or empty" in capsys.readouterr().err


SPLADE_TINY = REPO / ".." / "shared" / "models" / "splade-tiny"


@pytest.mark.skipif(not SPLADE_TINY.exists(), reason=f"{SPLADE_TINY} is absent (a model outside the package)")
def test_text_search_with_the_real_encoder(index_dir, seismic_index):
    """End to end with aftershock.lsr.load_encoder and a model directory given by path."""
    pytest.importorskip("aftershock.lsr")
    from aftershock.lsr import load_encoder
    from fastapi.testclient import TestClient

    from aftershock.service import build_app

    model = SPLADE_TINY
    app = build_app(index_dir, model=model)
    text = "what is the lift of a delta wing"
    with TestClient(app) as c:
        deadline = time.time() + 120
        while c.get("/health/ready").status_code != 200 and time.time() < deadline:
            time.sleep(0.05)
        assert c.get("/info").json()["encoder"]
        r = c.post("/search", json={"query": text, "k": 5})
        assert r.status_code == 200, r.text
    q = load_encoder(str(model), device="cpu").encode_queries([text])
    res = seismic_index.search(q, 5)
    assert [h["id"] for h in r.json()["hits"]] == [str(seismic_index.doc_ids[j]) for j in res.ids[0] if j >= 0]


def test_default_model_serves_text_queries_without_torch_model(index_dir, seismic_index):
    """With no --model the shipped model's query side (tokenizer + IDF, no torch forward) encodes text."""
    pytest.importorskip("transformers")
    from fastapi.testclient import TestClient

    from aftershock.lsr import StaticEncoder, load_query_encoder
    from aftershock.service import build_app

    enc = load_query_encoder("default")
    assert isinstance(enc, StaticEncoder)
    app = build_app(index_dir)  # model="default"
    text = "what is the lift of a delta wing"
    with TestClient(app) as c:
        info = c.get("/info").json()
        assert info["encoder"] == "default"
        r = c.post("/search", json={"query": text, "k": 5})
        assert r.status_code == 200, r.text
    res = seismic_index.search(enc.encode_queries([text]), 5)
    assert [h["id"] for h in r.json()["hits"]] == [str(seismic_index.doc_ids[j]) for j in res.ids[0] if j >= 0]


def test_default_model_is_skipped_when_its_vocabulary_does_not_fit(tmp_path, caplog):
    import numpy as np

    from aftershock.index import SparseBatch
    from aftershock.seismic import ExactIndex
    from aftershock.service import build_app

    docs = SparseBatch.from_dense(np.eye(4, 100, dtype=np.float32), ids=[f"d{i}" for i in range(4)])
    ExactIndex.build(docs).save(tmp_path / "small")
    with caplog.at_level("WARNING", logger="aftershock.service"):
        app = build_app(tmp_path / "small")
    assert "dim is 100" in caplog.text
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        r = c.post("/search", json={"query": "anything", "k": 2})
        assert r.status_code == 422 and r.json()["error"] == "no_encoder"
