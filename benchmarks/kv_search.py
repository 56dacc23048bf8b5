"""KV-cache search benchmark on a trained Llama-style LM's real attention (aftershock.kv).

  device:  python benchmarks/kv_search.py device --data DIR --model MODEL_DIR --out OUT
      On the GPU (or CPU for a dry run with --small): held-out text (concatenated documents) at each
      context L; the model's prefill of L + T tokens gives, per layer and KV head, the keys, values and
      queries. Keys [n_sink, L - window) are "indexed"; the T tail queries (positions L..L+T-1) are the
      decode queries, with sinks + positions >= L - window static. Per method: recall@100 of the exact
      top-100 indexed keys, fraction of indexed keys scanned, relative error of the attention output
      (static + retrieved, LSE-merged, vs full attention); then next-token accuracy / perplexity of the
      model on the T tail tokens with each method live in every layer (HF hook), and decode-step latency
      (model step with retrieval attention vs sdpa full attention). Writes results.json and dumps one
      layer's keys/values/queries at 64K for the faiss rows.
  faiss:   python benchmarks/kv_search.py faiss --dump DIR --results RESULTS.json
      On this CPU (faiss-cpu is not on the device): faiss IndexFlatIP and IndexIVFFlat (nprobe sweep) over
      the dumped keys, the same metrics, plus Aftershock's rows on the same layer for a side-by-side check.
  table:   python benchmarks/kv_search.py table --results RESULTS.json   (markdown tables)
  plot:    python benchmarks/kv_search.py plot --results RESULTS.json [--extra FAISS.json] --out PNG
  mass:    python benchmarks/kv_search.py mass --dump DIR   (attention mass: sinks / static / top-k / indexed)

Device tasks (--tasks, in order, each skipped once --budget is spent): metrics:L (recall / scanned /
error tables), quality:L (perplexity with each method live), latency:L (whole HF decode step),
tensorlat:L (attention-only decode step through `RetrievalKVCache`).

Methods: full attention; StreamingLLM (sinks + window only); Quest-like page selection (pages of 16
keys, per-dimension min/max bound, top pages up to a key budget); IVF (k-means lists, nprobe, exact
within probed lists; on the device a torch implementation, 'ivf-torch'); Aftershock DenseBlockIndex
without ('aftershock') and with query-aware construction ('aftershock-qa'). Quest and IVF are evaluated
by masking the exact score matrix to their candidate sets (the same retrieved sets as the real
structures, not their speed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aftershock.eval.metrics import recall_at_k  # noqa: E402
from aftershock.index import SearchResult  # noqa: E402
from aftershock.kv import DenseConfig, DenseSearchParams, RetrievalConfig  # noqa: E402
from aftershock.kv.attention import KVRetriever, attend, merge  # noqa: E402
from aftershock.kv.index import exact_topk, kmeans  # noqa: E402

N_SINK, WINDOW, TOP_K, PAGE = 4, 256, 100, 16
AS_GRID = [(0.02, 24, 16), (0.1, 24, 16), (0.2, 24, 16), (0.2, 32, 16), (0.3, 32, 16), (0.5, 32, 16), (1.0, 0, 1)]
NPROBE_FRAC = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
QUEST_FRAC = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------- capture
def capture(model, ids):
    """Full-attention prefill of ``ids`` (1, S); returns logits and per layer (q (H,S,D), k, v (n_kv,S,D))."""
    from transformers import AttentionInterface

    store = {}

    def fn(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kw):
        store[module.layer_idx] = (query[0].float(), key[0].float(), value[0].float())
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                               enable_gqa=True)
        return out.transpose(1, 2), None

    AttentionInterface.register("aftershock_capture", fn)
    model.set_attn_implementation("aftershock_capture")
    with torch.no_grad():
        model(input_ids=ids, logits_to_keep=1)
    model.set_attn_implementation("sdpa")
    return None, [store[i] for i in range(len(store))]


# ----------------------------------------------------------------------------------------------- baselines
class MaskRetriever(KVRetriever):
    """A baseline's retrieved set, computed by masking exact scores to its candidates (same ids as the
    real structure would return). ``cand(q (Hq, D) of one KV group) -> bool mask (Hq, n)`` + scanned count."""

    def __init__(self, k, v, start, end, kind, param, seed=0):
        super().__init__([None] * k.shape[0], k[:, start:end], v[:, start:end], start, end)
        self.kind, self.param = kind, param
        n = end - start
        self.n = n
        self.scanned = []
        if kind == "ivf":
            nlist = max(1, int(round(4 * math.sqrt(n))))
            self.lists = []
            for j in range(k.shape[0]):
                c, a = kmeans(self.k_cpu[j].float(), nlist, 8, seed)
                self.lists.append((c, a, torch.bincount(a, minlength=nlist)))
        elif kind == "quest":
            n_pages = -(-n // PAGE)
            pad = n_pages * PAGE - n
            self.pages = []
            for j in range(k.shape[0]):
                kk = self.k_cpu[j].float()
                hi = torch.nn.functional.pad(kk, (0, 0, 0, pad), value=float("-inf")).view(n_pages, PAGE, -1).amax(1)
                lo = torch.nn.functional.pad(kk, (0, 0, 0, pad), value=float("inf")).view(n_pages, PAGE, -1).amin(1)
                self.pages.append((lo, hi))

    def search(self, q, k, params=None):
        n_heads, lq, d = q.shape
        g = n_heads // len(self.indexes)
        out = []
        for j in range(len(self.indexes)):
            qq = q[j * g:(j + 1) * g].reshape(-1, d).float()
            s = qq @ self.k_cpu[j].float().T
            if self.kind == "ivf":
                c, a, sizes = self.lists[j]
                nprobe = max(1, int(round(self.param * c.shape[0])))
                probe = (qq @ c.T).topk(nprobe, dim=1).indices
                ok = torch.zeros(qq.shape[0], c.shape[0], dtype=torch.bool, device=qq.device)
                ok.scatter_(1, probe, True)
                s = s.masked_fill(~ok[:, a], float("-inf"))
                self.scanned.append(sizes[probe].sum(1).float().cpu() / self.n)
                kk = k
            elif self.kind == "quest":
                lo, hi = self.pages[j]
                ub = torch.maximum(qq[:, None, :] * lo[None], qq[:, None, :] * hi[None]).sum(-1)
                n_sel = max(1, int(round(self.param * self.n / PAGE)))
                sel = ub.topk(min(n_sel, ub.shape[1]), dim=1).indices
                ok = torch.zeros_like(ub, dtype=torch.bool).scatter_(1, sel, True)
                s = s.masked_fill(~ok.repeat_interleave(PAGE, 1)[:, :self.n], float("-inf"))
                kk = min(n_sel * PAGE, self.n)  # Quest attends every key of its pages
                self.scanned.append(torch.full((qq.shape[0],), kk / self.n))
            elif self.kind == "flat":
                kk = k
                self.scanned.append(torch.ones(qq.shape[0]))
            else:  # streaming: nothing retrieved
                out.append(np.full((g, lq, 1), -1, np.int64))
                self.scanned.append(torch.zeros(qq.shape[0]))
                continue
            kk = min(kk, self.n)
            top = s.topk(kk, dim=1)
            ids = torch.where(torch.isfinite(top.values), top.indices + self.start, -1)
            out.append(ids.view(g, lq, kk).cpu().numpy())
        return np.concatenate(out)


class ASRetriever(KVRetriever):
    """Aftershock's retriever recording per-query search stats (scanned fraction) and CPU search time."""

    def search(self, q, k, params=None):
        t0 = time.perf_counter()
        ids = super().search(q, k, params)
        self.search_s = getattr(self, "search_s", 0.0) + time.perf_counter() - t0
        if not hasattr(self, "scanned"):
            self.scanned = []
        self.scanned.append(torch.as_tensor(self.last_stats["keys_scored"] / (self.end - self.start)))
        return ids


def builder_for(method, param=None):
    if method.startswith("aftershock"):
        return ASRetriever.build
    kind = {"ivf-torch": "ivf", "quest": "quest", "streaming": "streaming", "flat-torch": "flat"}[method]
    return lambda k, v, start, end, queries, cfg, device=None: MaskRetriever(k, v, start, end, kind, param)


# ----------------------------------------------------------------------------------------------- metrics
def layer_metrics(q, k, v, L, T, retriever, scale, params=None, top_k=TOP_K):
    """On captured tensors of one layer: recall@100 vs exact top-100 of the indexed keys, scanned fraction,
    relative attention-output error of static + retrieved vs full causal attention."""
    H = q.shape[0]
    n_kv = k.shape[0]
    g = H // n_kv
    start, end = retriever.start, retriever.end
    qt = q[:, L:L + T]
    true, true_s = [], []
    for j in range(n_kv):
        ts, ti = exact_topk(qt[j * g:(j + 1) * g].reshape(-1, q.shape[-1]), k[j, start:end], TOP_K)
        true.append(ti.view(g, T, -1) + start)
        true_s.append(ts.view(g, T, -1))
    true = torch.cat(true).cpu().numpy()
    true_s = torch.cat(true_s).float().cpu().numpy()
    retriever.scanned = []
    ids = retriever.search(qt, top_k, params)
    scanned = float(torch.cat(retriever.scanned).float().mean())
    exact = SearchResult(true_s.reshape(H * T, -1), true.reshape(H * T, -1).astype(np.int64))
    got = ids.cpu().numpy() if hasattr(ids, "cpu") else np.asarray(ids)
    recall = recall_at_k(exact, got.reshape(H * T, -1), TOP_K)
    pos = torch.arange(L + T, device=q.device)
    qpos = pos[L:L + T]
    keep = torch.cat([pos[:N_SINK], pos[end:]])
    ks, vs = k[:, keep].repeat_interleave(g, 0), v[:, keep].repeat_interleave(g, 0)
    o1, l1 = attend(qt, ks, vs, scale, keep[None, :] <= qpos[:, None])
    if (ids >= 0).any():
        o2, l2 = retriever.partial(qt, scale, top_k, ids=ids)
        o, _ = merge(o1, l1, o2, l2)
    else:
        o = o1
    ref, _ = attend(qt, k.repeat_interleave(g, 0)[:, :L + T], v.repeat_interleave(g, 0)[:, :L + T], scale,
                    pos[None, :] <= qpos[:, None])
    err = float(((o - ref).norm(dim=-1) / ref.norm(dim=-1).clamp(min=1e-12)).mean())
    return {"recall": recall, "scanned": scanned, "rel_err": err}


def tail_quality(model, ids, L, T, method=None, cfg=None, builder=None):
    """Next-token loss/accuracy on tokens L+1..L+T given the prefix, one method live in every layer."""
    from aftershock.kv.hf import disable_retrieval, enable_retrieval

    x = ids[:, :L + T]
    with torch.no_grad():
        if method is None:
            model.set_attn_implementation("sdpa")
            logits = model(input_ids=x).logits[0, L - 1:L + T - 1].float()
        else:
            enable_retrieval(model, cfg, builder)
            out = model(input_ids=x[:, :L], use_cache=True)
            first = out.logits[0, -1:].float()
            out2 = model(input_ids=x[:, L:L + T - 1], past_key_values=out.past_key_values, use_cache=True)
            logits = torch.cat([first, out2.logits[0].float()])
            disable_retrieval(model)
    tgt = x[0, L:L + T]
    nll = torch.nn.functional.cross_entropy(logits, tgt)
    return {"ppl": float(torch.exp(nll)), "nll": float(nll), "acc": float((logits.argmax(-1) == tgt).float().mean())}


def scan_at_recall(points, target=0.9):
    ok = [p["scanned"] for p in points if p["recall"] >= target]
    return min(ok) if ok else None


# ----------------------------------------------------------------------------------------------- device run
def run_device(a):
    from transformers import LlamaForCausalLM

    t_start = time.time()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32  # bf16: flash attention (GQA) at 128K
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=dtype).to(dev).eval() if a.model else None
    if model is None:  # dry run: a random tiny model of the same shape
        sys.path.insert(0, str(Path(__file__).parent))
        from kv_train_lm import model_config

        cfg = model_config()
        cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size = 2, 128, 256
        model = LlamaForCausalLM(cfg).to(dev).eval()
    held = torch.from_numpy(np.fromfile(Path(a.data) / "heldout.u16", np.uint16).astype(np.int64))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "n_sink": N_SINK, "window": WINDOW,
           "top_k": TOP_K, "T": a.T, "ppl_T": a.ppl_T, "block_size": a.block_size, "metrics": {}, "quality": {}, "latency": {}, "as_grid": AS_GRID}
    lc = Path(a.model or "") / "loss_curve.json"
    if a.model and lc.exists():
        res["loss_curve"] = json.loads(lc.read_text())
    base_cfg = DenseConfig(block_size=a.block_size)

    def save():
        (out / "results.json").write_text(json.dumps(res, indent=1))

    def budget_left():
        return a.budget - (time.time() - t_start)

    scale = model.config.head_dim ** -0.5

    def metrics(L):
        T = a.T
        ids = held[:L + T][None].to(dev)
        t0 = time.time()
        logits, layers = capture(model, ids)
        log(f"L={L}: capture {time.time() - t0:.1f}s")
        rows = {}
        layer_sel = range(len(layers)) if L <= a.full_layers_max else a.layers
        for method, param_list in [("streaming", [None]), ("quest", QUEST_FRAC), ("ivf-torch", NPROBE_FRAC),
                                   ("aftershock", AS_GRID), ("aftershock-qa", AS_GRID)]:
            pts = {str(p): [] for p in param_list}
            tb = time.time()
            for li in layer_sel:
                q, k, v = layers[li]
                start, end = N_SINK, L - WINDOW
                if method.startswith("aftershock"):
                    icfg = base_cfg.with_(query_aware=method.endswith("qa"))
                    r = builder_for(method)(k, v, start, end, q[:, :L] if icfg.query_aware else None, icfg)
                    for p in param_list:
                        pts[str(p)].append(layer_metrics(q, k, v, L, T, r, scale,
                                                         DenseSearchParams(*p)))
                else:
                    r = builder_for(method, param_list[0])(k, v, start, end, None, None)
                    for p in param_list:
                        r.param = p
                        pts[str(p)].append(layer_metrics(q, k, v, L, T, r, scale))
                if L == a.dump_L and li == a.dump_layer and method == "aftershock-qa":
                    dump(out, q, k, v, L, T, res)
            rows[method] = [{"param": p, **{m: float(np.mean([x[m] for x in v_])) for m in ("recall", "scanned",
                            "rel_err")}} for p, v_ in pts.items()]
            log(f"L={L} {method}: {time.time() - tb:.1f}s " + " ".join(
                f"[{r_['param']}: R={r_['recall']:.3f} scan={r_['scanned']:.4f} err={r_['rel_err']:.4f}]"
                for r_ in rows[method]))
        res["metrics"][str(L)] = {"layers": list(layer_sel), "n_indexed": L - WINDOW - N_SINK, "rows": rows}

    def quality(L):
        ids = held[a.ppl_offset:a.ppl_offset + L + a.ppl_T][None].to(dev)
        q_rows = {"full": tail_quality(model, ids, L, a.ppl_T)}
        m = res["metrics"].get(str(L)) or next(iter(res["metrics"].values()))
        for method in ("streaming", "quest", "ivf-torch", "aftershock", "aftershock-qa"):
            pick = pick_point(m["rows"][method], method)
            rc = RetrievalConfig(n_sink=N_SINK, window=WINDOW, top_k=TOP_K,
                                 index=base_cfg.with_(query_aware=method.endswith("qa")),
                                 search=DenseSearchParams(*pick)
                                 if method.startswith("aftershock") else DenseSearchParams())
            q_rows[method] = {"param": str(pick), **tail_quality(model, ids, L, a.ppl_T, method, rc,
                                                                 builder_for(method, pick))}
            log(f"quality L={L} {method} {q_rows[method]}")
        res["quality"][str(L)] = q_rows

    def lat(L):
        m = res["metrics"].get("65536") or next(iter(res["metrics"].values()), None)
        pick = pick_point(m["rows"]["aftershock-qa"], "aftershock-qa") if m else (0.2, 32, 16)
        res["latency"][str(L)] = latency(model, held[:L + 64][None].to(dev), L, base_cfg, a.steps, pick)
        log(f"latency L={L}: {res['latency'][str(L)]}")

    def lat_tensor(L):
        m = res["metrics"].get("65536") or next(iter(res["metrics"].values()), None)
        pick = pick_point(m["rows"]["aftershock-qa"], "aftershock-qa") if m else (0.2, 32, 16)
        r = latency_tensor(model, held[:L + a.steps][None].to(dev), L, base_cfg, a.steps, pick)
        res.setdefault("latency_tensor", {})[str(L)] = r
        log(f"tensor latency L={L}: {r}")

    fns = {"metrics": metrics, "quality": quality, "latency": lat, "tensorlat": lat_tensor}
    for task in a.tasks:
        name, L = task.split(":")
        if budget_left() < 20:
            log(f"skip {task}: budget")
            continue
        try:
            fns[name](int(L))
        except Exception as e:  # keep what the other tasks measure
            import traceback

            traceback.print_exc()
            res.setdefault("errors", []).append(f"{task}: {e!r}")
        if dev == "cuda":
            torch.cuda.empty_cache()
        save()
    res["seconds"] = round(time.time() - t_start, 1)
    save()


def pick_point(rows, method):
    """The operating point used live: the cheapest with recall >= 0.9 (else the best recall)."""
    good = [r for r in rows if r["recall"] >= 0.9]
    r = min(good, key=lambda r: r["scanned"]) if good else max(rows, key=lambda r: r["recall"])
    p = r["param"]
    return tuple(json.loads(p.replace("(", "[").replace(")", "]"))) if p.startswith("(") else (
        None if p == "None" else float(p))


def latency(model, ids, L, base_cfg, steps, pick):
    """Median model decode step (ms) at context L: sdpa full attention vs retrieval attention (query-aware
    index, chosen operating point), with the CPU search time per step."""
    from aftershock.kv.hf import disable_retrieval, enable_retrieval, retrievers

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def run(cache):
        times = []
        for t in range(steps):
            tok = ids[:, L + t:L + t + 1]
            sync()
            t0 = time.perf_counter()
            o = model(input_ids=tok, past_key_values=cache, use_cache=True)
            sync()
            times.append(time.perf_counter() - t0)
            cache = o.past_key_values
        return float(np.median(times[2:]) * 1e3)

    out = {}
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        o = model(input_ids=ids[:, :L], use_cache=True, logits_to_keep=1)
        out["full_ms"] = run(o.past_key_values)
        del o
        for name, params in [("retrieval", DenseSearchParams(*pick))]:
            out["params"] = list(pick)
            rc = RetrievalConfig(n_sink=N_SINK, window=WINDOW, top_k=TOP_K, index=base_cfg.with_(query_aware=True),
                                 search=params)
            enable_retrieval(model, rc, ASRetriever.build)
            sync()
            t0 = time.perf_counter()
            o = model(input_ids=ids[:, :L], use_cache=True, logits_to_keep=1)
            sync()
            out["prefill_and_build_s"] = round(time.perf_counter() - t0, 2)
            rs = [r for r in retrievers(model) if r is not None]
            for r in rs:
                r.search_s = 0.0
            out[f"{name}_ms"] = run(o.past_key_values)
            out["search_ms_per_step"] = sum(r.search_s for r in rs) / steps * 1e3
            out["scanned"] = float(torch.cat([torch.cat(r.scanned) for r in rs]).float().mean())
            disable_retrieval(model)
            del o
    return out


def latency_tensor(model, ids, L, base_cfg, steps, pick):
    """Attention-only decode step (ms, median over steps, summed over all layers) through the tensor API:
    full attention (sdpa over the whole bf16 cache on the GPU) vs `RetrievalKVCache.attention` (CPU index
    search + gather + static attention on the GPU + LSE merge), on the model's real next-token queries."""
    from aftershock.kv import RetrievalKVCache

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    _, layers = capture(model, ids[:, :L + steps])
    rc = RetrievalConfig(n_sink=N_SINK, window=WINDOW, top_k=TOP_K, index=base_cfg.with_(query_aware=True),
                         search=DenseSearchParams(*pick))
    dt = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    t0 = time.perf_counter()
    caches = [RetrievalKVCache(k[:, :L].to(dt), v[:, :L].to(dt), q[:, :L], rc) for q, k, v in layers]
    build_s = time.perf_counter() - t0
    full_t, ret_t, search_t, errs = [], [], [], []
    kfull = [k.to(dt) for _, k, _ in layers]
    vfull = [v.to(dt) for _, _, v in layers]
    for t in range(steps):
        p = L + t
        for c, (q, k, v) in zip(caches, layers):
            c.append(k[:, p:p + 1].to(dt), v[:, p:p + 1].to(dt))
        qs = [q[:, p:p + 1].to(dt) for q, _, _ in layers]
        sync()
        a = time.perf_counter()
        fo = [torch.nn.functional.scaled_dot_product_attention(qq[None], kk[None, :, :p + 1], vv[None, :, :p + 1],
                                                               enable_gqa=True)[0]
              for qq, kk, vv in zip(qs, kfull, vfull)]
        sync()
        b = time.perf_counter()
        ro = [c.attention(qq) for c, qq in zip(caches, qs)]
        sync()
        e = time.perf_counter()
        full_t.append(b - a)
        ret_t.append(e - b)
        errs.append(float(np.mean([((r.float() - f.float()).norm(dim=-1) / f.float().norm(dim=-1)).mean().item()
                                   for r, f in zip(ro, fo)])))
        sq = 0.0
        for c, qq in zip(caches, qs):
            s0 = time.perf_counter()
            c.retriever.search(qq, TOP_K, rc.search)
            sq += time.perf_counter() - s0
        search_t.append(sq)
    med = lambda x: float(np.median(x[2:]) * 1e3)  # noqa: E731
    return {"full_attn_ms": med(full_t), "retrieval_attn_ms": med(ret_t), "search_ms": med(search_t),
            "build_s": round(build_s, 2), "rel_err": float(np.mean(errs)), "params": list(pick),
            "layers": len(layers)}


def dump(out, q, k, v, L, T, res):
    """One layer at context L for the faiss rows on the CPU: keys/values fp16, queries (prefill sample +
    tail) fp16."""
    g = q.shape[0] // k.shape[0]  # KV head 0 and its query heads (one file stays under 16 MiB at 64K)
    np.save(out / "kv_keys.npy", k[:1, :L + T].half().cpu().numpy())
    np.save(out / "kv_values.npy", v[:1, :L + T].half().cpu().numpy())
    sel = torch.randperm(L, generator=torch.Generator().manual_seed(0))[:4096].sort().values.to(q.device)
    np.savez(out / "kv_queries.npz", prefill=q[:g, sel].half().cpu().numpy(), tail=q[:g, L:L + T].half().cpu().numpy(),
             L=L, T=T)
    res["dump"] = {"L": L, "T": T}


# ----------------------------------------------------------------------------------------------- faiss (CPU)
def run_faiss(a):
    import faiss

    d = Path(a.dump)
    k = torch.from_numpy(np.load(d / "kv_keys.npy").astype(np.float32))
    v = torch.from_numpy(np.load(d / "kv_values.npy").astype(np.float32))
    z = np.load(d / "kv_queries.npz")
    L, T = int(z["L"]), int(z["T"])
    tail = torch.from_numpy(z["tail"].astype(np.float32))
    pre = torch.from_numpy(z["prefill"].astype(np.float32))
    H, n_kv, dim = tail.shape[0], k.shape[0], k.shape[-1]
    g = H // n_kv
    q = torch.zeros(H, L + T, dim)
    q[:, L:L + T] = tail
    start, end = N_SINK, L - WINDOW
    scale = dim ** -0.5
    rows = {}

    class FaissRetriever(KVRetriever):
        def __init__(self, index_factory):
            super().__init__([None] * n_kv, k[:, start:end], v[:, start:end], start, end)
            self.faiss = [index_factory(self.k_cpu[j].numpy()) for j in range(n_kv)]
            self.nprobe = 1

        def search(self, qq, kk, params=None):
            out = []
            for j, ix in enumerate(self.faiss):
                x = qq[j * g:(j + 1) * g].reshape(-1, dim).numpy()
                if hasattr(ix, "nprobe"):
                    ix.nprobe = self.nprobe
                    sizes = np.array([ix.invlists.list_size(i) for i in range(ix.nlist)])
                    _, probe = ix.quantizer.search(x, self.nprobe)
                    self.scanned.append(torch.as_tensor(sizes[probe].sum(1) / (self.end - self.start)))
                else:
                    self.scanned.append(torch.ones(x.shape[0]))
                _, ii = ix.search(x, kk)
                out.append(np.where(ii >= 0, ii + self.start, -1).reshape(g, T, kk))
            return np.concatenate(out)

    def flat(x):
        ix = faiss.IndexFlatIP(dim)
        ix.add(x)
        return ix

    def ivf(x):
        nlist = int(round(4 * math.sqrt(x.shape[0])))
        ix = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ix.train(x)
        ix.add(x)
        return ix

    t0 = time.time()
    fr = FaissRetriever(flat)
    rows["faiss-flat"] = [{"param": "exact", **layer_metrics(q, k, v, L, T, fr, scale)}]
    fr = FaissRetriever(ivf)
    nlist = fr.faiss[0].nlist
    rows["faiss-ivf"] = []
    for f in NPROBE_FRAC:
        fr.nprobe = max(1, int(round(f * nlist)))
        rows["faiss-ivf"].append({"param": f"nprobe={fr.nprobe}/{nlist}", **layer_metrics(q, k, v, L, T, fr, scale)})
    for qa in (False, True):
        name = "aftershock-qa" if qa else "aftershock"
        r = builder_for(name)(k, v, start, end, pre if qa else None, DenseConfig(block_size=a.block_size,
                                                                                 query_aware=qa))
        rows[name] = []
        for p in AS_GRID:
            rows[name].append({"param": str(p), **layer_metrics(q, k, v, L, T, r, scale,
                                                                DenseSearchParams(*p))})
    for name, rr in rows.items():
        log(name, " ".join(f"[{r['param']}: R={r['recall']:.3f} scan={r['scanned']:.4f} err={r['rel_err']:.4f}]"
                           for r in rr))
    log(f"faiss rows in {time.time() - t0:.1f}s")
    res = json.loads(Path(a.results).read_text()) if Path(a.results).exists() else {}
    res["faiss_cpu"] = {"L": L, "layer": a.layer, "rows": rows}
    Path(a.results).write_text(json.dumps(res, indent=1))


# ----------------------------------------------------------------------------------------------- table
def run_table(a):
    res = json.loads(Path(a.results).read_text())
    for L, m in res.get("metrics", {}).items():
        print(f"\n### L = {L} tokens ({m['n_indexed']} indexed keys, layers {m['layers']}, all KV heads, "
              f"T = {res['T']} decode queries x all query heads)\n")
        print("| method | parameter | recall@100 | keys scanned | attention rel. error |\n|---|---|---|---|---|")
        for method, rows in m["rows"].items():
            for r in rows:
                print(f"| {method} | {r['param']} | {r['recall']:.3f} | {100 * r['scanned']:.2f}% | {r['rel_err']:.4f} |")
        print("\nscanned fraction at recall@100 >= 0.9: " + ", ".join(
            f"{k}: {('%.2f%%' % (100 * s)) if (s := scan_at_recall(v)) is not None else 'not reached'}"
            for k, v in m["rows"].items()))
    if "faiss_cpu" in res:
        f = res["faiss_cpu"]
        print(f"\n### faiss-cpu on the dumped layer {f['layer']} at L = {f['L']} (this CPU), with Aftershock side by side\n")
        print("| method | parameter | recall@100 | keys scanned | attention rel. error |\n|---|---|---|---|---|")
        for method, rows in f["rows"].items():
            for r in rows:
                print(f"| {method} | {r['param']} | {r['recall']:.3f} | {100 * r['scanned']:.2f}% | {r['rel_err']:.4f} |")
    for L, q in res.get("quality", {}).items():
        print(f"\n### next-token quality, {res.get('ppl_T', '')} held-out tokens after a {L}-token prefix\n")
        print("| method | operating point | perplexity | vs full | next-token acc. |\n|---|---|---|---|---|")
        full = q["full"]["ppl"]
        for method, r in q.items():
            print(f"| {method} | {r.get('param', '-')} | {r['ppl']:.3f} | {100 * (r['ppl'] / full - 1):+.2f}% | "
                  f"{r['acc']:.4f} |")
    if res.get("latency_tensor"):
        print("\n### decode-step attention latency, tensor API (ms, median, all layers; GPU sdpa vs retrieval)\n")
        print("| context | full attention (sdpa, GPU) | retrieval attention | of which CPU search | index build, all "
              "layers (s) | rel. error vs full | search params |")
        print("|---|---|---|---|---|---|---|")
        for L, r in res["latency_tensor"].items():
            print(f"| {L} | {r['full_attn_ms']:.2f} | {r['retrieval_attn_ms']:.2f} | {r['search_ms']:.2f} | "
                  f"{r['build_s']} | {r['rel_err']:.4f} | {r['params']} |")
    if res.get("latency"):
        print("\n### decode-step latency (ms, median, whole model step incl. CPU search)\n")
        print("| context | full attention (sdpa) | retrieval attention | CPU search / step | prefill + index build (s) |")
        print("|---|---|---|---|---|")
        for L, r in res["latency"].items():
            print(f"| {L} | {r['full_ms']:.2f} | {r['retrieval_ms']:.2f} | {r['search_ms_per_step']:.2f} | "
                  f"{r['prefill_and_build_s']} |")


def run_mass(a):
    """Where the attention mass of the dumped tail queries goes: sinks, static part, top-100 / top-1000 of the
    indexed keys, all indexed keys (why a top-100 output error is what it is)."""
    d = Path(a.dump)
    k = torch.from_numpy(np.load(d / "kv_keys.npy").astype(np.float32))[0]
    z = np.load(d / "kv_queries.npz")
    L, T = int(z["L"]), int(z["T"])
    q = torch.from_numpy(z["tail"].astype(np.float32))
    rows = []
    for h in range(q.shape[0]):
        for t in range(T):
            w = torch.softmax(q[h, t] @ k[:L + t + 1].T / math.sqrt(k.shape[1]), 0)
            idx = w[N_SINK:L - WINDOW]
            rows.append([float(w[:N_SINK].sum()), float(w[:N_SINK].sum() + w[L - WINDOW:].sum()),
                         float(idx.topk(TOP_K).values.sum()), float(idx.topk(1000).values.sum()), float(idx.sum())])
    m = np.mean(rows, 0)
    print(f"L={L}, {len(rows)} tail queries: mass on sinks {m[0]:.3f}, static part {m[1]:.3f}, top-100 indexed "
          f"{m[2]:.3f}, top-1000 indexed {m[3]:.3f}, all indexed {m[4]:.3f}")


def run_plot(a):
    """Recall@100 vs keys scanned at each context (and the faiss-cpu rows when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(Path(a.results).read_text())
    panels = [(f"L={L}, {len(m['layers'])} layers (H200)", m["rows"]) for L, m in res.get("metrics", {}).items()]
    for extra in a.extra or []:
        f = json.loads(Path(extra).read_text()).get("faiss_cpu")
        if f:
            panels.append((f"L={f['L']}, layer {f['layer']} KV head 0 (faiss-cpu, this CPU)", f["rows"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        for method, rr in rows.items():
            pts = sorted((r["scanned"] * 100, r["recall"]) for r in rr if r["scanned"] > 0)
            if pts:
                ax.plot(*zip(*pts), "o-", label=method, ms=3)
        ax.set_xscale("log")
        ax.axhline(0.9, color="gray", lw=0.5)
        ax.axvline(3, color="gray", lw=0.5)
        ax.set_xlabel("keys scanned (%)")
        ax.set_ylabel("recall@100")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("device")
    d.add_argument("--data", required=True)
    d.add_argument("--model", default=None, help="trained model dir (omit for a random-model dry run)")
    d.add_argument("--out", required=True)
    d.add_argument("--tasks", nargs="+", default=["metrics:65536", "latency:16384", "latency:65536",
                                                  "latency:131072", "quality:16384", "metrics:16384",
                                                  "quality:65536", "metrics:131072"],
                   help="in order; a task is skipped once the budget is spent")
    d.add_argument("--layers", type=int, nargs="+", default=[1, 3, 5], help="layers measured above full_layers_max")
    d.add_argument("--full-layers-max", type=int, default=65536)
    d.add_argument("--ppl-offset", type=int, default=200000)
    d.add_argument("--ppl-T", type=int, default=512)
    d.add_argument("--steps", type=int, default=12)
    d.add_argument("--T", type=int, default=128)
    d.add_argument("--block-size", type=int, default=64)
    d.add_argument("--dump-L", type=int, default=65536)
    d.add_argument("--dump-layer", type=int, default=3)
    d.add_argument("--budget", type=float, default=240.0, help="seconds; later parts are skipped past it")
    f = sub.add_parser("faiss")
    f.add_argument("--dump", required=True)
    f.add_argument("--results", required=True)
    f.add_argument("--layer", type=int, default=3)
    f.add_argument("--block-size", type=int, default=64)
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    ms = sub.add_parser("mass")
    ms.add_argument("--dump", required=True)
    pl = sub.add_parser("plot")
    pl.add_argument("--results", required=True)
    pl.add_argument("--extra", nargs="*", help="results files with faiss_cpu rows")
    pl.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    {"device": run_device, "faiss": run_faiss, "table": run_table, "plot": run_plot,
     "mass": run_mass}[a.cmd](a)


if __name__ == "__main__":
    main()
