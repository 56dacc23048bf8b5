"""``aftershock encode``: a JSONL corpus -> sparse vectors, streamed (memory does not grow with the corpus)."""

from __future__ import annotations

import time
from pathlib import Path

from contextlib import nullcontext

from aftershock.cli.common import positive_int
from aftershock.cli.output import atomic_output
from aftershock.errors import ConfigError


def add_parsers(sub) -> None:
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
    e.add_argument("--batch-size", type=positive_int, default=32, help="texts per model call (default 32)")
    e.add_argument("--max-length", type=positive_int, help="max tokens per text (default: the model's limit)")
    e.add_argument("--long", choices=["truncate", "passages"], default="truncate",
                   help="documents longer than --max-length: truncate (default) or max-pool over passages")
    e.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    e.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto = bf16 autocast on GPU, fp32 on CPU; bf16 on a CPU with AVX512-BF16 encodes 1.3-1.6x "
                   "faster with vectors within ~2%% L2 of fp32 (benchmarks/RESULTS.md, CPU encoding)")
    e.add_argument("--top-k", type=positive_int, help="keep only each vector's top-k weights")
    e.add_argument("--chunk", type=positive_int, default=8192, help="texts read, encoded and written at a time")
    e.add_argument("--ids-output", help="one id per line (default for .bin: <output stem>.ids.txt)")
    e.set_defaults(func=cmd_encode)


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
    with atomic_output(out) as tmp, (atomic_output(ids_path) if ids_path else nullcontext()) as tmp_ids:
        stats = encode_corpus(encoder, args.input, tmp, side=args.side, chunk=args.chunk, ids_path=tmp_ids)
    dt = time.perf_counter() - t0
    print(f"encoded {stats['rows']} {'queries' if args.side == 'query' else 'documents'} in {dt:.1f} s ({stats['rows'] / max(dt, 1e-9):.0f}/s), "
          f"nnz {stats['nnz']} ({stats['nnz'] / max(stats['rows'], 1):.1f}/row), dim {stats['dim']} -> {out}"
          + (f" (ids: {ids_path})" if ids_path else ""))
    if not out.name.endswith((".parquet", ".pq", ".jsonl", ".jsonl.gz", ".json")):
        print(f"note: {out.name} stores no vocabulary; build with --ids {ids_path} --vocab <the model's "
              f"tokenizer.json> --dim {stats['dim']} to keep token and text queries working")
    return 0
