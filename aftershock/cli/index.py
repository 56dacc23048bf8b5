"""``aftershock build`` (vectors -> index directory) and ``aftershock search`` (index + queries -> TREC run).
Their Seismic flags are generated from `SeismicConfig` and `SearchParams`."""

from __future__ import annotations

import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from aftershock.cli.common import (PROG, add_config_flags, check_trec_id, fmt_bytes, given, guess_format,
                                   positive_int, vocab_arg)
from aftershock.errors import FormatError
from aftershock.index import FORMATS, SparseBatch, read_vectors
from aftershock.index.store import check_save_target
from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex, load_index

BUILD_FIELDS = [f.name for f in fields(SeismicConfig)]
SEARCH_FIELDS = [f.name for f in fields(SearchParams)]


def add_parsers(sub) -> None:
    b = sub.add_parser("build", help="build an index from a file of sparse vectors",
                       description="Read document vectors and write an index directory.")
    b.add_argument("--input", required=True, help="document vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    b.add_argument("--format", choices=FORMATS, help="input format (default: from the file name)")
    b.add_argument("--ids", help="one document id per line, in row order (for formats without ids)")
    b.add_argument("--dim", type=positive_int, help="vocabulary size (default: from the vocabulary or the data)")
    b.add_argument("--vocab", help="tokenizer.json or vocab.txt: maps JSONL tokens to term ids, stored in the index")
    b.add_argument("--output", required=True, help="index directory to write (an existing index there is replaced "
                   "atomically; anything else needs --overwrite)")
    b.add_argument("--overwrite", action="store_true", help="replace --output even if it is not an Aftershock index")
    b.add_argument("--exact", action="store_true", help="build an exact (exhaustive) index instead of Seismic")
    g = b.add_argument_group("Seismic build parameters (defaults: SeismicConfig)")
    add_config_flags(g, SeismicConfig)
    b.add_argument("--threads", type=int, help="build threads (default: all cores)")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("search", help="search an index and write a TREC run",
                       description="Search every query of a file and write a TREC run file.")
    s.add_argument("--index", required=True, help="index directory written by `aftershock build`")
    s.add_argument("--queries", required=True, help="query vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    s.add_argument("--format", choices=FORMATS, help="query format (default: from the file name)")
    s.add_argument("--query-ids", help="one query id per line, in row order (for formats without ids)")
    s.add_argument("--dim", type=positive_int, help="query dimension for .bin/.npz (default: the index's)")
    s.add_argument("--vocab", help="vocabulary for JSONL queries when the index stores none")
    s.add_argument("--hits", "-k", type=positive_int, default=10, help="results per query (default 10)")
    g = s.add_argument_group("search parameters (SearchParams; an exact index uses only --threads)")
    add_config_flags(g, SearchParams)
    s.add_argument("--batch-size", type=positive_int, default=10000, help="queries per search call (default 10000)")
    s.add_argument("--output", required=True, help="TREC run file to write")
    s.add_argument("--tag", help="run tag in the last column (default aftershock-<index kind>)")
    s.set_defaults(func=cmd_search)


def cmd_build(args) -> int:
    vocab = vocab_arg(args.vocab)
    overrides = given(args, BUILD_FIELDS)
    config = SeismicConfig().with_(**overrides)  # validates every value before the data is read
    check_save_target(args.output, args.overwrite, protect=[args.input, args.ids, args.vocab])  # before the build
    docs = read_vectors(args.input, format=args.format, ids=args.ids, dim=args.dim, vocab=vocab, what="documents",
                        max_terms_per_doc=config.max_terms_per_doc)
    t0 = time.perf_counter()
    if args.exact:
        if set(overrides) - {"max_terms_per_doc"}:
            print(f"{PROG}: note: --exact ignores the Seismic parameters "
                  f"{sorted(set(overrides) - {'max_terms_per_doc'})}", file=sys.stderr)
        index = ExactIndex.build(docs, max_terms_per_doc=config.max_terms_per_doc)
        blocks = "exact"
    else:
        index = SeismicIndex.build(docs, config, threads=args.threads, progress=True)
        blocks = f"{index.n_blocks} blocks"
    build_s = time.perf_counter() - t0
    index.save(args.output, overwrite=args.overwrite, protect=[args.input, args.ids, args.vocab])
    print(f"built {index.kind} index: {len(docs)} docs, nnz {docs.nnz} ({docs.nnz / max(len(docs), 1):.1f}/doc), "
          f"{blocks}, {build_s:.2f} s, {fmt_bytes(index.nbytes())} -> {args.output}")
    return 0


def read_queries(args, index) -> SparseBatch:
    fmt = guess_format(args.queries, args.format)
    if fmt != "jsonl":
        return read_vectors(args.queries, format=fmt, ids=args.query_ids,
                            dim=args.dim if args.dim is not None else index.dim, what="queries")
    vocab = index.vocab if index.vocab is not None else vocab_arg(args.vocab)
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

    params = SearchParams().with_(**given(args, SEARCH_FIELDS))  # validates every value
    index = load_index(args.index, mmap=True)
    queries = read_queries(args, index)
    qids = [check_trec_id(str(q), "query id") for q in queries.ids]
    k = args.hits
    exact = isinstance(index, ExactIndex)
    ignored = sorted(set(given(args, SEARCH_FIELDS)) - {"threads"})
    if exact and ignored:
        print(f"{PROG}: note: an exact index ignores {ignored}", file=sys.stderr)
    n_threads = params.n_threads()
    if len(queries):  # JIT warm-up on one query, so the timing below is steady-state search time
        index.search(queries[:1], k, params)
    tag = args.tag or f"{PROG}-{index.kind}"
    check_trec_id(tag, "run tag")
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
            scores, rows = index.search(batch, k, params)
            search_s += time.perf_counter() - t0
            lines = []
            for qi in range(len(batch)):
                qid = qids[start + qi]
                rank = 0
                for score, row in zip(scores[qi], rows[qi]):
                    if row < 0:
                        continue
                    rank += 1
                    docid = check_trec_id(str(doc_ids[row]), "document id")
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
