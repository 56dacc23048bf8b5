"""The cluster flags of ``aftershock build`` (``--shards N [--ray ADDRESS] [--model DIR]``) and ``aftershock
serve`` (``--cluster DIR [--ray ADDRESS] [--replicas R]``): `cli/index.py` and `cli/serve.py` add them with
`add_build_flags` / `add_serve_flags` and hand a run that uses them to `cmd_build_sharded` / `cmd_serve_cluster`.
Ray is imported only when such a run starts."""

from __future__ import annotations

import sys
import time

from aftershock.cli.common import PROG, fmt_bytes, guess_format, positive_int, vocab_arg
from aftershock.errors import ConfigError

EXACT_ALWAYS = 2**31 - 1  # exact_threshold of a --exact build: every segment exact


def add_build_flags(parser) -> None:
    g = parser.add_argument_group("sharded build on Ray (aftershock.cluster; needs the [cluster] extra)")
    g.add_argument("--shards", type=positive_int, help="write a cluster directory of N shard collections to "
                   "--output (documents routed by a hash of their id; each shard built as a Ray task)")
    g.add_argument("--ray", metavar="ADDRESS", help="Ray cluster to run on (auto, host:6379, ray://host:10001; "
                   "default: a local Ray started for this run)")
    g.add_argument("--model", metavar="DIR", help="with --shards: --input is a text corpus (JSONL/BEIR), encoded "
                   "with this model by Ray Data actors (GPU actors when the Ray cluster has GPUs)")


def add_serve_flags(parser) -> None:
    g = parser.add_argument_group("cluster serving on Ray Serve (aftershock.cluster; needs the [cluster] extra)")
    groups = [m for m in getattr(parser, "_mutually_exclusive_groups", []) if m.required and any(
        a.dest == "index" for a in m._group_actions)]
    where = groups[0] if groups else g
    where.add_argument("--cluster", metavar="DIR", help="cluster directory (`aftershock build --shards N`): one "
                       "Ray actor group per shard and a Ray Serve ingress with the REST API of one machine")
    if not groups:  # --index was required on its own: one of --index / --cluster is checked in cmd_serve
        for a in parser._actions:
            if a.dest == "index":
                a.required = False
    g.add_argument("--ray", metavar="ADDRESS", help="Ray cluster to run on (default: a local Ray)")
    g.add_argument("--replicas", type=positive_int, default=1, help="actors per shard: the writer + read-only "
                   "followers that share the searches (default 1)")
    g.add_argument("--ingress-replicas", type=positive_int, default=1, help="Ray Serve replicas of the ingress "
                   "(default 1)")


def check_serve_source(args) -> None:
    """Exactly one thing to serve: --cluster excludes --index (and a collection directory)."""
    if getattr(args, "cluster", None):
        if getattr(args, "index", None) or getattr(args, "collection", None):
            raise ConfigError("give one of --cluster DIR, --index DIR and --collection DIR, not several")
    elif not getattr(args, "index", None) and not getattr(args, "collection", None):
        raise ConfigError("serve needs --index DIR, --collection DIR or --cluster DIR")


def cmd_build_sharded(args, overrides: dict) -> int:
    """``build --shards N``: ``overrides`` are the Seismic flags given (checked before any work)."""
    from aftershock.cluster.build import build_cluster, encode_ray
    from aftershock.collection import CollectionConfig
    from aftershock.index import read_vectors
    from aftershock.seismic import SeismicConfig

    if not args.shards:
        raise ConfigError("--model and --ray belong to a sharded build: add --shards N (for one machine, encode "
                          "text with `aftershock encode`, then `aftershock build` the vectors)")
    config = SeismicConfig().with_(**overrides)
    cfg = CollectionConfig(exact_threshold=EXACT_ALWAYS if args.exact else 0, seismic=config)
    t0 = time.perf_counter()
    if args.model:
        docs = encode_ray(args.input, args.model, ray_address=args.ray)
        print(f"encoded {len(docs)} documents with Ray Data in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    else:
        docs = read_vectors(args.input, format=guess_format(args.input, args.format), ids=args.ids, dim=args.dim, vocab=vocab_arg(args.vocab),
                            what="documents", max_terms_per_doc=config.max_terms_per_doc)
    t1 = time.perf_counter()
    report = build_cluster(args.output, docs, args.shards, config=cfg, ray_address=args.ray)
    for r in report:
        print(f"  {r['shard']}: {r['docs']} docs, {'+'.join(r['segments']) or 'empty'}, {r['seconds']:.2f} s, "
              f"{fmt_bytes(r['disk_bytes'])}", file=sys.stderr)
    print(f"built cluster: {len(docs)} docs in {args.shards} shards ({'exact' if args.exact else 'seismic'}), "
          f"{time.perf_counter() - t1:.2f} s -> {args.output}")
    return 0


def cmd_serve_cluster(args) -> int:
    from aftershock.cluster.serve import serve_forever

    if getattr(args, "workers", 1) not in (None, 1):
        print(f"{PROG}: note: --workers is for one machine; a cluster scales with --ingress-replicas", file=sys.stderr)
    serve_forever(args.cluster, address=args.ray, replicas=args.replicas, ingress_replicas=args.ingress_replicas,
                  host=args.host, port=args.port, model=args.model, name=getattr(args, "name", None) or "default",
                  threads=args.threads)
    return 0
