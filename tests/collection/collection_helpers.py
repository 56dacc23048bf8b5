"""Shared helpers of the collection tests: random documents with small integer weights (dot products are
exact in float32) and a brute-force top-k check against a plain dict id -> (terms, weights)."""

from __future__ import annotations

import numpy as np

from aftershock import SparseBatch

DIM = 40


def random_docs(rng, ids, dim=DIM, max_terms=6):
    rows = []
    for _ in ids:
        n = int(rng.integers(1, max_terms + 1))
        terms = np.sort(rng.choice(dim, n, replace=False))
        rows.append((terms, rng.integers(1, 6, n).astype(np.float32)))
    return SparseBatch.from_rows(rows, ids=list(ids), dim=dim)


def model_of(batch, model=None):
    """A dict id -> (terms, weights) of ``batch`` (added to ``model`` when given)."""
    model = {} if model is None else model
    for i in range(len(batch)):
        t, v = batch.row(i)
        model[str(batch.ids[i])] = (t.copy(), v.copy())
    return model


def queries(seed=7, n=6, dim=DIM):
    rng = np.random.default_rng(seed)
    return random_docs(rng, [f"q{i}" for i in range(n)], dim, max_terms=4)


def brute_scores(model: dict, q_terms, q_vals, allowed=None) -> dict:
    qd = dict(zip(q_terms.tolist(), q_vals.tolist()))
    out = {}
    for i, (t, v) in model.items():
        if allowed is not None and i not in allowed:
            continue
        s = sum(qd.get(int(a), 0.0) * float(b) for a, b in zip(t, v))
        if s > 0:
            out[i] = s
    return out


def check_topk(res, model: dict, qs: SparseBatch, k: int, allowed=None, tol=1e-3):
    """``res`` is a valid exact top-k of ``model`` (ties may be broken either way)."""
    scores, ids = res
    assert scores.shape == (len(qs), k) and ids.shape == (len(qs), k)
    for q in range(len(qs)):
        bf = brute_scores(model, *qs.row(q), allowed=allowed)
        got = [x for x in ids[q] if x is not None]
        assert len(got) == len(set(got)), f"duplicate ids {got}"
        assert len(got) == min(k, len(bf)), (q, got, sorted(bf.items(), key=lambda x: -x[1])[:k])
        for j, x in enumerate(got):
            assert x in bf, f"{x} is deleted, filtered out or scores 0"
            assert abs(bf[x] - scores[q, j]) <= tol * max(1.0, bf[x]), (x, bf[x], scores[q, j])
        assert all(ids[q, j] is None and scores[q, j] == -np.inf for j in range(len(got), k))
        if got:
            floor = min(bf[x] for x in got)
            missed = [x for x, s in bf.items() if x not in got and s > floor + tol * max(1.0, s)]
            assert not missed, f"query {q}: {missed} beat the returned {got}"
        assert np.all(np.diff(scores[q, : len(got)]) <= 1e-6), "scores not best first"
