"""``aftershock serve``: the REST search service (FastAPI on uvicorn; imported only when the command runs)."""

from __future__ import annotations

from aftershock.cli.common import positive_int
from aftershock.errors import ConfigError

SERVE_LIMITS = [("--max-k", "max_k", "most results per query"),
                ("--max-batch", "max_batch", "most queries per batch request"),
                ("--max-query-terms", "max_query_terms", "most non-zero terms per query"),
                ("--max-text-chars", "max_text_chars", "most characters per text query"),
                ("--max-body-bytes", "max_body_bytes", "largest request body (413 beyond)"),
                ("--max-hits", "max_hits", "most results (queries x k) per request"),
                ("--max-response-bytes", "max_response_bytes", "largest answer, estimated before searching"),
                ("--batch-slots", "batch_slots", "multi-threaded batch searches at a time (single queries never "
                                                 "wait)"),
                ("--max-connections", "max_connections", "open connections (503 and close beyond)"),
                ("--max-header-bytes", "max_header_bytes", "request line + headers (400 beyond)")]
SERVE_TIMEOUTS = [("--request-timeout", "request_timeout", "seconds to answer once the body is in (504 beyond)"),
                  ("--body-timeout", "body_timeout", "seconds to receive the request body (408 beyond)"),
                  ("--header-timeout", "header_timeout", "seconds for a connection to send a request's headers "
                                                         "(408 beyond)"),
                  ("--keep-alive-timeout", "keep_alive_timeout", "idle seconds kept between requests")]


def positive_seconds(text: str) -> float:
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return v


def add_parsers(sub) -> None:
    sv = sub.add_parser("serve", help="run the REST search service (FastAPI on uvicorn)",
                        description="Serve an index (read-only) or a collection (writable) over HTTP: /search, "
                                    "/search/batch, /documents/{id}, /info, /health, /metrics, OpenAPI at /docs; a "
                                    "collection adds upsert/delete/_bulk and a filter in every search body. Limits "
                                    "and switches: see README.")
    src = sv.add_mutually_exclusive_group(required=True)
    src.add_argument("--index", help="index directory written by `aftershock build` (memory-mapped, read-only)")
    src.add_argument("--collection", metavar="DIR", help="collection directory (`aftershock collection create`): "
                     "served writable (PUT /collections/NAME/points, POST .../points/delete, POST /_bulk) with "
                     "filters; one worker")
    sv.add_argument("--model", default="default",
                    help="query encoder for text queries: a local model directory, 'default' (the model shipped "
                         "with Aftershock, used when its vocabulary fits the index) or 'none' (default: default)")
    sv.add_argument("--documents", help="BEIR corpus.jsonl[.gz] or id<TAB>text .tsv: texts for return_documents")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--workers", type=positive_int, default=1, help="uvicorn worker processes (default 1)")
    from aftershock.service.settings import ServiceSettings  # no FastAPI import here

    for flag, field, text in SERVE_LIMITS:
        default = getattr(ServiceSettings, field)
        sv.add_argument(flag, dest=field, type=positive_int, default=default, help=f"{text} (default {default})")
    sv.add_argument("--batch-nice", type=int, choices=range(0, 20), metavar="0..19", default=ServiceSettings.batch_nice,
                    help="lower CPU priority (Linux nice) of batch requests' threads, so they cannot starve single "
                         f"queries; 0 = same priority (default {ServiceSettings.batch_nice})")
    for flag, field, text in SERVE_TIMEOUTS:
        default = getattr(ServiceSettings, field)
        sv.add_argument(flag, dest=field, type=positive_seconds, default=default, help=f"{text} (default {default:g})")
    sv.add_argument("--threads", type=positive_int, help="search threads of a batch request (default: all cores)")
    sv.add_argument("--api-key-env", metavar="VAR", help="require the API key held in environment variable VAR")
    sv.add_argument("--api-key-header", default="X-API-Key", help="header carrying the API key (default X-API-Key)")
    sv.add_argument("--cors-origin", action="append", default=[], help="allow this CORS origin (repeatable)")
    sv.add_argument("--name", default="default", help="the collection/index name in the Qdrant/OpenSearch-style "
                    "routes (/collections/NAME/..., /NAME/_search; default: default)")
    sv.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    # hybrid search (issue 14): a BM25 index of --documents, fused per request with "hybrid": {...}
    sv.add_argument("--hybrid", action="store_true", help="also build a BM25 index of the --documents texts at "
                    "startup, so /search and /search/batch accept \"hybrid\": {method, weight, depth} (text queries)")
    sv.set_defaults(func=cmd_serve)
    # --- cluster serving on Ray Serve: --cluster / --ray / --replicas (aftershock.cli.cluster) ---
    from aftershock.cli.cluster import add_serve_flags

    add_serve_flags(sv)
    # --- end of the cluster block ---


def cmd_serve(args) -> int:
    import os

    from aftershock.cli.cluster import check_serve_source, cmd_serve_cluster  # --- cluster block ---

    check_serve_source(args)
    if getattr(args, "cluster", None):
        return cmd_serve_cluster(args)  # --- end of the cluster block ---

    from aftershock.service import ServiceSettings, serve

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty; "
                              "export the key there first")
    settings = ServiceSettings(**{f: getattr(args, f) for _, f, _ in SERVE_LIMITS + SERVE_TIMEOUTS},
                               threads=args.threads, batch_nice=args.batch_nice,
                               api_key=key, api_key_header=args.api_key_header, cors_origins=tuple(args.cors_origin),
                               collection=args.name, hybrid=args.hybrid)
    if args.collection is not None:
        from aftershock.cli.collection import is_collection
        from aftershock.service.server import serve_collection

        if not is_collection(args.collection):
            raise ConfigError(f"--collection {args.collection}: not a collection directory (no CURRENT file); create "
                              "one with `aftershock collection create`, or serve an index with --index (the route "
                              "name, formerly --collection NAME, is --name NAME)")
        if args.documents:
            raise ConfigError("--documents goes with --index; a collection keeps its documents' payloads itself")
        if args.hybrid:
            raise ConfigError("--hybrid goes with --index and --documents (BM25 is built over those texts); a "
                              "collection has no hybrid search yet")
        serve_collection(args.collection, model=args.model, host=args.host, port=args.port, workers=args.workers,
                         settings=settings, access_log=args.access_log)
        return 0
    serve(args.index, model=args.model, documents=args.documents, host=args.host, port=args.port,
          workers=args.workers, settings=settings, access_log=args.access_log)
    return 0
