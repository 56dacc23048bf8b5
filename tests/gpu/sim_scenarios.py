"""Runs the CUDA kernels on tiny inputs and prints the results as JSON (one process, used by test_gpu.py).

Started in a subprocess with NUMBA_ENABLE_CUDASIM=1 (Numba's CUDA simulator) unless a real GPU is wanted:
the simulator must be chosen before numba.cuda is first imported, and it must not leak into the other
tests' process. Exit status 3: no CUDA target (neither a GPU nor the simulator) -> the tests skip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/conftest.py: make_batch, reference_topk

from conftest import make_batch, reference_topk  # noqa: E402

from aftershock import SparseBatch  # noqa: E402
from aftershock.errors import AftershockError  # noqa: E402
from aftershock.gpu import GpuExactIndex, GpuSeismicIndex, cuda_available  # noqa: E402
from aftershock.seismic import ExactIndex, SeismicIndex  # noqa: E402

TPB = 32  # the smallest block the kernels allow: the simulator runs one Python thread per GPU thread


def res(r):
    return {"scores": r.scores.tolist(), "ids": r.ids.tolist()}


def f16(batch: SparseBatch) -> SparseBatch:
    """The same vectors with float16-exact weights (the GPU stores them in 2 bytes)."""
    return SparseBatch.from_arrays(batch.indptr, batch.indices, batch.values.astype(np.float16).astype(np.float32),
                                   ids=batch.ids, dim=batch.dim)


def main() -> int:
    if not cuda_available():
        return 3
    out = {}
    d70 = make_batch(300, 70, 10, seed=3)  # terms 70..79 are in no document
    docs = SparseBatch.from_arrays(d70.indptr, d70.indices, d70.values, ids=d70.ids, dim=80)
    # queries: an empty one (0), one whose only term is in no document (2), three normal ones
    qs = make_batch(5, 80, 6, seed=4)
    rows = [qs.to_dict(i) for i in range(len(qs))]
    rows[0] = {}
    rows[2] = {75: 1.0}
    qs = SparseBatch.from_dicts(rows, dim=80)
    k = 7

    # exact: float32 weights (4-byte values), several tiles, two launches (chunk=3) reusing the merge counters
    ex = ExactIndex.build(docs)
    g = GpuExactIndex(ex, tpb=TPB, tile=128, chunk=3)
    out["exact_f32"] = {"gpu": res(g.search(qs, k)), "cpu": res(ex.search(qs, k)),
                        "ref": reference_topk(docs, qs, k)[1].tolist(), "value_bytes": g.value_bytes,
                        "n_tiles": g.n_tiles}
    # exact: float16-exact weights (2-byte values), k larger than the number of matching docs
    d16 = f16(docs)
    few = SparseBatch.from_dicts([{int(docs.indices[0]): 0.5}], dim=80)
    ex16 = ExactIndex.build(d16)
    g16 = GpuExactIndex(ex16, tpb=TPB, tile=256)
    out["exact_f16"] = {"gpu": res(g16.search(few, 80)), "cpu": res(ex16.search(few, 80)),
                        "value_bytes": g16.value_bytes}

    # blocked: GPU kernel vs its CPU reference on the same arrays, two knob settings
    si = SeismicIndex.build(d16, n_postings=40, centroid_fraction=0.2)
    gs = GpuSeismicIndex(si, tpb=TPB, group=4)
    out["blocked"] = []
    for kw in (dict(query_cut=3, heap_factor=0.8, first_blocks=2), dict(query_cut=2, heap_factor=1.0, first_blocks=1)):
        r = gs.search(qs, k, **kw)
        st = np.stack(list(gs.last_stats.values()), axis=1).tolist()
        ref = gs.reference(qs, k, **kw)
        out["blocked"].append({"kw": kw, "gpu": res(r), "ref": res(ref), "gpu_stats": st,
                               "ref_stats": np.stack(list(gs.last_stats.values()), axis=1).tolist()})
    # blocked with nothing pruned and every block visited == exact search
    full = SeismicIndex.build(d16, pruning="none", centroid_fraction=0.2)
    gf = GpuSeismicIndex(full, tpb=TPB, group=4)
    out["blocked_full"] = {"gpu": res(gf.search(qs, k, query_cut=64, heap_factor=1.0, first_blocks=10**6)),
                           "cpu": res(ex16.search(qs, k))}

    # the search contract: params + overrides == params.with_(overrides); last_stats per-query int64 arrays
    from aftershock.seismic import SearchParams

    p = SearchParams(query_cut=3, heap_factor=0.8)
    a = gs.search(qs, k, p, heap_factor=1.0, first_blocks=2)
    st = gs.last_stats
    b = gs.search(qs, k, p.with_(heap_factor=1.0), first_blocks=2)
    r1, r2 = g.search(qs, k, SearchParams(threads=1), threads=2), g.search(qs, k)
    out["contract"] = {
        "override_same": bool(np.array_equal(a.ids, b.ids) and np.allclose(a.scores, b.scores, rtol=1e-5)),
        "stats": {name: [str(v.dtype), list(v.shape)] for name, v in st.items()}, "nq": len(qs),
        # (atomic adds: the last bits of a score may differ between runs)
        "exact_override": bool(np.array_equal(r1.ids, r2.ids) and np.allclose(r1.scores, r2.scores, rtol=1e-5)),
        "exact_stats": g.last_stats, "to_cpu": gs.to("cpu") is si and g.to("numba") is ex and gs.to("cuda") is gs,
        "info": {name: ix.info()["kind"] for name, ix in (("exact", g), ("seismic", gs))},
        "backend": gs.info()["backend"], "index_bytes": gs.info()["index_bytes"] == gs.nbytes() > 0,
        "document": [np.asarray(x).tolist() for x in gs.document(5)] == [np.asarray(x).tolist()
                                                                         for x in si.document(5)],
    }

    # the service engine drives a GPU index through the same contract (search, document, info)
    from aftershock.service.engine import SearchEngine

    eng = SearchEngine(gs)
    er = eng.search_batch(qs, k, eng.params(3, 0.8, None))
    out["engine"] = {"same": bool(np.array_equal(er.ids, gs.search(qs, k, query_cut=3, heap_factor=0.8).ids)),
                     "kind": eng.info()["kind"], "backend": eng.info()["backend"],
                     "document": eng.document(5)["vector"]["indices"] == si.document(5)[0].tolist()}

    # bad input: clear errors before any kernel runs
    errs = {}
    for name, call in {
        "query_cut": lambda: gs.search(qs, k, query_cut=65),
        "first_blocks": lambda: gs.search(qs, k, first_blocks=0),
        "n_knn": lambda: gs.search(qs, k, n_knn=2),
        "k": lambda: g.search(qs, 0),
        "term": lambda: g.search(SparseBatch.from_dicts([{150: 1.0}], dim=200), k),
        "unknown_override": lambda: gs.search(qs, k, bogus=1),
        "unknown_override_exact": lambda: g.search(qs, k, bogus=1),
        "long_query": lambda: setattr(gs, "MAX_Q", 3) or gs.search(qs, k),
    }.items():
        try:
            call()
            errs[name] = None
        except AftershockError as e:
            errs[name] = f"{type(e).__name__}: {e}"
    out["errors"] = errs
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
