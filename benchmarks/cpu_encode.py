"""CPU document encoding (issue 15): fp32 / int8 (dynamic quantization of the linear layers, measured here
only: it misses the tolerance, so the encoders do not offer it) / bf16 autocast (``dtype="bf16"``),
docs/s and the vectors' difference from fp32, beside sentence-transformers (fp32) on the same texts.

    python benchmarks/cpu_encode.py --model ../shared/models/splade-tiny --st \
        --corpus ../shared/data/scifact/corpus.jsonl.gz --n 500 --threads 2
    python benchmarks/cpu_encode.py --model aftershock/models/default \
        --corpus ../shared/data/scifact/corpus.jsonl.gz --n 500 --threads 2

Error per document against fp32: relative L2 error ||v - v_fp32|| / ||v_fp32|| and the overlap of the
top-20 terms (|top20 & top20_fp32| / 20).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aftershock.index import iter_corpus  # noqa: E402
from aftershock.lsr import load_encoder  # noqa: E402


def texts_of(path, n):
    out = []
    for d in iter_corpus(path):
        out.append(d.text if not getattr(d, "title", None) else f"{d.title} {d.text}")
        if len(out) >= n:
            break
    return out


def errors(a, b, k=20):
    """Per-row relative L2 error of b against a and top-k term overlap."""
    a, b = a.tocsr(), b.tocsr()
    rel, ov = [], []
    for i in range(a.shape[0]):
        x, y = a[i].toarray().ravel(), b[i].toarray().ravel()
        n = np.linalg.norm(x)
        rel.append(np.linalg.norm(x - y) / n if n else 0.0)
        kk = min(k, int((x > 0).sum())) or 1
        ta, tb = set(np.argsort(-x)[:kk]), set(np.argsort(-y)[:kk])
        ov.append(len(ta & tb) / kk)
    return np.array(rel), np.array(ov)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--dtypes", default="fp32,int8,bf16")
    ap.add_argument("--st", action="store_true", help="also sentence-transformers SparseEncoder (HF MLM models)")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {torch.get_num_threads()}, {a.n} docs, batch {a.batch_size}")
    texts = texts_of(a.corpus, a.n)
    res = {}
    for dt in a.dtypes.split(","):
        enc = load_encoder(a.model, device="cpu", dtype="fp32" if dt == "int8" else dt, batch_size=a.batch_size)
        docs = getattr(enc, "document_encoder", enc)
        if dt == "int8":  # dynamic int8 quantization of the encoder's nn.Linear layers (projection stays fp32)
            q = lambda m: torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)  # noqa: E731
            if hasattr(docs, "module"):
                docs.module.mlm = q(docs.module.mlm)
            else:
                docs.model = q(docs.model)
        docs.encode_documents(texts[: a.batch_size])  # warm-up
        t0 = time.perf_counter()
        m = docs.encode_documents(texts).to_scipy()
        secs = time.perf_counter() - t0
        res[dt] = (m, secs)
        line = f"{dt:5s} {a.n / secs:7.1f} docs/s"
        if dt != "fp32" and "fp32" in res:
            rel, ov = errors(res["fp32"][0], m)
            line += (f"  x{res['fp32'][1] / secs:.2f} vs fp32  rel L2 err mean {rel.mean():.4f} p99 "
                     f"{np.quantile(rel, 0.99):.4f} max {rel.max():.4f}  top20 overlap mean {ov.mean():.3f} "
                     f"min {ov.min():.3f}")
        print(line, flush=True)
    if a.st:
        from encode_throughput import run_st

        m, secs, _ = run_st(a.model, texts, "cpu", "fp32", a.batch_size, 512)
        line = f"sentence-transformers fp32 {a.n / secs:7.1f} docs/s"
        for dt, (_, s) in res.items():
            line += f"  aftershock {dt} x{secs / s:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
