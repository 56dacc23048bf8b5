"""Query encoding on CPU: inference-free (tokenizer + IDF lookup) vs SPLADE (a transformer forward per
query batch), same real queries, same run; prints the per-query time of each and the ratio.

    python benchmarks/query_encoding_speed.py --model aftershock/models/default \
        --splade ../shared/models/splade-tiny --queries ../shared/data/lexicon/queries.jsonl --n 2000

``--model`` is an inference-free model directory (its query side is used); ``--splade`` any masked-LM
directory. Both encoders run single-threaded torch (``--threads``) and the same batch sizes.
"""

from __future__ import annotations

import argparse
import json
import time


def timed(fn, texts, batch: int, repeats: int) -> float:
    """Best of ``repeats`` passes over ``texts`` in batches of ``batch``: seconds per query."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for s in range(0, len(texts), batch):
            fn(texts[s:s + batch])
        best = min(best, time.process_time() - t0)
    return best / len(texts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="inference-free model directory (or idf:DIR)")
    p.add_argument("--splade", required=True, help="SPLADE (masked-LM) directory")
    p.add_argument("--queries", required=True, help="queries.jsonl ({'_id','text'} per line)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import torch

    from aftershock.lsr import load_encoder

    torch.set_num_threads(args.threads)
    with open(args.queries, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(args.n), f)]
    free = load_encoder(args.model)
    free = getattr(free, "query_encoder", free)
    splade = load_encoder(args.splade, batch_size=256)
    print(f"{len(texts)} queries from {args.queries}; CPU process time, torch threads={args.threads}; "
          f"inference-free: {type(free).__name__}({free.name}); SPLADE: {splade.name}")
    print(f"{'batch':>5} {'inference-free us/q':>20} {'SPLADE us/q':>12} {'ratio':>8}")
    for b in (int(x) for x in args.batch_sizes.split(",")):
        n = texts if b > 1 else texts[:max(200, args.n // 10)]
        tf = timed(free.encode_queries, n, b, args.repeats)
        ts = timed(splade.encode_queries, n, b, args.repeats)
        print(f"{b:>5} {tf * 1e6:>20.1f} {ts * 1e6:>12.1f} {ts / tf:>7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
