"""Encoding throughput: Aftershock's `Splade` against sentence-transformers' `SparseEncoder` (and a plain
transformers loop) on the same model, the same texts and the same batch size, in the same run.

Prints docs/s, peak memory and the ratio to sentence-transformers per dtype; checks that the vectors
agree (max abs weight difference and differing non-zero patterns against sentence-transformers);
profiles where Aftershock's time goes (tokenization alone, model + pooling alone, end to end).

    python benchmarks/encode_throughput.py --model ../shared/models/splade-tiny \
        --corpus ../shared/data/lexicon/corpus.jsonl.gz --n 100000 --batch-size 512 --device cuda --dtypes bf16,fp32

bf16 means torch.autocast(bfloat16) for every system (weights stay fp32), fp32 means no autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aftershock.eval.beir import doc_text, iter_jsonl  # noqa: E402
from aftershock.lsr import Splade  # noqa: E402
from aftershock.lsr.hf import autocast, length_order, sparsify, tokenized_batches  # noqa: E402


def read_texts(path, n: int) -> list[str]:
    out = []
    for obj in iter_jsonl(path):
        out.append(doc_text(obj))
        if len(out) >= n:
            break
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak GPU memory allocated (CUDA) or peak growth of the process RSS (CPU, sampled every 5 ms)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = _rss()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.bytes = max(self.peak, _rss()) - self.base


def csr_of_st(t):
    """sentence-transformers' output (torch sparse COO or dense) -> scipy CSR on the host."""
    import scipy.sparse as sp

    t = t.coalesce().cpu() if t.is_sparse else t.cpu().to_sparse().coalesce()
    idx = t.indices().numpy()
    return sp.csr_matrix((t.values().float().numpy(), (idx[0], idx[1])), shape=tuple(t.shape))


def compare(a, b) -> dict:
    d = (a - b).tocsr()
    d.eliminate_zeros()
    pattern = ((a != 0).astype(np.int8) - (b != 0).astype(np.int8))
    pattern.eliminate_zeros()
    return {"max_abs_diff": float(abs(d).max()) if d.nnz else 0.0, "pattern_mismatches": int(pattern.nnz),
            "nnz": int(a.nnz)}


def run_aftershock(model, texts, device, dtype, batch_size, max_length):
    enc = Splade(model, device=device, dtype=dtype, batch_size=batch_size, doc_max_length=max_length)
    enc.encode_documents(texts[:batch_size])  # warm-up (kernels, allocator)
    with PeakMemory(enc.device) as mem:
        t0 = time.perf_counter()
        batch = enc.encode_documents(texts)
        secs = time.perf_counter() - t0
    return batch.to_scipy(), secs, mem.bytes, enc


def run_st(model, texts, device, dtype, batch_size, max_length):
    import torch
    from sentence_transformers import SparseEncoder
    try:
        from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    except ImportError:  # sentence-transformers < 6.2
        from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    st = SparseEncoder(modules=[MLMTransformer(str(model), max_seq_length=max_length), SpladePooling("max")],
                       device=device)
    dev = torch.device(device)
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext
    with ctx():
        st.encode_document(texts[:batch_size], batch_size=batch_size)
    with PeakMemory(dev) as mem, ctx():
        t0 = time.perf_counter()
        out = st.encode_document(texts, batch_size=batch_size, convert_to_sparse_tensor=True, save_to_cpu=True)
        secs = time.perf_counter() - t0
    return csr_of_st(out), secs, mem.bytes


def run_hf_loop(model, texts, device, dtype, batch_size, max_length):
    """The plain loop people write: tokenize, full logits, log1p(relu) * mask, max, to_sparse, to host."""
    import scipy.sparse as sp
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    dev = torch.device(device)
    tok = AutoTokenizer.from_pretrained(str(model))
    m = AutoModelForMaskedLM.from_pretrained(str(model)).eval().to(dev)

    def encode(chunk):
        rows = []
        for s in range(0, len(chunk), batch_size):
            x = tok(chunk[s:s + batch_size], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt").to(dev)
            with torch.inference_mode(), autocast(dev, dtype):
                w = (torch.log1p(torch.relu(m(**x).logits)) * x["attention_mask"][..., None]).amax(1)
            rows.append(w.float().to_sparse().cpu())
        return rows

    encode(texts[:batch_size])
    with PeakMemory(dev) as mem:
        t0 = time.perf_counter()
        rows = encode(texts)
        secs = time.perf_counter() - t0
    return sp.vstack([csr_of_st(r) for r in rows]).tocsr(), secs, mem.bytes


def profile_aftershock(enc: Splade, texts, batch_size) -> dict:
    """Where the time goes: tokenization alone (the same batches through the same background threads,
    no model), then model + pooling and dense -> sparse alone on the pre-tokenized batches (synchronised)."""
    import torch

    order = length_order(texts)
    limit = enc._limit("document")
    t0 = time.perf_counter()
    batches = list(tokenized_batches(enc.tokenizer, texts, order, batch_size, limit))
    tok_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if enc.device.type == "cuda" else (lambda: None)
    gpu_batches = [(b["input_ids"].to(enc.device), b["attention_mask"].to(enc.device)) for _, b in batches]
    sync()
    times = {"model_pool": 0.0, "sparsify": 0.0}
    with torch.inference_mode():
        for ids, mask in gpu_batches:
            t0 = time.perf_counter()
            with autocast(enc.device, enc.dtype):
                out = enc._pool(ids, mask)
            sync()
            t1 = time.perf_counter()
            sparsify(out, None, 0.0)
            t2 = time.perf_counter()
            times["model_pool"] += t1 - t0
            times["sparsify"] += t2 - t1
    n_tok = sum(int(b["attention_mask"].sum()) for _, b in batches)
    padded = sum(int(b["attention_mask"].numel()) for _, b in batches)
    return {"tokenize_s": tok_s, "model_pool_s": times["model_pool"], "sparsify_s": times["sparsify"],
            "tokens": n_tok, "padding_fraction": 1 - n_tok / max(padded, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True, help="JSONL corpus (BEIR fields); the first --n records are used")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--systems", default="aftershock,sentence-transformers,transformers-loop")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import torch

    texts = read_texts(args.corpus, args.n)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    hw = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores visible)"
    print(f"{len(texts)} docs from {args.corpus}, batch {args.batch_size}, max length {args.max_length}, "
          f"device {device} [{hw}], torch {torch.__version__}")
    runners = {"aftershock": run_aftershock, "sentence-transformers": run_st, "transformers-loop": run_hf_loop}
    systems = [s for s in args.systems.split(",") if s]
    results = []
    head = f"{'dtype':<5} {'system':<22} {'docs/s':>9} {'x ST':>6} {'seconds':>8} {'peak MB':>9} {'max|diff| vs ST':>16} " \
           f"{'pattern diffs':>13}"
    print(head)
    print("-" * len(head))
    for dtype in args.dtypes.split(","):
        outs = {}
        for name in systems:
            try:
                outs[name] = runners[name](Path(args.model), texts, device, dtype, args.batch_size, args.max_length)
            except Exception as e:  # a peer that fails must not take the other results down
                print(f"{dtype:<5} {name:<22} FAILED: {type(e).__name__}: {e}", flush=True)
        systems_ok = [s for s in systems if s in outs]
        st_rate = len(texts) / outs["sentence-transformers"][1] if "sentence-transformers" in outs else None
        for name in systems_ok:
            mat, secs, mem = outs[name][:3]
            row = {"dtype": dtype, "system": name, "docs": len(texts), "seconds": secs, "docs_per_s": len(texts) / secs,
                   "peak_mem_mb": mem / 2**20, "nnz_per_doc": mat.nnz / len(texts)}
            if st_rate:
                row["ratio_vs_st"] = row["docs_per_s"] / st_rate
                if name != "sentence-transformers":
                    row.update({k + "_vs_st": v for k, v in compare(mat, outs["sentence-transformers"][0]).items()})
            results.append(row)
            print(f"{dtype:<5} {name:<22} {row['docs_per_s']:>9.0f} {row.get('ratio_vs_st', float('nan')):>6.2f} "
                  f"{secs:>8.2f} {row['peak_mem_mb']:>9.0f} {row.get('max_abs_diff_vs_st', 0):>16.2e} "
                  f"{row.get('pattern_mismatches_vs_st', 0):>13d}", flush=True)
        if "aftershock" in outs and not args.no_profile:
            prof = profile_aftershock(outs["aftershock"][3], texts, args.batch_size)
            prof["dtype"] = dtype
            results.append({"profile": prof})
            print(f"      aftershock {dtype} profile: tokenize {prof['tokenize_s']:.2f} s (alone), "
                  f"model+pool {prof['model_pool_s']:.2f} s, sparsify {prof['sparsify_s']:.2f} s, "
                  f"{prof['tokens'] / len(texts):.1f} tokens/doc, padding {prof['padding_fraction']:.1%}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "device": hw, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
