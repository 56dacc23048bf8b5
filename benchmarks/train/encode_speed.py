"""Document encoding speed of sparse models beside a dense sentence-transformers model, same texts, same batch
size, same max length, one run (docs/s; CPU: fp32, CUDA: bf16 autocast for the sparse encoders and fp16/bf16
for sentence-transformers via its own ``model_kwargs``).

    python benchmarks/train/encode_speed.py --corpus ../shared/data/scifact/corpus.jsonl.gz --n 2000 \
        --device cuda --systems aftershock/models/default,../shared/models/splade-tiny,st:DENSE_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="timed passes after one warm-up pass (best is kept)")
    p.add_argument("--systems", required=True, help="comma list: model dirs (load_encoder) or st:DIR (dense)")
    p.add_argument("--json")
    args = p.parse_args(argv)

    import torch

    from aftershock.index import iter_corpus
    from aftershock.lsr import load_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = []
    for doc in iter_corpus(args.corpus):
        texts.append(f"{doc.title} {doc.text}".strip())
        if len(texts) >= args.n:
            break
    rows = []
    for spec in args.systems.split(","):
        if spec.startswith("st:"):
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(spec[3:], device=args.device)
            model.max_seq_length = args.max_length
            if args.device != "cpu":
                model = model.to(torch.bfloat16)
            run = lambda: model.encode(texts, batch_size=args.batch_size)  # noqa: E731
        else:
            enc = load_encoder(spec, device=args.device, batch_size=args.batch_size, doc_max_length=args.max_length)
            run = lambda: enc.encode_documents(texts)  # noqa: E731
        run()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            if args.device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            if args.device != "cpu":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        rows.append({"system": spec, "docs": len(texts), "seconds": round(best, 3),
                     "docs_per_s": round(len(texts) / best, 1)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["docs_per_s"]
    for r in rows:
        r["ratio_to_first"] = round(r["docs_per_s"] / base, 3)
    meta = {"device": args.device, "n": len(texts), "batch_size": args.batch_size, "max_length": args.max_length,
            "threads": torch.get_num_threads(), "rows": rows}
    print(json.dumps(meta, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
