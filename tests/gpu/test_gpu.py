"""The CUDA kernels against the CPU: exact search vs ExactIndex (and a float64 reference), blocked search vs
its CPU reference (same arrays, same knobs) and vs exact search when nothing is pruned.

The kernels run in Numba's CUDA simulator, in a subprocess (sim_scenarios.py), on tiny inputs; set
AFTERSHOCK_GPU_TESTS=device to run them on a real GPU instead. Skips when neither works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def sim():
    env = dict(os.environ)
    if env.get("AFTERSHOCK_GPU_TESTS") != "device":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(HERE / "sim_scenarios.py")], env=env, capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    if proc.returncode == 3:
        pytest.skip("no CUDA target: neither a GPU nor Numba's CUDA simulator is available")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def same_ranking(gpu, ref, atol=1e-5):
    """Same ids rank by rank, except where the reference has a near-tie (then the scores must agree)."""
    gs, gi = np.asarray(gpu["scores"]), np.asarray(gpu["ids"])
    rs, ri = np.asarray(ref["scores"]), np.asarray(ref["ids"])
    assert gi.shape == ri.shape
    assert np.array_equal(gi < 0, ri < 0), "different number of results"
    ok = ri >= 0
    np.testing.assert_allclose(gs[ok], rs[ok], rtol=1e-5, atol=atol)
    assert np.all(np.isneginf(gs[~ok]))
    for r in range(ri.shape[0]):
        for j in np.flatnonzero(gi[r] != ri[r]):
            near = np.abs(rs[r] - rs[r, j]) <= atol
            assert near.sum() > 1, f"query {r} rank {j}: gpu id {gi[r, j]} != cpu id {ri[r, j]} (no tie)"


def test_exact_matches_cpu_float32_values(sim):
    e = sim["exact_f32"]
    assert e["value_bytes"] == 4 and e["n_tiles"] == 3
    same_ranking(e["gpu"], e["cpu"])
    ids = np.asarray(e["gpu"]["ids"])
    assert np.array_equal(ids, np.asarray(e["ref"]))  # the float64 scipy ranking
    assert np.all(ids[[0, 2]] == -1)  # the empty query and the query matching nothing
    assert np.all(ids[[1, 3, 4]] >= 0)


def test_exact_matches_cpu_float16_values_and_pads(sim):
    e = sim["exact_f16"]
    assert e["value_bytes"] == 2
    same_ranking(e["gpu"], e["cpu"])
    ids = np.asarray(e["gpu"]["ids"])
    assert 0 < (ids >= 0).sum() < 80  # fewer matches than k: padded with -1 / -inf


@pytest.mark.parametrize("case", [0, 1])
def test_blocked_matches_cpu_reference(sim, case):
    b = sim["blocked"][case]
    same_ranking(b["gpu"], b["ref"])
    gst, rst = np.asarray(b["gpu_stats"]), np.asarray(b["ref_stats"])
    # blocks scored, summary entries, blocks visited, docs rescored, forward entries, postings visited
    assert np.array_equal(gst, rst)
    assert gst[1, 0] > 0 and gst[:, 2].sum() < gst[:, 0].sum()  # blocks are skipped


def test_blocked_without_pruning_is_exact(sim):
    same_ranking(sim["blocked_full"]["gpu"], sim["blocked_full"]["cpu"])


def test_bad_input_raises_clear_errors(sim):
    errs = sim["errors"]
    assert "query_cut=65" in errs["query_cut"] and "ConfigError" in errs["query_cut"]
    assert "first_blocks=0" in errs["first_blocks"]
    assert "n_knn=2" in errs["n_knn"]
    assert "k=0" in errs["k"]
    assert "TermIdOutOfRangeError" in errs["term"]
    assert "limit" in errs["long_query"]
    for name in ("unknown_override", "unknown_override_exact"):
        assert "ConfigError" in errs[name] and "bogus" in errs[name]


def test_gpu_indexes_keep_the_search_contract(sim):
    c = sim["contract"]
    assert c["override_same"] and c["exact_override"]
    names = ("blocks_scored", "summary_entries", "blocks_visited", "docs_scored", "fwd_entries", "postings_visited")
    assert c["stats"] == {name: ["int64", [c["nq"]]] for name in names}
    assert c["exact_stats"] == {}
    assert c["to_cpu"] and c["document"] and c["index_bytes"]
    assert c["info"] == {"exact": "exact-cuda", "seismic": "seismic-cuda"} and c["backend"] == "cuda"


def test_service_engine_serves_a_gpu_index(sim):
    assert sim["engine"] == {"same": True, "kind": "seismic-cuda", "backend": "cuda", "document": True}


def test_no_gpu_raises_backend_unavailable():
    from aftershock.gpu import cuda_available
    from aftershock.seismic import ExactIndex

    if cuda_available():
        pytest.skip("a CUDA target is available in this process")
    from aftershock import SparseBatch
    from aftershock.errors import BackendUnavailableError

    docs = SparseBatch.from_dicts([{1: 1.0}, {2: 0.5}], dim=4)
    with pytest.raises(BackendUnavailableError, match="NUMBA_ENABLE_CUDASIM"):
        ExactIndex.build(docs).to("cuda")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'aftershock\[gpu\]'"):
        ExactIndex.build(docs).to("cuda")
