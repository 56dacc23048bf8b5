"""Decode-step attention with retrieval (RetrievalAttention, Liu et al. 2024) on `DenseBlockIndex`.

The keys of a layer split into a *static* part kept on the accelerator -- attention sinks (the first
``n_sink`` positions) and the most recent ``window`` positions plus every token appended after the
prefill -- and an *indexed* part offloaded to CPU memory under one `DenseBlockIndex` per KV head (GQA:
the ``n_heads / n_kv_heads`` query heads of a group search their KV head's index). A step computes exact
attention over the static part (torch, on the device), retrieves each query head's ``top_k`` keys from
the CPU index, attends over them, and merges the two partial results exactly with their log-sum-exp
weights: with every indexed key retrieved the output equals full attention.

Plain tensor API: `attend`, `merge`, `KVRetriever` (the indexed part of one layer) and
`RetrievalKVCache` (one layer's whole cache: static part + retriever, ``append`` and ``attention``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from aftershock.errors import ConfigError, InvalidVectorError
from aftershock.index.config import Config, check, is_int
from aftershock.kv.index import DenseBlockIndex, DenseConfig, DenseSearchParams


def attend(q, k, v, scale: float, mask=None):
    """Softmax attention of ``q`` (..., Lq, D) over ``k``/``v`` (..., S, D) in float32; ``mask`` (bool,
    broadcastable to (..., Lq, S)) keeps True entries. Returns (out (..., Lq, Dv), lse (..., Lq)); a row with
    no key gets out 0 and lse -inf."""
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return _softmax_out(s, v.float())


def _softmax_out(s, v):
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None])
    return torch.matmul(p.unsqueeze(-2), v).squeeze(-2) if v.dim() == s.dim() + 1 else torch.matmul(p, v), lse


def merge(o1, lse1, o2, lse2):
    """Exact merge of two attention partials over disjoint key sets: weights exp(lse_i - logaddexp)."""
    lse = torch.logaddexp(lse1, lse2)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    w1 = torch.exp(lse1 - safe).nan_to_num(0.0)
    w2 = torch.exp(lse2 - safe).nan_to_num(0.0)
    return o1 * w1[..., None] + o2 * w2[..., None], lse


def _check_heads(n_heads: int, n_kv: int):
    if n_kv < 1 or n_heads % n_kv:
        raise ConfigError(f"{n_heads} query heads are not a multiple of {n_kv} KV heads; GQA needs "
                          "n_heads = groups x n_kv_heads")
    return n_heads // n_kv


@dataclass
class RetrievalConfig(Config):
    """Static part (``n_sink`` first + ``window`` latest positions), ``top_k`` keys retrieved per query head,
    the index build (`DenseConfig`) and search (`DenseSearchParams`)."""

    n_sink: int = 4
    window: int = 256
    top_k: int = 100
    index: DenseConfig = field(default_factory=DenseConfig)
    search: DenseSearchParams = field(default_factory=DenseSearchParams)

    def __post_init__(self):
        for name in ("n_sink", "window"):
            v = getattr(self, name)
            check(is_int(v, 0), f"{name}={v!r} must be an integer >= 0")
        check(is_int(self.top_k, 1), f"top_k={self.top_k!r} must be an integer >= 1 (RetrievalAttention uses 100)")


class KVRetriever:
    """The offloaded part of one layer: positions [start, end) of each KV head in a `DenseBlockIndex`, with
    their keys and values in CPU memory for the gather."""

    def __init__(self, indexes, k_cpu, v_cpu, start: int, end: int):
        self.indexes, self.k_cpu, self.v_cpu = indexes, k_cpu, v_cpu
        self.start, self.end = int(start), int(end)
        self.last_stats: dict = {}  # of the last search: name -> per-(head, query) int64 array

    @classmethod
    def build(cls, keys, values, start: int, end: int, queries=None, config: DenseConfig | None = None,
              device=None) -> "KVRetriever":
        """``keys``/``values`` (n_kv, S, D); ``queries`` (n_heads, Sq, D) prefill queries, used by the
        query-aware construction (each KV head gets the queries of its group)."""
        n_kv = keys.shape[0]
        g = _check_heads(queries.shape[0], n_kv) if queries is not None else 1
        idx = []
        for j in range(n_kv):
            qj = queries[j * g:(j + 1) * g].reshape(-1, queries.shape[-1]) if queries is not None else None
            idx.append(DenseBlockIndex.build(keys[j, start:end].float(), config, queries=qj,
                                             ids=np.arange(start, end), device=device or keys.device))
        pin = torch.cuda.is_available()
        kc = keys[:, start:end].detach().to("cpu")
        vc = values[:, start:end].detach().to("cpu")
        if pin:
            kc, vc = kc.pin_memory(), vc.pin_memory()
        return cls(idx, kc, vc, start, end)

    def search(self, q, k: int, params: DenseSearchParams | None = None):
        """Ids (absolute positions) (n_heads, Lq, k), -1 padded, of the top keys of each query head."""
        n_heads, lq, d = q.shape
        g = _check_heads(n_heads, len(self.indexes))
        qn = q.detach().float().cpu().numpy()
        ids = np.empty((n_heads, lq, k), np.int64)
        stats = []
        for j, index in enumerate(self.indexes):
            res = index.search(qn[j * g:(j + 1) * g].reshape(-1, d), k, params)
            ids[j * g:(j + 1) * g] = res.ids.reshape(g, lq, k)
            stats.append(index.last_stats)
        self.last_stats = {name: np.concatenate([st[name] for st in stats]) for name in stats[0]} if stats else {}
        return ids

    def partial(self, q, scale: float, k: int, params: DenseSearchParams | None = None, ids=None):
        """Attention of ``q`` (n_heads, Lq, D) over its retrieved keys: (out, lse) on q's device."""
        n_heads, lq, d = q.shape
        g = n_heads // len(self.indexes)
        if ids is None:
            ids = self.search(q, k, params)
        valid = ids >= 0
        rows = torch.as_tensor(np.where(valid, ids - self.start, 0))
        kvh = torch.arange(n_heads) // g
        kr = self.k_cpu[kvh[:, None, None], rows]  # (H, Lq, k, D)
        vr = self.v_cpu[kvh[:, None, None], rows]
        kr = kr.to(q.device, non_blocking=True)
        vr = vr.to(q.device, non_blocking=True)
        s = torch.einsum("hld,hlkd->hlk", q.float(), kr.float()) * scale
        s = s.masked_fill(~torch.as_tensor(valid, device=q.device), float("-inf"))
        return _softmax_out(s, vr.float())


def retrieval_attention(q, k_static, v_static, static_pos, q_pos, retriever: KVRetriever | None, scale: float,
                        top_k: int, params: DenseSearchParams | None = None):
    """Attention of ``q`` (n_heads, Lq, D) at positions ``q_pos`` (Lq,) over static keys ``k_static``/
    ``v_static`` (n_kv, Ss, D) at ``static_pos`` (Ss,) (causal: a key counts when its position <= the
    query's) plus the keys ``retriever`` finds, merged by log-sum-exp. Returns float32 (n_heads, Lq, D)."""
    g = _check_heads(q.shape[0], k_static.shape[0])
    ks = k_static.repeat_interleave(g, dim=0)
    vs = v_static.repeat_interleave(g, dim=0)
    mask = static_pos[None, :] <= q_pos[:, None]
    o1, l1 = attend(q, ks, vs, scale, mask)
    if retriever is None:
        return o1
    o2, l2 = retriever.partial(q, scale, top_k, params)
    return merge(o1, l1, o2, l2)[0]


class RetrievalKVCache:
    """One layer's KV cache for retrieval attention (plain tensor API).

    ``keys``/``values`` (n_kv, S, D) after the prefill (RoPE applied, any device); ``queries`` (n_heads, S, D)
    the prefill queries (for the query-aware construction; optional). Positions [n_sink, S - window) go to
    the CPU index; the rest stays on the tensors' device. ``append`` adds new tokens to the static part;
    ``attention(q)`` attends the newest ``q.shape[1]`` tokens' queries (already appended)."""

    def __init__(self, keys, values, queries=None, config: RetrievalConfig | None = None, scale: float | None = None):
        if keys.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise InvalidVectorError(f"keys {tuple(keys.shape)} / values {tuple(values.shape)} must be "
                                     "(n_kv_heads, seq, head_dim) with the same heads and length")
        self.config = config or RetrievalConfig()
        c = self.config
        n_kv, s, d = keys.shape
        self.scale = scale if scale is not None else 1.0 / math.sqrt(d)
        end = max(c.n_sink, s - c.window)
        self.retriever = None
        if end - c.n_sink > 0:
            self.retriever = KVRetriever.build(keys, values, c.n_sink, end, queries, c.index)
        else:
            end = c.n_sink
        keep = torch.cat([torch.arange(min(c.n_sink, s)), torch.arange(end, s)]).to(keys.device)
        self.k_static = keys[:, keep]
        self.v_static = values[:, keep]
        self.pos = keep
        self.length = s

    def append(self, k_new, v_new):
        n = k_new.shape[1]
        self.k_static = torch.cat([self.k_static, k_new.to(self.k_static)], dim=1)
        self.v_static = torch.cat([self.v_static, v_new.to(self.v_static)], dim=1)
        self.pos = torch.cat([self.pos, torch.arange(self.length, self.length + n, device=self.pos.device)])
        self.length += n

    def attention(self, q):
        lq = q.shape[1]
        q_pos = torch.arange(self.length - lq, self.length, device=self.pos.device)
        return retrieval_attention(q, self.k_static, self.v_static, self.pos, q_pos, self.retriever, self.scale,
                                   self.config.top_k, self.config.search)
