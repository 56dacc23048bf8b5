"""Time hybrid search on real data (SciFact): µs per text query (encoding + exact search + fusion) of BM25
alone, the learned model alone, the two one after the other then fused (``seq+fuse``), `HybridSearcher`
(``threads``: both sides on parallel threads) and `StackedHybridSearcher` (``stacked``: one index over both
vocabularies, one search call for both sides). Every mode runs in the same process, interleaved over
``--rounds`` rounds (median kept), so the ratios to ``sum`` = bm25 + learned survive a loaded machine.

    python benchmarks/hybrid_search.py --data ../shared/data/scifact --model default --rounds 5 \
        --json benchmarks/out/hybrid_search.json

Two regimes: ``single`` (one query per call, one thread per search: a service answering one request) and
``batch`` (all queries in one call, searches over all cores). Only query texts are used (no qrels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aftershock.eval.beir import load_beir  # noqa: E402
from aftershock.eval.effectiveness import read_stored, write_stored  # noqa: E402
from aftershock.index.fusion import FusionParams, HybridSearcher, StackedHybridSearcher, fuse  # noqa: E402
from aftershock.lsr import BM25, load_encoder  # noqa: E402
from aftershock.seismic import ExactIndex, SearchParams  # noqa: E402


def build(ds, model: str, vectors_dir, log, query_model=None):
    log(f"BM25 over {len(ds.doc_ids)} documents")
    bm25 = BM25().fit(ds.doc_texts)
    lex_docs = bm25.encode_documents(ds.doc_texts, ids=ds.doc_ids)
    enc = load_encoder(model, progress=False)
    name = Path(model).name or model
    docs = read_stored(vectors_dir, name, ds, "docs", ds.doc_ids, enc.dim)
    if docs is None:
        log(f"{model}: encode {len(ds.doc_ids)} documents (CPU)")
        docs = enc.encode_documents(ds.doc_texts, ids=ds.doc_ids)
        if vectors_dir:
            write_stored(vectors_dir, name, ds, docs)
    if query_model:
        from aftershock.lsr import load_query_encoder

        enc = load_query_encoder(query_model)
        if enc.dim != docs.dim:
            raise SystemExit(f"--query-model {query_model} has dim {enc.dim}, the documents {docs.dim}")
    return (bm25, lex_docs), (enc, docs)


def one(system, texts, depth, params):
    enc, idx = system
    return idx.search(enc.encode_queries(texts), depth, params)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/scifact", help="a BEIR folder (default SciFact)")
    p.add_argument("--model", default="default", help="the learned system (default: the shipped model)")
    p.add_argument("--query-model", help="encode the queries with this model's query side instead (e.g. "
                   "'default', inference-free, over --model's document vectors of the same vocabulary)")
    p.add_argument("--split", default="test", help="whose query texts to time (qrels are not used)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--depth", type=int, default=100, help="hits per side fused (default 100, the service default)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-queries", type=int, default=300)
    p.add_argument("--max-docs", type=int, help="only the first N documents (a quick check)")
    p.add_argument("--vectors-dir", help="the model's SciFact document vectors, as `aftershock eval --vectors-dir` "
                   "stores them (encoded and stored there when absent)")
    p.add_argument("--json", help="write the timings here")
    args = p.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    ds = load_beir(args.data, split=args.split, max_docs=args.max_docs)
    texts = ds.query_texts[: args.max_queries]
    (bm25, lex_docs), (enc, docs) = build(ds, args.model, args.vectors_dir, log, args.query_model)
    lex, lrn = (bm25, ExactIndex.build(lex_docs)), (enc, ExactIndex.build(docs))
    fp = FusionParams(depth=args.depth)
    hs = HybridSearcher([lex, lrn], fp, concurrent=True)
    st = StackedHybridSearcher([bm25, enc], [lex_docs, docs], ExactIndex.build, fp)
    w = fp.weights(2)

    single = SearchParams(threads=1)
    modes = {
        "single": {
            "bm25": lambda: [one(lex, [t], args.depth, single) for t in texts],
            "learned": lambda: [one(lrn, [t], args.depth, single) for t in texts],
            "sequential+fuse": lambda: [fuse([one(lex, [t], args.depth, single), one(lrn, [t], args.depth, single)],
                                             "convex", w, args.k) for t in texts],
            "threads": lambda: [hs.search([t], args.k, single) for t in texts],
            "stacked": lambda: [st.search([t], args.k, single) for t in texts],
        },
        "batch": {
            "bm25": lambda: one(lex, texts, args.depth, None),
            "learned": lambda: one(lrn, texts, args.depth, None),
            "sequential+fuse": lambda: fuse([one(lex, texts, args.depth, None), one(lrn, texts, args.depth, None)],
                                            "convex", w, args.k),
            "threads": lambda: hs.search(texts, args.k),
            "stacked": lambda: st.search(texts, args.k),
        },
    }
    for regime in modes.values():  # warm-up: compile kernels, fill caches
        for fn in regime.values():
            fn()
    # the hybrid answers are the sequential ones
    a = modes["batch"]["sequential+fuse"]()
    for m in ("threads", "stacked"):
        assert np.array_equal(a.ids, modes["batch"][m]().ids), f"{m} differs from fusing the two searches"
    times = {r: {m: [] for m in ms} for r, ms in modes.items()}
    for rnd in range(args.rounds):
        for r, ms in modes.items():
            for m, fn in ms.items():
                t0 = time.perf_counter()
                fn()
                times[r][m].append((time.perf_counter() - t0) / len(texts) * 1e6)
        log(f"round {rnd + 1}/{args.rounds}")
    out = {"command": " ".join(sys.argv), "dataset": ds.name, "n_docs": len(ds.doc_ids), "n_queries": len(texts),
           "k": args.k, "depth": args.depth, "model": args.model, "query_model": args.query_model,
           "cpus": os.cpu_count(),
           "load_avg": os.getloadavg(), "us_per_query": {}}
    print(f"{'regime':<8} {'bm25':>8} {'learned':>8} {'sum':>8} {'seq+fuse':>9} {'threads':>8} {'stacked':>8} "
          f"{'threads/sum':>12} {'stacked/sum':>12}")
    for r in modes:
        med = {m: float(np.median(v)) for m, v in times[r].items()}
        total = med["bm25"] + med["learned"]
        med["sum"] = total
        med["ratio_threads_to_sum"], med["ratio_stacked_to_sum"] = med["threads"] / total, med["stacked"] / total
        out["us_per_query"][r] = med
        print(f"{r:<8} {med['bm25']:>8.0f} {med['learned']:>8.0f} {total:>8.0f} {med['sequential+fuse']:>9.0f} "
              f"{med['threads']:>8.0f} {med['stacked']:>8.0f} {med['ratio_threads_to_sum']:>12.2f} "
              f"{med['ratio_stacked_to_sum']:>12.2f}")
    print(f"µs per query, median of {args.rounds} rounds; {len(texts)} {ds.name} queries, {len(ds.doc_ids)} docs, "
          f"k={args.k}, depth={args.depth}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    hs.close()
    st.close()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
