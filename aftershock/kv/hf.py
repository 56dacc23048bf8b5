"""Hugging Face transformers hook: run a Llama-family decoder with ``attention="retrieval"``.

    from aftershock.kv.hf import enable_retrieval, reset_retrieval
    enable_retrieval(model, RetrievalConfig(n_sink=4, window=256, top_k=100))
    out = model(input_ids=prompt, use_cache=True)              # prefill: exact attention, builds the indexes
    out = model(input_ids=next_tok, past_key_values=out.past_key_values, use_cache=True)  # retrieval attention
    reset_retrieval(model)   # forget the indexes (a new prefill, with an empty cache, also rebuilds them)

The attention function is registered in transformers' `AttentionInterface` as ``"retrieval"``. The first
forward of a sequence (the prefill) computes exact causal attention and, per layer, indexes the key cache
positions [n_sink, S - window) with the prefill queries (query-aware construction when
``config.index.query_aware``); later forwards attend the static part (sinks + positions >= S - window,
read from the model's KV cache) exactly and the indexed part through retrieval, merged by log-sum-exp.
The model's own cache object keeps every key on the device (the offloaded copy lives in CPU memory next to
the index); `RetrievalKVCache` is the tensor API that holds only the static part on the device.
Batch size 1, no padding mask (the hook applies the causal mask by position).
"""

from __future__ import annotations

import torch

from aftershock.errors import ConfigError
from aftershock.kv.attention import KVRetriever, RetrievalConfig, retrieval_attention

NAME = "retrieval"


class _LayerState:
    def __init__(self, config: RetrievalConfig, builder=None):
        self.config = config
        self.builder = builder or KVRetriever.build
        self.retriever: KVRetriever | None = None
        self.end = 0


def retrieval_attention_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kw):
    """transformers attention interface: query (B, H, Lq, D), key/value (B, n_kv, S, D) (the whole cache)."""
    st: _LayerState | None = getattr(module, "_aftershock_kv", None)
    if st is None:
        raise ConfigError("this model's attention is 'retrieval' but enable_retrieval(model, ...) was not called")
    if query.shape[0] != 1:
        raise ConfigError(f"retrieval attention runs batch size 1, got {query.shape[0]}; loop over sequences")
    c = st.config
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    q, k, v = query[0], key[0], value[0]
    lq, s = q.shape[1], k.shape[1]
    if lq == s and st.retriever is not None:  # a new sequence's prefill (empty cache): drop the old index
        st.retriever = None
    if st.retriever is None:
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, is_causal=lq == s and lq > 1, scale=scale, enable_gqa=True,
            attn_mask=None if lq == s else (torch.arange(s, device=q.device)[None, :]
                                           <= torch.arange(s - lq, s, device=q.device)[:, None]))
        end = s - lq - c.window if lq < s else s - c.window
        end = max(end, 0)
        if end > c.n_sink:
            st.retriever = st.builder(k, v, c.n_sink, end, q if c.index.query_aware else None, c.index)
            st.end = end
        return out.transpose(1, 2), None
    keep = torch.cat([torch.arange(min(c.n_sink, s)), torch.arange(st.end, s)]).to(q.device)
    q_pos = torch.arange(s - lq, s, device=q.device)
    out = retrieval_attention(q, k[:, keep], v[:, keep], keep, q_pos, st.retriever, scale, c.top_k, c.search)
    return out.to(query.dtype).transpose(0, 1)[None], None


def enable_retrieval(model, config: RetrievalConfig | None = None, builder=None):
    """Switch ``model`` (a transformers decoder whose attention modules go through `AttentionInterface`)
    to retrieval attention; returns the model. ``builder(keys, values, start, end, queries, index_config)``
    replaces `KVRetriever.build` (any object with ``partial(q, scale, k, params)``, e.g. a baseline)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, retrieval_attention_forward)
    config = config or RetrievalConfig()
    n = 0
    for m in model.modules():
        if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups"):
            m._aftershock_kv = _LayerState(config, builder)
            n += 1
    if n == 0:
        raise ConfigError(f"{type(model).__name__} has no attention modules with layer_idx/num_key_value_groups; "
                          "retrieval attention supports Llama-family decoders")
    model.set_attn_implementation(NAME)
    return model


def reset_retrieval(model):
    """Forget the indexes (call before a new sequence)."""
    for m in model.modules():
        st = getattr(m, "_aftershock_kv", None)
        if st is not None:
            m._aftershock_kv = _LayerState(st.config, st.builder)


def disable_retrieval(model, attn_implementation: str = "sdpa"):
    for m in model.modules():
        if hasattr(m, "_aftershock_kv"):
            del m._aftershock_kv
    model.set_attn_implementation(attn_implementation)
    return model


def retrievers(model) -> list[KVRetriever | None]:
    """The per-layer retrievers built by the last prefill (None where the layer kept everything static)."""
    return [m._aftershock_kv.retriever for m in model.modules() if hasattr(m, "_aftershock_kv")]
