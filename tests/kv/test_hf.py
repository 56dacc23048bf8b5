"""The transformers hook: a tiny random Llama (GQA) decodes with attention='retrieval'; with every key
retrieved and the exact bound the logits equal those of sdpa attention."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from aftershock.errors import ConfigError  # noqa: E402
from aftershock.kv import DenseConfig, DenseSearchParams, RetrievalConfig  # noqa: E402
from aftershock.kv.hf import disable_retrieval, enable_retrieval, reset_retrieval, retrievers  # noqa: E402


def _model():
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _decode(model, ids, steps):
    with torch.no_grad():
        out = model(input_ids=ids[:, :-steps], use_cache=True)
        logits = [out.logits[:, -1]]
        cache = out.past_key_values
        for t in range(steps):
            pos = ids.shape[1] - steps + t
            out = model(input_ids=ids[:, pos:pos + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits.append(out.logits[:, -1])
    return torch.stack(logits, 1)


def test_retrieval_decoding_matches_full_attention():
    model = _model()
    ids = torch.randint(0, 97, (1, 200), generator=torch.Generator().manual_seed(3))
    model.set_attn_implementation("sdpa")
    ref = _decode(model, ids, 3)
    cfg = RetrievalConfig(n_sink=2, window=16, top_k=400, index=DenseConfig(block_size=8, query_aware=True, knn=4),
                          search=DenseSearchParams(radius_factor=1.0, n_knn=0))
    enable_retrieval(model, cfg)
    got = _decode(model, ids, 3)
    rs = retrievers(model)
    assert len(rs) == 2 and all(r is not None and len(r.indexes) == 2 for r in rs)
    assert rs[0].end == 197 - 16
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # a second sequence without reset_retrieval: its prefill rebuilds the indexes
    ids2 = torch.randint(0, 97, (1, 150), generator=torch.Generator().manual_seed(4))
    got2 = _decode(model, ids2, 2)
    assert retrievers(model)[0].end == 148 - 16
    model.set_attn_implementation("sdpa")
    ref2 = _decode(model, ids2, 2)
    model.set_attn_implementation("retrieval")
    torch.testing.assert_close(got2, ref2, rtol=1e-4, atol=1e-4)
    # an aggressive search changes the output, but decoding still runs
    reset_retrieval(model)
    enable_retrieval(model, RetrievalConfig(n_sink=2, window=16, top_k=4, index=cfg.index))
    approx = _decode(model, ids, 3)
    assert approx.shape == ref.shape and not torch.allclose(approx, ref)
    with pytest.raises(ConfigError, match="batch size 1"):
        reset_retrieval(model)
        model(input_ids=ids.repeat(2, 1)[:, :50])
    disable_retrieval(model)
    torch.testing.assert_close(_decode(model, ids, 3), ref)
