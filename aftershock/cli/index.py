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
from aftershock.cli.output import atomic_output, clamp_threads, compiling_notice, kernels_cold
from aftershock.errors import ConfigError, FormatError
from aftershock.index import FORMATS, SparseBatch, read_vectors
from aftershock.index.store import check_save_target
from aftershock.index.text import reading
from aftershock.seismic import ExactIndex, SearchParams, SeismicConfig, SeismicIndex, load_index

BUILD_FIELDS = [f.name for f in fields(SeismicConfig)]
SEARCH_FIELDS = [f.name for f in fields(SearchParams)]


def add_id_flags(parser, flag: str, what: str) -> None:
    """``flag`` FILE (the ids of a vector file, one per line) and ``--row-ids``; `require_ids` checks them."""
    parser.add_argument(flag, help=f"one {what} id per line, in row order (required for .bin/.npz, which hold no "
                        "ids, unless --row-ids)")
    parser.add_argument("--row-ids", action="store_true", help=f"use row numbers 0..n-1 as {what} ids (only for "
                        "files without ids; right only when your qrels use row numbers)")


def add_parsers(sub) -> None:
    b = sub.add_parser("build", help="build an index from a file of sparse vectors",
                       description="Read document vectors and write an index directory.")
    b.add_argument("--input", required=True, help="document vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    b.add_argument("--format", choices=FORMATS, help="input format (default: from the file name)")
    add_id_flags(b, "--ids", "document")
    b.add_argument("--dim", type=positive_int, help="vocabulary size (default: the vocabulary's, the file's, "
                   "else the largest term id + 1, which is reported)")
    b.add_argument("--vocab", help="tokenizer.json, vocab.txt or vocab.json of the model that made the vectors: "
                   "maps JSONL tokens to term ids and is stored in the index (needed for token and text queries)")
    b.add_argument("--output", required=True, help="index directory to write (an existing index there is replaced "
                   "atomically; anything else needs --overwrite)")
    b.add_argument("--overwrite", action="store_true", help="replace --output even if it is not an Aftershock index")
    b.add_argument("--exact", action="store_true", help="build an exact (exhaustive) index instead of Seismic")
    g = b.add_argument_group("Seismic build parameters (defaults: SeismicConfig)")
    add_config_flags(g, SeismicConfig)
    b.add_argument("--threads", type=int, help="build threads (default: all cores)")
    b.set_defaults(func=cmd_build)
    # --- sharded build on Ray: --shards / --ray / --model (aftershock.cli.cluster) ---
    from aftershock.cli.cluster import add_build_flags

    add_build_flags(b)
    # --- end of the cluster block ---

    s = sub.add_parser("search", help="search an index and write a TREC run",
                       description="Search every query of a file and write a TREC run file.")
    s.add_argument("--index", required=True, help="index directory written by `aftershock build`, or a collection "
                   "directory (`aftershock collection create`; the run then holds its external ids)")
    s.add_argument("--queries", required=True, help="query vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    s.add_argument("--format", choices=FORMATS, help="query format (default: from the file name)")
    add_id_flags(s, "--query-ids", "query")
    s.add_argument("--dim", type=positive_int, help="query dimension for .bin/.npz (default: the file's, else the "
                   "largest term id + 1; term ids must be below the index's dim)")
    s.add_argument("--vocab", help="vocabulary for JSONL queries when the index stores none")
    s.add_argument("--hits", "-k", type=positive_int, default=10, help="results per query (default 10)")
    g = s.add_argument_group("search parameters (SearchParams; an exact index uses only --threads)")
    add_config_flags(g, SearchParams)
    s.add_argument("--batch-size", type=positive_int, default=10000, help="queries per search call (default 10000)")
    s.add_argument("--output", required=True, help="TREC run file to write (replaced only when the search "
                   "succeeds)")
    s.add_argument("--tag", help="run tag in the last column (default aftershock-<index kind>)")
    s.add_argument("--filter", help="Qdrant-shaped metadata filter (JSON text or a .json file), e.g. "
                   "'{\"must\": [{\"key\": \"year\", \"range\": {\"gte\": 1950}}]}'; needs a collection as --index")
    s.set_defaults(func=cmd_search)


def cmd_build(args) -> int:
    if getattr(args, "shards", None) or getattr(args, "model", None) or getattr(args, "ray", None):  # cluster block
        # --- a sharded build (aftershock.cli.cluster) ---
        from aftershock.cli.cluster import cmd_build_sharded

        if not args.model:  # vectors input: the same id rule as one machine
            require_ids(args.input, guess_format(args.input, args.format), args.ids, args.row_ids, "--ids", "document")
        return cmd_build_sharded(args, given(args, BUILD_FIELDS))  # --- end of the cluster block ---
    args.threads = clamp_threads(args.threads)
    vocab = vocab_arg(args.vocab)
    overrides = given(args, BUILD_FIELDS)
    config = SeismicConfig().with_(**overrides)  # validates every value before the data is read
    check_save_target(args.output, args.overwrite, protect=[args.input, args.ids, args.vocab])  # before the build
    fmt = guess_format(args.input, args.format)
    require_ids(args.input, fmt, args.ids, args.row_ids, "--ids", "document")
    docs = read_vectors(args.input, format=fmt, ids=args.ids, dim=args.dim, vocab=vocab, what="documents",
                        max_terms_per_doc=config.max_terms_per_doc)
    if args.dim is None and vocab is None and Path(args.input).exists() and stored_dim(args.input, fmt) is None \
            and fmt != "jsonl":
        print(f"{PROG}: note: dim {docs.dim} inferred from the data (largest term id + 1): {args.input} stores "
              f"none and no --dim/--vocab was given. Queries with a term id >= {docs.dim} will be refused; pass "
              "--dim (30522 for BERT-vocabulary models) or --vocab if the vectors come from a larger vocabulary",
              file=sys.stderr)
    if docs.vocab is None:
        print(f"{PROG}: note: the index will store no vocabulary, so token queries ({{\"tokens\": ...}}), text "
              "queries of `serve --model` and JSONL queries with token keys cannot be mapped; pass --vocab "
              "(the tokenizer.json of the model that made the vectors) to keep one", file=sys.stderr)
    t0 = time.perf_counter()
    if args.exact:
        if set(overrides) - {"max_terms_per_doc"}:
            print(f"{PROG}: note: --exact ignores the Seismic parameters "
                  f"{sorted(set(overrides) - {'max_terms_per_doc'})}", file=sys.stderr)
        index = ExactIndex.build(docs, max_terms_per_doc=config.max_terms_per_doc)
        blocks = "exact"
    else:
        cold = build_kernels()
        with compiling_notice("build", *cold):
            if kernels_cold(*cold):  # compile on a few docs, so the build's progress and time are the build's own
                SeismicIndex.build(docs[:min(len(docs), 64)], config, threads=args.threads)
        t0 = time.perf_counter()
        index = SeismicIndex.build(docs, config, threads=args.threads, progress=True)
        blocks = f"{index.n_blocks} blocks"
    build_s = time.perf_counter() - t0
    index.save(args.output, overwrite=args.overwrite, protect=[args.input, args.ids, args.vocab])
    print(f"built {index.kind} index: {len(docs)} docs, nnz {docs.nnz} ({docs.nnz / max(len(docs), 1):.1f}/doc), "
          f"{blocks}, {build_s:.2f} s, {fmt_bytes(index.nbytes())} -> {args.output}")
    return 0


def build_kernels() -> list:
    """The parallel build kernels whose first call compiles (the slow part of a first build)."""
    from aftershock.seismic.kernels import build as KB, summaries as KS

    return [KB.block_lists, KB.doc_cut_arrays, KB.prune_count, KB.prune_fill, KS.summary_fill,
            KS.summary_transpose, KS.summary_layout_counts]


def file_has_ids(path, fmt: str) -> bool:
    """Whether vectors in ``path`` carry their own ids (.bin and .npz never do; Parquet in an ``id`` column)."""
    if fmt in ("bin", "npz"):
        return False
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with reading(path, "Parquet"):  # a damaged file: a FormatError naming it, not pyarrow's traceback
            return "id" in pq.read_schema(str(path)).names
    return True


def require_ids(path, fmt: str, ids, row_ids: bool, flag: str, what: str) -> None:
    """Refuse to number the rows silently: a file without ids needs ``flag`` FILE or an explicit --row-ids."""
    if ids is not None and row_ids:
        raise ConfigError(f"give either {flag} or --row-ids, not both")
    if ids is None and not row_ids and Path(path).exists() and not file_has_ids(path, fmt):
        raise ConfigError(f"{path} holds no {what} ids ({fmt} files store only vectors): pass {flag} FILE (one "
                          f"{what} id per line, in row order, e.g. the .ids.txt written beside it), or --row-ids to "
                          "use row numbers 0..n-1 as ids (right only when your qrels use row numbers)")


def stored_dim(path, fmt: str) -> int | None:
    """The dimension a vector file records (.npz ``dim``/``shape``, Parquet metadata), else None."""
    try:
        if fmt == "npz":
            with np.load(path) as z:
                return int(z["dim"]) if "dim" in z.files else int(z["shape"][1]) if "shape" in z.files else None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(str(path)).metadata or {}
            return int(meta[b"aftershock.dim"]) if b"aftershock.dim" in meta else None
    except (OSError, ValueError, KeyError):
        return None
    return None


def fit_to_index(q: SparseBatch, index, args) -> SparseBatch:
    """Queries in the index's space: the same vocabulary, every term id below the index's dim."""
    if index.vocab is not None and q.vocab is not None and q.vocab != index.vocab:
        raise FormatError(f"{args.queries} was encoded with a different vocabulary ({len(q.vocab)} tokens) than "
                          f"the index {args.index} ({len(index.vocab)} tokens); encode the queries with the model "
                          "that encoded the documents, or rebuild the index with --vocab of the queries' model")
    top = int(q.indices.max()) if q.nnz else -1
    if top >= index.dim:
        row = int(np.searchsorted(q.indptr, int(np.argmax(q.indices)), side="right") - 1)
        hint = (" (an index built without --dim or --vocab takes the dim its file records, else the largest "
                "term id + 1)" if index.vocab is None else "")
        raise FormatError(f"query {q.ids[row]!s} of {args.queries} has term id {top}, but the index {args.index} "
                          f"has dim {index.dim}{hint}; rebuild the index with --dim {max(q.dim, top + 1)} (or --vocab), "
                          "or use queries encoded for this index")
    if q.dim != index.dim:
        vocab = q.vocab if q.vocab is not None and len(q.vocab) == index.dim else index.vocab
        q = SparseBatch.from_arrays(q.indptr, q.indices, q.values, ids=q.ids, dim=index.dim, vocab=vocab,
                                    what="queries", copy=False)
    return q


def read_queries(args, index) -> SparseBatch:
    fmt = guess_format(args.queries, args.format)
    if fmt != "jsonl":
        require_ids(args.queries, fmt, args.query_ids, args.row_ids, "--query-ids", "query")
        q = read_vectors(args.queries, format=fmt, ids=args.query_ids, dim=args.dim, what="queries")
        return fit_to_index(q, index, args)
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


def warm_up(index, queries, k, params, n_threads, batch_size) -> None:
    """Compile (or load from Numba's cache) exactly the kernels the timed loop will call: the serial one
    for a batch of one query or one thread, the parallel one otherwise; so us/query excludes compilation."""
    from aftershock.seismic import kernels as K

    nq = len(queries)
    if not nq:
        return
    sizes = {min(batch_size, nq - s) for s in range(0, nq, batch_size)}
    chunks = {min(n_threads, m) for m in sizes}  # 1 -> serial kernel, > 1 -> batch kernel
    with compiling_notice("search", *([K.exact_search_batch] if isinstance(index, ExactIndex) else
                                      [K.seismic_search_serial] * (1 in chunks)
                                      + [K.seismic_search_batch] * any(c > 1 for c in chunks))):
        for c in sorted(chunks):
            index.search(queries[:c], k, params)


def cmd_search(args) -> int:
    from tqdm.auto import tqdm

    args.threads = clamp_threads(args.threads) if isinstance(args.threads, int) and args.threads > 0 else args.threads
    params = SearchParams().with_(**given(args, SEARCH_FIELDS))  # validates every value
    from aftershock.cli.collection import is_collection, search_to_run

    if is_collection(args.index):  # a collection directory: external ids, --filter
        fmt = guess_format(args.queries, args.format)
        if fmt != "jsonl":
            require_ids(args.queries, fmt, args.query_ids, args.row_ids, "--query-ids", "query")
        tag = args.tag or f"{PROG}-collection"
        check_trec_id(tag, "run tag")
        return search_to_run(args.index, args.queries, args.format, args.query_ids, args.hits, params, args.filter,
                             args.output, tag)
    if args.filter:
        raise ConfigError(f"--filter needs a collection (aftershock collection create), but {args.index} is an index, "
                          "which stores no metadata; drop --filter or search a collection")
    index = load_index(args.index, mmap=True)
    queries = read_queries(args, index)
    qids = [check_trec_id(str(q), "query id") for q in queries.ids]
    k = args.hits
    exact = isinstance(index, ExactIndex)
    ignored = sorted(set(given(args, SEARCH_FIELDS)) - {"threads"})
    if exact and ignored:
        print(f"{PROG}: note: an exact index ignores {ignored}", file=sys.stderr)
    n_threads = params.n_threads()
    tag = args.tag or f"{PROG}-{index.kind}"
    check_trec_id(tag, "run tag")
    warm_up(index, queries, k, params, n_threads, args.batch_size)
    doc_ids = index.doc_ids
    out = Path(args.output)
    search_s = 0.0
    n_lines = 0
    with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as f, \
            tqdm(total=len(queries), unit="q", desc="search", file=sys.stderr) as bar:
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
