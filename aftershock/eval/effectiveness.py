"""Effectiveness evaluation: encode a dataset with several systems, search an exact (and optionally
a Seismic) index, score the runs with ir-measures, write TREC runs and a JSON summary.

``aftershock eval --dataset DIR --systems bm25,/path/to/model`` (``--help`` lists the options). A
system is a built-in name (``bm25``; ``bm25s`` runs the bm25s library itself as a reference peer) or
anything `aftershock.lsr.load_encoder` accepts (model directories, ``idf:DIR``, ``binary:DIR``), or a
hybrid ``A+B[:convex[=W]|:rrf[=K]]`` of two of them (``bm25+default``; `aftershock.eval.hybrid`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aftershock.errors import ConfigError, FormatError
from aftershock.eval.beir import Dataset, load_beir
from aftershock.eval.metrics import recall_at_k
from aftershock.index import SparseBatch, read_vectors, write_ids, write_vectors

MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")
LABELS = {"nDCG@10": "nDCG@10", "RR@10": "MRR@10", "R@100": "R@100", "R@1000": "R@1000"}
PEERS = ("bm25s",)


def flops(queries: SparseBatch, docs: SparseBatch) -> float:
    """Expected number of multiply-adds per query-document pair (Formal et al.):
    sum over terms of P(term in query) * P(term in document)."""
    dim = max(queries.dim, docs.dim)
    pq = np.bincount(queries.indices[queries.values > 0], minlength=dim) / max(len(queries), 1)
    pd = np.bincount(docs.indices[docs.values > 0], minlength=dim) / max(len(docs), 1)
    return float(pq @ pd)


def to_run(result, qids, doc_ids) -> dict[str, dict[str, float]]:
    run = {}
    for qi, qid in enumerate(qids):
        rows, scores = result.ids[qi], result.scores[qi]
        ok = rows >= 0
        run[qid] = {str(doc_ids[r]): float(s) for r, s in zip(rows[ok], scores[ok])}
    return run


def score_run(run, qrels, measures=MEASURES) -> dict[str, float]:
    """ir-measures' aggregate of ``measures`` (default `MEASURES`); raises ImportError without ir-measures."""
    import ir_measures

    measures = [ir_measures.parse_measure(m) for m in measures]
    agg = ir_measures.calc_aggregate(measures, qrels, run)  # judged queries missing from the run count as 0
    return {LABELS.get(str(m), str(m)): float(agg.get(m, 0.0)) for m in measures}


def write_trec(run, path, tag: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            for rank, (d, s) in enumerate(sorted(docs.items(), key=lambda x: (-x[1], x[0])), 1):
                f.write(f"{qid} Q0 {d} {rank} {s:.6f} {tag}\n")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_bm25s(ds: Dataset, k: int) -> dict:
    """The bm25s library end to end (Lucene variant, English stopwords, Snowball stemmer): the peer."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    retriever = bm25s.BM25(method="lucene")
    retriever.index(bm25s.tokenize(ds.doc_texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    qtok = bm25s.tokenize(ds.query_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = retriever.retrieve(qtok, k=min(k, len(ds.doc_ids)), show_progress=False, n_threads=1)
    search_s = time.perf_counter() - t0
    run = {}
    for qi, qid in enumerate(ds.query_ids):
        run[qid] = {ds.doc_ids[d]: float(s) for d, s in zip(docs[qi], scores[qi]) if s > 0}
    return {"run": run, "encode_s": enc_s, "search_s": search_s}


def read_stored(vectors_dir, name: str, ds: Dataset, part: str, ids: list[str], dim: int):
    """``vectors_dir/<name>/<dataset>.<part>.npz`` (+ ``.ids.txt``) as a batch in the order of ``ids``, or None
    when absent; the stored ids must hold every one of ``ids`` (else the file is stale: FormatError)."""
    if vectors_dir is None:
        return None
    path = Path(vectors_dir) / name / f"{ds.name}.{part}.npz"
    id_path = path.with_name(f"{ds.name}.{part}.ids.txt")
    if not (path.is_file() and id_path.is_file()):
        return None
    stored = read_vectors(path, ids=id_path, dim=dim, what=part)
    where = {str(d): i for i, d in enumerate(stored.ids)}
    missing = [d for d in ids if d not in where]
    if missing:
        raise FormatError(f"{path} lacks {len(missing)} of the dataset's {part} (e.g. {missing[0]!r}); it was made "
                          "from another corpus: delete it or pass another --vectors-dir")
    out = stored[np.array([where[d] for d in ids], np.int64)]
    return out


def write_stored(vectors_dir, name: str, ds: Dataset, docs: SparseBatch) -> None:
    folder = Path(vectors_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ds.name}.docs.tmp.npz"
    write_vectors(docs, tmp, format="npz")
    write_ids(docs.ids, folder / f"{ds.name}.docs.ids.txt")
    tmp.replace(folder / f"{ds.name}.docs.npz")


def _exact_system(ds: Dataset, system: str, k: int, encoder_kwargs, threads, stage, vectors_dir=None) -> tuple:
    """Encode ``ds`` with ``system`` and search it exactly: (row, exact result, index, docs, queries).

    ``vectors_dir``: document (and query) vectors of a model system are read from
    ``vectors_dir/<model name>/<dataset>.{docs,queries}.npz`` + ``.ids.txt`` (the layout of
    ../shared/vectors) when there, and encoded documents are written there for the next run."""
    from aftershock.lsr import BM25, load_encoder
    from aftershock.seismic import ExactIndex, SearchParams

    name = Path(system).name or system
    row = {"dataset": ds.name, "system": system, "index": "exact", "n_docs": len(ds.doc_ids),
           "n_queries": len(ds.query_ids)}
    enc = load_encoder(system, **(encoder_kwargs or {})) if system != "bm25" else BM25()
    cache = None if isinstance(enc, BM25) else vectors_dir
    stage(f"{ds.name} {name}: encode {len(ds.doc_ids)} documents")
    t0 = time.perf_counter()
    if isinstance(enc, BM25):
        enc.fit(ds.doc_texts)
    docs = read_stored(cache, name, ds, "docs", ds.doc_ids, enc.dim)
    if docs is None:
        docs = enc.encode_documents(ds.doc_texts, ids=ds.doc_ids)
        if cache is not None:
            write_stored(cache, name, ds, docs)
    else:
        row["doc_vectors"] = str(Path(cache) / name)
    row["encode_docs_s"] = time.perf_counter() - t0
    stage(f"{ds.name} {name}: encode {len(ds.query_ids)} queries")
    t0 = time.perf_counter()
    queries = read_stored(cache, name, ds, "queries", ds.query_ids, enc.dim)
    if queries is None:
        queries = enc.encode_queries(ds.query_texts, ids=ds.query_ids)
    row["encode_queries_s"] = time.perf_counter() - t0
    row.update(dim=docs.dim, nnz_per_query=queries.nnz / max(len(queries), 1),
               nnz_per_doc=docs.nnz / max(len(docs), 1), flops=flops(queries, docs))
    kk = min(k, len(docs))
    stage(f"{ds.name} {name}: exact search of {len(queries)} queries (k={kk}) over {len(docs)} documents")
    index = ExactIndex.build(docs)
    t0 = time.perf_counter()
    exact = index.search(queries, kk, SearchParams(threads=threads))
    row["search_s"] = time.perf_counter() - t0
    return row, exact, index, docs, queries


def evaluate(ds: Dataset, systems: list[str], k: int = 1000, approx: bool = False, out_dir=None,
             encoder_kwargs: dict | None = None, threads: int | None = None, log=print,
             stage=None, vectors_dir=None) -> list[dict]:
    """Evaluate each system on ``ds``; returns one row (dict) per system (and per index kind).

    A system ``A+B[:convex[=W]|:rrf[=K]]`` fuses A and B per query (`aftershock.eval.hybrid`); each
    component is encoded and searched once per dataset, whether listed on its own or not.
    ``stage(line)`` (optional) is told each stage as it starts (encoding, search, scoring), so a long
    run is never silent; the encoders' own bars (``progress=True`` in ``encoder_kwargs``) show the encoding."""
    from aftershock.eval.hybrid import fused_row, name_of, parse_hybrid
    from aftershock.seismic import SearchParams, SeismicConfig, SeismicIndex

    stage = stage or (lambda line: None)
    rows = []
    done: dict = {}  # system -> (row, exact result): the components of hybrids, searched once

    def component(system):
        if system not in done:
            row, exact, *_ = _exact_system(ds, system, k, encoder_kwargs, threads, stage, vectors_dir)
            done[system] = (dict(row), exact)
        return done[system]

    for system in systems:
        name = name_of(system)
        parts = parse_hybrid(system)
        if parts is not None:
            for part in parts[:2]:
                component(part)
            stage(f"{ds.name} {name}: fuse and score")
            row, fused = fused_row(ds, system, parts, done, min(k, len(ds.doc_ids)))
            run = to_run(fused, ds.query_ids, ds.doc_ids)
            row.update(score_run(run, ds.qrels))
            runs = {"exact": run}
        elif system in PEERS:
            row = {"dataset": ds.name, "system": system, "index": "bm25s", "n_docs": len(ds.doc_ids),
                   "n_queries": len(ds.query_ids)}
            stage(f"{ds.name} {name}: index {len(ds.doc_ids)} documents, search {len(ds.query_ids)} queries")
            res = run_bm25s(ds, k)
            row.update(encode_docs_s=res["encode_s"], search_s=res["search_s"], **score_run(res["run"], ds.qrels))
            runs = {"bm25s": res["run"]}
        else:
            row, exact, index, docs, queries = _exact_system(ds, system, k, encoder_kwargs, threads, stage,
                                                             vectors_dir)
            done[system] = (dict(row), exact)
            kk = min(k, len(docs))
            stage(f"{ds.name} {name}: score")
            run = to_run(exact, ds.query_ids, index.doc_ids)
            row.update(score_run(run, ds.qrels))
            runs = {"exact": run}
            if approx:
                arow = dict(row, index="seismic")
                stage(f"{ds.name} {name}: build a Seismic index and search it")
                t0 = time.perf_counter()
                sidx = SeismicIndex.build(docs, SeismicConfig(), threads=threads)
                arow["build_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = sidx.search(queries, kk, SearchParams(threads=threads))
                arow["search_s"] = time.perf_counter() - t0
                arun = to_run(res, ds.query_ids, sidx.doc_ids)
                arow.update(score_run(arun, ds.qrels), recall10_vs_exact=recall_at_k(exact, res, 10))
                runs["seismic"] = arun
        for kind, run in runs.items():
            r = row if kind in ("exact", "bm25s") else arow
            if out_dir is not None:
                path = Path(out_dir) / f"{_safe(ds.name)}.{_safe(name)}.{kind}.trec"
                write_trec(run, path, tag=_safe(f"{name}-{kind}"))
                r["run_file"] = str(path)
            rows.append(r)
            log(format_row(r))
    return rows


HEADER = (f"{'dataset':<12} {'system':<28} {'index':<7} {'nDCG@10':>7} {'MRR@10':>7} {'R@100':>6} {'R@1000':>6} "
          f"{'nnz/q':>6} {'nnz/d':>6} {'FLOPS':>7} {'enc s':>6}")


def format_row(r: dict) -> str:
    from aftershock.eval.hybrid import name_of

    name = name_of(r["system"])
    f = lambda key, fmt: format(r[key], fmt) if key in r else "-"  # noqa: E731
    return (f"{r['dataset'][:12]:<12} {name[:28]:<28} {r['index']:<7} {r['nDCG@10']:>7.3f} {r['MRR@10']:>7.3f} "
            f"{r['R@100']:>6.3f} {r['R@1000']:>6.3f} {f('nnz_per_query', '.1f'):>6} {f('nnz_per_doc', '.1f'):>6} "
            f"{f('flops', '.2f'):>7} {r.get('encode_docs_s', 0):>6.1f}")


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="aftershock eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, action="append",
                   help="BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv) or a cached ir_datasets "
                        "id; repeat or comma-separate for several")
    p.add_argument("--systems", required=True,
                   help="comma list: bm25, bm25s (the bm25s library as a peer), default (the shipped model), model "
                        "directories, idf:DIR, binary:DIR, and hybrids A+B[:convex[=W]|:rrf[=K]] (e.g. "
                        "bm25+default, bm25+default:rrf; W = the weight of B); all are checked before the first "
                        "one runs")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--k", type=int, default=1000, help="results per query (default 1000, for R@1000)")
    p.add_argument("--approx", action="store_true", help="also search a Seismic index (default SeismicConfig)")
    p.add_argument("--output-dir", help="write TREC run files and results.json here")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (model encoders)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="model encoders: auto = bf16 autocast on GPU, "
                   "fp32 on CPU; bf16 on CPU is faster where the CPU has AVX512-BF16, vectors within ~2%% L2 of "
                   "fp32 (benchmarks/RESULTS.md, CPU encoding)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch size (default 32)")
    p.add_argument("--query-max-length", type=int, help="query max length in tokens (default: the model's)")
    p.add_argument("--doc-max-length", type=int, help="document max length in tokens (default: the model's)")
    p.add_argument("--threads", type=int, help="search threads (default: all cores)")
    p.add_argument("--vectors-dir", help="read a model's document (and query) vectors from DIR/<model name>/"
                   "<dataset>.{docs,queries}.npz + .ids.txt when there (the layout of ../shared/vectors), and write "
                   "the documents it encodes there; one folder per model name")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines on stderr (by "
                   "default each stage is named as it starts and encoding shows a bar with a total and ETA)")
    return p


def main(argv=None, args=None) -> int:
    if args is None:
        args = build_parser().parse_args(argv)
    if args.k < 1:
        raise ConfigError(f"--k {args.k} must be >= 1")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems:
        raise ConfigError("--systems is empty; give e.g. bm25,/path/to/splade-model")
    datasets = [d.strip() for arg in args.dataset for d in arg.split(",") if d.strip()]
    kw = {"device": args.device, "batch_size": args.batch_size, "query_max_length": args.query_max_length,
          "doc_max_length": args.doc_max_length, "dtype": args.dtype,
          "progress": not args.no_progress}
    kw = {k: v for k, v in kw.items() if v is not None}
    print(HEADER)
    print("-" * len(HEADER))
    rows = []
    for d in datasets:
        if not args.no_progress:
            print(f"{d}: loading", file=sys.stderr, flush=True)
        ds = load_beir(d, split=args.split)
        rows += evaluate(ds, systems, k=args.k, approx=args.approx, out_dir=args.output_dir, encoder_kwargs=kw,
                         threads=args.threads, log=lambda line: print(line, flush=True),
                         vectors_dir=args.vectors_dir,
                         stage=None if args.no_progress else lambda line: print(line, file=sys.stderr, flush=True))
    payload = json.dumps({"command": " ".join(sys.argv), "results": rows}, indent=2)
    for target in filter(None, [args.json, args.output_dir and str(Path(args.output_dir) / "results.json")]):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(payload, encoding="utf-8")
    return 0
