"""Train a small Llama-style causal LM on the real text of ../shared/data (for aftershock.kv's benchmarks).

Two steps:

  python benchmarks/kv_train_lm.py prepare --out DIR
      tokenizes every corpus.jsonl.gz under ../shared/data with the BERT WordPiece tokenizer of
      ../shared/models/splade-tiny (offline), documents joined by [SEP]; every 20th document goes to the
      held-out stream (DIR/heldout.u16, corpus order, scifact first), the rest to DIR/train.u16 (doc order
      shuffled). Token ids are uint16 (vocab 30522).

  python benchmarks/kv_train_lm.py train --data DIR --out MODEL_DIR --minutes 5.5
      trains a LlamaForCausalLM (RoPE, GQA) for a fixed wall-clock budget on one GPU (bf16 autocast),
      saves it (fp16 safetensors, HF layout) plus loss_curve.json (step, tokens, train loss, held-out loss).

RoPE base 500 (not 10,000): with a 4,096-token training length every rotary frequency completes a full
period during training, so attention at 16K-128K positions sees no unseen angles (Liu et al. 2023,
"Scaling Laws of RoPE-based Extrapolation").
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPORA = ["scifact", "lexicon", "cisi", "cranfield", "medline", "vaswani-npl", "adi"]
SEP = 102


def model_config(vocab_size: int = 30522):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=262144,
                       rope_parameters={"rope_type": "default", "rope_theta": 500.0}, tie_word_embeddings=True,
                       bos_token_id=101, eos_token_id=SEP, pad_token_id=0)


def prepare(out: Path, shared: Path = SHARED) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(shared / "models" / "splade-tiny" / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    out.mkdir(parents=True, exist_ok=True)
    train_docs, held = [], []
    for name in CORPORA:
        path = shared / "data" / name / "corpus.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts = [(lambda d: (d.get("title") or "") + ". " + (d.get("text") or ""))(json.loads(line)) for line in f]
        encs = tok.encode_batch(texts, add_special_tokens=False)
        for i, e in enumerate(encs):
            ids = np.asarray(e.ids + [SEP], np.uint16)
            (held if i % 20 == 0 else train_docs).append(ids)
        print(f"{name}: {len(texts)} docs", flush=True)
    order = np.random.default_rng(0).permutation(len(train_docs))
    train = np.concatenate([train_docs[i] for i in order])
    heldout = np.concatenate(held)
    train.tofile(out / "train.u16")
    heldout.tofile(out / "heldout.u16")
    print(f"train {train.size} tokens, heldout {heldout.size} tokens -> {out}")


def train(data: Path, out: Path, minutes: float, seq: int = 4096, batch: int = 32, lr: float = 2e-3) -> None:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tr = torch.from_numpy(np.fromfile(data / "train.u16", np.uint16).astype(np.int64))
    he = torch.from_numpy(np.fromfile(data / "heldout.u16", np.uint16).astype(np.int64))
    cfg = model_config()
    model = LlamaForCausalLM(cfg).to(dev)
    model.config._attn_implementation = "sdpa"
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params / 1e6:.1f}M, train tokens {tr.numel() / 1e6:.1f}M, device {dev}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=dev == "cuda")
    budget = minutes * 60.0
    warm = 200
    gen = torch.Generator().manual_seed(0)
    curve = []
    t0 = time.time()
    step = 0
    ev_x = torch.stack([he[i:i + seq + 1] for i in range(0, 4 * (seq + 1), seq + 1)]).to(dev)

    def held_loss():
        model.eval()
        with torch.no_grad(), torch.autocast(dev, torch.bfloat16):
            lg = model(input_ids=ev_x[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), ev_x[:, 1:].reshape(-1))
        model.train()
        return float(loss)

    while True:
        el = time.time() - t0
        if el > budget:
            break
        frac = el / budget
        cur = lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = cur
        starts = torch.randint(0, tr.numel() - seq - 1, (batch,), generator=gen)
        xb = torch.stack([tr[s:s + seq + 1] for s in starts.tolist()]).to(dev, non_blocking=True)
        with torch.autocast(dev, torch.bfloat16):
            logits = model(input_ids=xb[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), xb[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            row = {"step": step, "tokens": step * batch * seq, "seconds": round(time.time() - t0, 1),
                   "lr": cur, "train_loss": round(float(loss), 4)}
            if step % 250 == 0 or step == 1:
                row["heldout_loss"] = round(held_loss(), 4)
            curve.append(row)
            print(json.dumps(row), flush=True)
    row = {"step": step, "tokens": step * batch * seq, "seconds": round(time.time() - t0, 1),
           "train_loss": round(float(loss), 4), "heldout_loss": round(held_loss(), 4)}
    curve.append(row)
    print("final", json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    (out / "loss_curve.json").write_text(json.dumps({"seq": seq, "batch": batch, "lr": lr, "params": n_params,
                                                      "curve": curve}, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, default=5.5)
    t.add_argument("--seq", type=int, default=4096)
    t.add_argument("--batch", type=int, default=32)
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        prepare(a.out)
    else:
        train(a.data, a.out, a.minutes, a.seq, a.batch)


if __name__ == "__main__":
    main()
