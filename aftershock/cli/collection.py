"""``aftershock collection create|upsert|delete|optimize|info|search``: a mutable collection from the shell.

Inputs: vectors in the formats of ``build`` (ids from the file or ``--ids``), metadata as JSONL (one object
per line with ``id``/``_id`` and the schema's fields) or Parquet (an ``id`` column), ids as a text file.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from aftershock.cli.common import PROG, add_config_flags, given, guess_format, positive_int, vocab_arg
from aftershock.errors import ConfigError, FormatError
from aftershock.index import FORMATS, read_ids, read_vectors

def _config_fields():
    from aftershock.collection import CollectionConfig

    return [f.name for f in fields(CollectionConfig) if f.name != "seismic"]


def add_parsers(sub) -> None:
    from aftershock.collection import CollectionConfig
    from aftershock.seismic import SearchParams, SeismicConfig

    p = sub.add_parser("collection", help="create and change a mutable collection (upsert, delete, filters)",
                       description="A collection: segments + write-ahead log + deletions + metadata (see README).")
    cs = p.add_subparsers(dest="collection_command", metavar="ACTION", required=True)

    c = cs.add_parser("create", help="create an empty collection")
    c.add_argument("path", help="collection directory (must not exist or be empty)")
    c.add_argument("--dim", type=positive_int, help="vocabulary size (or --vocab)")
    c.add_argument("--vocab", help="tokenizer.json or vocab.txt (stored in the collection)")
    c.add_argument("--schema", help="metadata schema: JSON text or a .json file, e.g. "
                                    "'{\"source\": \"keyword\", \"year\": \"integer\"}'")
    add_config_flags(c.add_argument_group("collection settings (CollectionConfig)"), CollectionConfig,
                     names=_config_fields())
    add_config_flags(c.add_argument_group("Seismic build parameters of large segments"), SeismicConfig)
    c.set_defaults(func=cmd_create)

    u = cs.add_parser("upsert", help="insert or replace documents (by id)")
    u.add_argument("path")
    u.add_argument("--input", required=True, help="document vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    u.add_argument("--format", choices=FORMATS, help="input format (default: from the file name)")
    u.add_argument("--ids", help="one document id per line, in row order (for formats without ids)")
    u.add_argument("--metadata", help="metadata keyed by id: .jsonl[.gz] (id or _id + fields) or .parquet (id column)")
    u.add_argument("--batch-size", type=positive_int, default=1000, help="documents per upsert call (default 1000)")
    u.set_defaults(func=cmd_upsert)

    d = cs.add_parser("delete", help="delete documents by id")
    d.add_argument("path")
    d.add_argument("ids", nargs="*", help="ids to delete")
    d.add_argument("--ids-file", help="one id per line")
    d.set_defaults(func=cmd_delete)

    o = cs.add_parser("optimize", help="merge every segment into one (drops deleted rows, rebuilds Seismic)")
    o.add_argument("path")
    o.set_defaults(func=cmd_optimize)

    i = cs.add_parser("info", help="print counts, segments and settings as JSON")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)

    s = cs.add_parser("search", help="search a collection (with --filter) and write a TREC run")
    s.add_argument("path")
    s.add_argument("--queries", required=True, help="query vectors (.jsonl[.gz], .bin[.gz], .parquet, .npz)")
    s.add_argument("--format", choices=FORMATS)
    s.add_argument("--query-ids", help="one query id per line (for formats without ids)")
    s.add_argument("--filter", help="Qdrant-shaped filter: JSON text or a .json file")
    s.add_argument("--hits", "-k", type=positive_int, default=10, help="results per query (default 10)")
    add_config_flags(s.add_argument_group("search parameters of Seismic segments"), SearchParams)
    s.add_argument("--output", required=True, help="TREC run file to write")
    s.set_defaults(func=cmd_search)


def _json_arg(text: str | None, what: str):
    if text is None:
        return None
    src = Path(text).read_text(encoding="utf-8") if text.endswith(".json") and Path(text).exists() else text
    try:
        return json.loads(src)
    except json.JSONDecodeError as e:
        raise FormatError(f"{what} is not valid JSON ({e}); pass JSON text or a .json file") from None


def cmd_create(args) -> int:
    from aftershock.collection import Collection, CollectionConfig
    from aftershock.seismic import SeismicConfig

    seismic = SeismicConfig().with_(**given(args, [f.name for f in fields(SeismicConfig)]))
    config = CollectionConfig(seismic=seismic).with_(**given(args, _config_fields()))
    vocab = vocab_arg(args.vocab)
    if args.dim is None and vocab is None:
        raise ConfigError("pass --dim N (the vocabulary size) or --vocab FILE")
    c = Collection.create(args.path, dim=args.dim, vocab=vocab, config=config,
                          schema=_json_arg(args.schema, "--schema"))
    print(f"created collection {args.path}: dim {c.dim}, schema {json.dumps(c.schema)}, "
          f"durability {config.durability}")
    c.close()
    return 0


def _metadata(path: str | None) -> dict | None:
    if path is None:
        return None
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        from aftershock.index import iter_jsonl_records

        rows = list(iter_jsonl_records(path))
    out = {}
    for r in rows:
        key = "_id" if "_id" in r else "id"
        if key not in r:
            raise FormatError(f"{path}: a metadata record has no id or _id field: {str(r)[:120]}")
        doc_id = str(r.pop(key))
        out[doc_id] = {k: v for k, v in r.items() if v is not None}
    return out


def cmd_upsert(args) -> int:
    from aftershock.collection import Collection

    c = Collection.open(args.path)
    try:
        fmt = guess_format(args.input, args.format)
        docs = read_vectors(args.input, format=fmt, ids=args.ids, dim=None if fmt == "jsonl" else c.dim,
                            vocab=c.vocab if fmt == "jsonl" else None, what="documents")
        md = _metadata(args.metadata)
        t0 = time.perf_counter()
        for a in range(0, len(docs), args.batch_size):
            part = docs[a:a + args.batch_size]
            c.upsert(part, metadata=[md.get(str(i), {}) for i in part.ids] if md is not None else None)
        c.flush()
        print(f"upserted {len(docs)} documents in {time.perf_counter() - t0:.2f} s; the collection holds {c.count()}")
    finally:
        c.close()
    return 0


def cmd_delete(args) -> int:
    from aftershock.collection import Collection

    ids = list(args.ids) + (read_ids(args.ids_file) if args.ids_file else [])
    if not ids:
        raise ConfigError("no ids given; pass ids or --ids-file FILE")
    c = Collection.open(args.path)
    try:
        n = c.delete(ids)
        c.flush()
        print(f"deleted {n} of {len(ids)} ids; the collection holds {c.count()}")
    finally:
        c.close()
    return 0


def cmd_optimize(args) -> int:
    from aftershock.collection import Collection

    c = Collection.open(args.path)
    try:
        t0 = time.perf_counter()
        c.optimize()
        info = c.info()
        print(f"optimized in {time.perf_counter() - t0:.2f} s: {info['count']} documents in "
              f"{len(info['segments'])} segment(s), {info['disk_bytes'] / 1e6:.1f} MB")
    finally:
        c.close()
    return 0


def cmd_info(args) -> int:
    from aftershock.collection import Collection

    c = Collection.open(args.path, read_only=True)
    print(json.dumps(c.info(), indent=2))
    return 0


def cmd_search(args) -> int:
    from aftershock.seismic import SearchParams

    params = SearchParams().with_(**given(args, [f.name for f in fields(SearchParams)]))
    return search_to_run(args.path, args.queries, args.format, args.query_ids, args.hits, params, args.filter,
                         args.output, f"{PROG}-collection")


def is_collection(path) -> bool:
    """``path`` is a collection directory (it has a CURRENT manifest pointer)."""
    return (Path(path) / "CURRENT").is_file()


def search_to_run(path, queries_path, fmt, query_ids, k: int, params, filter_json, output, tag: str) -> int:
    """Search collection ``path`` with the queries of a file (``--filter`` JSON text or file) into a TREC run.
    Also what ``aftershock search --index COLLECTION [--filter JSON]`` calls."""
    from aftershock.collection import Collection
    from aftershock.index import write_trec_run

    filt = _json_arg(filter_json, "--filter")
    c = Collection.open(path, read_only=True)
    fmt = guess_format(queries_path, fmt)
    queries = read_vectors(queries_path, format=fmt, ids=query_ids, dim=None if fmt == "jsonl" else c.dim,
                           vocab=c.vocab if fmt == "jsonl" else None, unknown="drop", what="queries")
    t0 = time.perf_counter()
    scores, ids = c.search(queries, k=k, params=params, filter=filt)
    dt = time.perf_counter() - t0
    run = {str(q): {d: float(s) for s, d in zip(scores[j], ids[j]) if d is not None}
           for j, q in enumerate(queries.ids)}
    write_trec_run(run, output, tag=tag)
    nq = max(len(queries), 1)
    print(f"searched {len(queries)} queries in {dt:.2f} s ({dt / nq * 1e6:.0f} us/query) over {c.count()} documents "
          f"-> {output}", file=sys.stderr)
    return 0
