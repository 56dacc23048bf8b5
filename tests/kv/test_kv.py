"""aftershock.kv on tiny random tensors: exactness of the LSE merge, recall 1.0 at maximal parameters,
GQA shapes, the HF hook, and input errors."""

import numpy as np
import pytest
import torch

from aftershock.errors import ConfigError, InvalidVectorError
from aftershock.kv import (DenseBlockIndex, DenseConfig, DenseSearchParams, RetrievalConfig, RetrievalKVCache,
                          attend, exact_topk, merge)

EXACT = DenseSearchParams(radius_factor=1.0, n_knn=0, threads=1)


def _full(q, k, v, scale):
    g = q.shape[0] // k.shape[0]
    return attend(q, k.repeat_interleave(g, 0), v.repeat_interleave(g, 0), scale)[0]


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(600, 16, generator=g) + torch.tensor([2.0] + [0.0] * 15)
    queries = torch.randn(40, 16, generator=g) * 1.5
    return keys, queries


@pytest.mark.parametrize("query_aware", [False, True])
def test_recall_one_at_maximal_parameters(data, query_aware):
    keys, queries = data
    idx = DenseBlockIndex.build(keys, DenseConfig(block_size=16, query_aware=query_aware, knn=4), queries=queries)
    assert idx.build_stats["query_aware"] is query_aware
    ts, ti = exact_topk(queries, keys, 10)
    res = idx.search(queries, 10, EXACT)
    stats = idx.last_stats
    assert (res.ids == ti.numpy()).mean() > 0.99  # ties aside, the same ranking
    assert all(set(a) == set(b) for a, b in zip(res.ids, ti.numpy()))
    np.testing.assert_allclose(res.scores, ts.numpy(), rtol=1e-4, atol=1e-4)
    assert set(stats) == {"blocks_estimated", "blocks_visited", "keys_scored"}
    assert all(v.dtype == np.int64 and v.shape == (len(queries),) for v in stats.values())
    assert (stats["keys_scored"] <= len(keys)).all()
    # a tighter search scans fewer keys
    idx.search(queries, 10, DenseSearchParams(radius_factor=0.3, n_knn=4))
    assert idx.last_stats["keys_scored"].mean() < stats["keys_scored"].mean()


def test_search_ids_padding_and_threads(data):
    keys, queries = data
    idx = DenseBlockIndex.build(keys[:20], DenseConfig(block_size=4), ids=np.arange(100, 120))
    res = idx.search(queries[:3].numpy(), 30, DenseSearchParams(radius_factor=1.0, n_knn=0, threads=2))
    assert res.ids.shape == (3, 30)
    assert (res.ids[:, :20] >= 100).all() and (res.ids[:, 20:] == -1).all()
    assert np.isneginf(res.scores[:, 20:]).all()


def test_roar_graph_links_co_retrieved_keys(data):
    keys, queries = data
    idx = DenseBlockIndex.build(keys, DenseConfig(block_size=16, query_aware=True, knn=8, roar_topk=5),
                                queries=queries)
    _, top = exact_topk(queries, keys, 5)
    pos = np.empty(len(keys), np.int64)
    pos[idx.row_ids] = np.arange(len(keys))
    best, other = pos[top[0, 0].item()], pos[top[0, 1].item()]
    assert other in idx.knn[best]


def test_merge_equals_full_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(4, 3, 8, generator=g), torch.randn(4, 50, 8, generator=g), torch.randn(4, 50, 8, generator=g)
    full, lse = attend(q, k, v, 0.3)
    o1, l1 = attend(q, k[:, :17], v[:, :17], 0.3)
    o2, l2 = attend(q, k[:, 17:], v[:, 17:], 0.3)
    o, l = merge(o1, l1, o2, l2)
    torch.testing.assert_close(o, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l, lse)
    # an empty side leaves the other unchanged
    e, le = attend(q, k[:, :0], v[:, :0], 0.3)
    torch.testing.assert_close(merge(o1, l1, e, le)[0], o1)


@pytest.mark.parametrize("n_heads,n_kv", [(4, 4), (6, 2), (4, 1)])
def test_retrieval_cache_all_keys_equals_full_attention_gqa(n_heads, n_kv):
    g = torch.Generator().manual_seed(2)
    s, d = 300, 16
    keys, values = torch.randn(n_kv, s, d, generator=g), torch.randn(n_kv, s, d, generator=g)
    queries = torch.randn(n_heads, s, d, generator=g)
    cfg = RetrievalConfig(n_sink=4, window=32, top_k=s, index=DenseConfig(block_size=16, query_aware=True, knn=4),
                          search=EXACT)
    cache = RetrievalKVCache(keys, values, queries, cfg)
    assert cache.retriever.end - cache.retriever.start == s - 36
    assert len(cache.retriever.indexes) == n_kv
    k_new, v_new = torch.randn(n_kv, 2, d, generator=g), torch.randn(n_kv, 2, d, generator=g)
    cache.append(k_new, v_new)
    q = torch.randn(n_heads, 2, d, generator=g)
    out = cache.attention(q)
    kk, vv = torch.cat([keys, k_new], 1), torch.cat([values, v_new], 1)
    gq = n_heads // n_kv
    mask = torch.arange(s + 2)[None, :] <= torch.tensor([s, s + 1])[:, None]
    ref = attend(q, kk.repeat_interleave(gq, 0), vv.repeat_interleave(gq, 0), d ** -0.5, mask)[0]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # fewer retrieved keys: an approximation, not the same output
    cfg2 = RetrievalConfig(n_sink=4, window=32, top_k=5, index=cfg.index, search=EXACT)
    approx = RetrievalKVCache(keys, values, queries, cfg2)
    approx.append(k_new, v_new)
    assert not torch.allclose(approx.attention(q), ref)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="radius_factor"):
        DenseSearchParams(radius_factor=0)
    with pytest.raises(ConfigError, match="block_size"):
        DenseConfig(block_size=0)
    with pytest.raises(ConfigError, match="unknown"):
        DenseConfig().with_(blocks=3)
    idx = DenseBlockIndex.build(np.ones((10, 4), np.float32), DenseConfig(block_size=2))
    with pytest.raises(InvalidVectorError, match="dim 5"):
        idx.search(np.ones((1, 5)), 3)
    with pytest.raises(InvalidVectorError, match="NaN"):
        idx.search(np.full((1, 4), np.nan), 3)
    with pytest.raises(ConfigError, match="k=0"):
        idx.search(np.ones((1, 4)), 0)
    with pytest.raises(InvalidVectorError, match="empty"):
        DenseBlockIndex.build(np.ones((0, 4), np.float32))
    with pytest.raises(ConfigError, match="multiple"):
        RetrievalKVCache(torch.randn(2, 50, 4), torch.randn(2, 50, 4), torch.randn(3, 50, 4),
                         RetrievalConfig(window=8))
