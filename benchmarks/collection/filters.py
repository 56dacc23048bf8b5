"""Filtered search on a collection: in-heap filtering of a Seismic segment vs exact scoring of the allowed rows
vs post-filtering (over-fetch) vs the unfiltered search, per selectivity, on real vectors with synthetic but
realistic metadata. Sets the exact/blocked threshold of `CollectionConfig` (``filter_exact_rows``).

    python benchmarks/collection/filters.py                              # lexicon, 268,640 docs
    python benchmarks/collection/filters.py --n-docs 40000 --queries 200  # a slice, for development

Metadata per document: ``source`` from the id prefix (gcide / wordnet / kjv), ``year`` a random integer in
[1500, 2024], ``tag`` a keyword drawn from 2,000 tags with Zipfian frequencies (s = 1.1). Filters (Qdrant JSON)
are picked to land near the target selectivities, and each row reports the selectivity it really has.

Every strategy runs on the same one-segment collection (one Seismic segment, the collection's default build),
1 thread, interleaved over ``--rounds`` (the minimum is reported: the machine is shared), two ways: all
queries in one call ("batch", what ``aftershock search`` does) and one query per call over the first
``--single`` queries ("single", what the service does). "collection" is the path the default
`CollectionConfig` picks (exact below its threshold, in-heap above). recall@10 is `aftershock.eval.metrics.recall_at_k` against exact filtered search (an `ExactIndex`
over the allowed rows, 20 deep for ties). Prints one JSON object (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "splade-tiny"
K = 10


def metadata(ids: np.ndarray, seed: int) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    n = len(ids)
    source = np.array([str(i).split("-", 1)[0] for i in ids], dtype=object)
    year = rng.integers(1500, 2025, n)
    ranks = np.arange(1, 2001)
    p = ranks ** -1.1
    tag = rng.choice(2000, n, p=p / p.sum())
    md = [{"source": s, "year": int(y), "tag": f"t{t}"} for s, y, t in zip(source, year, tag)]
    return md, {"source": source, "year": year, "tag": tag}


def pick_filters(cols: dict, targets: list[float]) -> list[tuple[float, dict]]:
    """A realistic Qdrant filter near each target selectivity."""
    n = len(cols["year"])
    tag_freq = np.bincount(cols["tag"], minlength=2000) / n
    out = []
    for t in targets:
        if t >= 0.3:  # a year range
            y = int(np.quantile(cols["year"], 1 - t))
            f = {"must": [{"key": "year", "range": {"gte": y}}]}
        elif t >= 0.05:  # the smallest source (kjv ~11 %), else a year window
            kjv = float(np.mean(cols["source"] == "kjv"))
            if abs(kjv - t) / t < 0.3:
                f = {"must": [{"key": "source", "match": {"value": "kjv"}}]}
            else:
                lo = int(np.quantile(cols["year"], 0.3))
                f = {"must": [{"key": "year", "range": {"gte": lo, "lt": lo + int(round(t * 525))}}]}
        elif t >= 0.003:  # one Zipfian tag (or two) close to the target
            j = int(np.argmin(np.abs(tag_freq - t)))
            f = {"must": [{"key": "tag", "match": {"value": f"t{j}"}}]}
        else:  # a tag within a source and a century
            j = int(np.argmin(np.abs(tag_freq - t * 4)))
            f = {"must": [{"key": "tag", "match": {"value": f"t{j}"}}, {"key": "year", "range": {"gte": 1700}}],
                 "must_not": [{"key": "source", "match": {"value": "kjv"}}]}
        out.append((t, f))
    return out


def post_filter(index, queries, k, params, ok, max_fetch=10_000):
    """The peer: search unfiltered with k x n / allowed (x1.2) candidates, keep the allowed ones (no retry)."""
    n, n_ok = len(ok), int(ok.sum())
    fetch = min(n, max_fetch, max(2 * k, int(np.ceil(k * n / n_ok * 1.2))))
    res = index.search(queries, fetch, params)
    keep = (res.ids >= 0) & ok[np.maximum(res.ids, 0)]
    out = np.full((len(queries), k), -1, np.int64)
    for q in range(len(queries)):
        sel = res.ids[q][keep[q]][:k]
        out[q, : sel.size] = sel
    return out


def main(argv=None) -> int:
    from aftershock import Collection, CollectionConfig, ExactIndex, SearchParams
    from aftershock.collection import filter_mask
    from aftershock.collection.search import as_scipy, search_segment
    from aftershock.eval.metrics import recall_at_k
    from aftershock.index import SearchResult, read_ids, read_npz

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="lexicon")
    ap.add_argument("--n-docs", type=int, default=0, help="first N documents (0 = all)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--selectivity", default="0.5,0.1,0.03,0.01,0.003,0.001")
    ap.add_argument("--query-cut", type=int, default=10)
    ap.add_argument("--heap-factor", type=float, default=0.7)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--single", type=int, default=100, help="queries timed one per call")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    docs = read_npz(VECTORS / f"{args.dataset}.docs.npz", ids=read_ids(VECTORS / f"{args.dataset}.docs.ids.txt"))
    if args.n_docs:
        docs = docs[np.random.default_rng(args.seed).permutation(len(docs))[: args.n_docs]]
    qs = read_npz(VECTORS / f"{args.dataset}.queries.npz", dim=docs.dim)
    qs = qs[np.random.default_rng(args.seed + 1).permutation(len(qs))[: args.queries]]
    n = len(docs)
    md, cols = metadata(docs.ids, args.seed)
    params = SearchParams(query_cut=args.query_cut, heap_factor=args.heap_factor, threads=1)
    schema = {"source": "keyword", "year": "integer", "tag": "keyword"}
    out = {"dataset": args.dataset, "docs": n, "queries": len(qs), "k": K, "query_cut": args.query_cut,
           "heap_factor": args.heap_factor, "threads": 1, "rounds": args.rounds, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectionConfig(durability="none", buffer_docs=n + 1, exact_threshold=min(20_000, n // 2))
        c = Collection.create(Path(tmp) / "c", dim=docs.dim, config=cfg, schema=schema)
        t0 = time.perf_counter()
        for a in range(0, n, 20_000):
            c.upsert(docs[a:a + 20_000], metadata=md[a:a + 20_000])
        c.flush()
        out["ingest_and_build_s"] = round(time.perf_counter() - t0, 1)
        (seg, deleted), = c.snapshot().segments
        assert seg.kind == "seismic", seg.kind
        Q = as_scipy(qs, docs.dim)
        blocked = CollectionConfig(filter_exact_rows=0, filter_exact_fraction=0.0)
        exact = CollectionConfig(filter_exact_rows=n, filter_exact_fraction=1.0)
        default = CollectionConfig()
        seg.forward()  # the exact path's CSR, built once (as a served segment keeps it)
        seg.index.search(qs[:4], K, params)  # compile
        search_segment(seg, deleted, np.ones(n, bool), qs[:4], Q[:4], K, params, blocked)
        print(f"{n} docs indexed in {out['ingest_and_build_s']} s", file=sys.stderr)

        def timed(fn):
            t = time.perf_counter()
            r = fn()
            return r, (time.perf_counter() - t) / len(qs) * 1e6

        for t, filt in pick_filters(cols, [float(x) for x in args.selectivity.split(",")]):
            t0 = time.perf_counter()
            ok = filter_mask(filt, c.schema, seg.table, seg.doc_ids)
            mask_ms = (time.perf_counter() - t0) * 1e3
            sub_rows = np.flatnonzero(ok)
            sub = seg.rows(sub_rows)
            truth = ExactIndex.build(sub).search(qs, 2 * K)
            truth = SearchResult(truth.scores, np.where(truth.ids >= 0, sub_rows[np.maximum(truth.ids, 0)], -1))
            strategies = {
                "unfiltered": lambda b, B: seg.index.search(b, K, params).ids,
                "in_heap": lambda b, B: search_segment(seg, deleted, ok, b, B, K, params, blocked)[1],
                "exact_allowed": lambda b, B: search_segment(seg, deleted, ok, b, B, K, params, exact)[1],
                "post_filter": lambda b, B: post_filter(seg.index, b, K, params, ok),
                "collection": lambda b, B: search_segment(seg, deleted, ok, b, B, K, params, default)[1]}
            us = {name: [] for name in strategies}
            single = {name: [] for name in strategies if name != "post_filter"}
            got = {}
            ns = min(args.single, len(qs))
            for _ in range(args.rounds):
                for name, fn in strategies.items():
                    got[name], u = timed(lambda: fn(qs, Q))
                    us[name].append(u)
                    if name in single:
                        t1 = time.perf_counter()
                        for i in range(ns):
                            fn(qs[i:i + 1], Q[i:i + 1])
                        single[name].append((time.perf_counter() - t1) / ns * 1e6)
            row = {"target": t, "selectivity": round(float(ok.mean()), 5), "allowed": int(ok.sum()),
                   "filter": filt, "mask_ms": round(mask_ms, 2)}
            for name in us:
                row[f"{name}_us"] = round(min(us[name]), 1)
                if name in single:
                    row[f"{name}_single_us"] = round(min(single[name]), 1)
                if name != "unfiltered":
                    row[f"{name}_recall@10"] = round(recall_at_k(truth, got[name], K), 4)
            for mode in ("", "_single"):
                row[f"in_heap_over_unfiltered{mode}"] = round(row[f"in_heap{mode}_us"] / row[f"unfiltered{mode}_us"], 3)
                row[f"in_heap_over_exact_allowed{mode}"] = round(row[f"in_heap{mode}_us"]
                                                                 / row[f"exact_allowed{mode}_us"], 3)
                row[f"collection_over_unfiltered{mode}"] = round(row[f"collection{mode}_us"]
                                                                 / row[f"unfiltered{mode}_us"], 3)
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
        full = ExactIndex.build(seg.rows(np.arange(n))).search(qs, 2 * K)
        out["unfiltered_recall@10"] = round(recall_at_k(full, seg.index.search(qs, K, params).ids, K), 4)
        out["crossover_batch"] = crossover(out["rows"], "")
        out["crossover_single"] = crossover(out["rows"], "_single")
        out["default_config"] = {f: getattr(default, f) for f in ("filter_exact_rows", "filter_exact_fraction")}
        c.close()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


def crossover(rows: list[dict], mode: str) -> dict | None:
    """The selectivity where exact scoring of the allowed rows becomes as slow as the in-heap search
    (log-linear interpolation between the two measured rows around it)."""
    pts = sorted((r["selectivity"], r[f"in_heap_over_exact_allowed{mode}"]) for r in rows)
    for (s0, r0), (s1, r1) in zip(pts, pts[1:]):
        if r0 >= 1.0 >= r1:  # exact is faster below, in-heap above
            w = 0.0 if r0 == r1 else (np.log(r0) - 0.0) / (np.log(r0) - np.log(r1))
            s = float(np.exp(np.log(s0) + w * (np.log(s1) - np.log(s0))))
            return {"selectivity": round(s, 5), "between": [s0, s1]}
    return None


if __name__ == "__main__":
    raise SystemExit(main())
