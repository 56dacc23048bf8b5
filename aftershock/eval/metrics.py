"""The one definition of recall against exact search, used by the demo, ``aftershock eval``, the ANN and GPU
benchmarks and the tests. Effectiveness (nDCG, MRR, R@k against qrels) is ir-measures' job
(`aftershock.eval.effectiveness`).

Definition (tie-aware, as ANN-benchmarks' ``get_recall_values`` with the exact scores as reference):

* For query q let ``n_q`` = the number of exact results among the first ``k`` (``ids >= 0``; padding
  ``-1`` / ``-inf`` is not a result), and ``t_q`` = the score of the last of them (the k-th exact score
  when the query has k or more hits).
* The *acceptable set* A_q = every id of the exact result (at any depth the caller searched, which may be
  deeper than k) whose exact score is ``>= t_q - rtol * |t_q|`` (``rtol`` = 1e-5 by default: float32
  summation order). A document tied with the k-th is thus as good as the k-th; ask exact search for
  more than k results (e.g. 2k) to see ties beyond position k.
* ``recall_q = min(|returned top-k ∩ A_q|, n_q) / n_q``; the scores the approximate index returned are
  not used (they may be quantized or approximate: BMP, float16 values).
* **Aggregation: mean over queries (macro); queries with no exact result (n_q = 0) are left out** — there
  is nothing to recall, and no answer is wrong. If every query is left out, recall is 1.0.

When ``exact`` is a bare id array (no scores) no tie can be seen: A_q is the exact top-k ids.

`pareto_frontier` and `us_at_recall` read a recall/latency sweep (the ANN and GPU benchmarks).
"""

from __future__ import annotations

import numpy as np

from aftershock.index import SearchResult

RTOL = 1e-5


def _ids(x) -> np.ndarray:
    ids = x.ids if isinstance(x, SearchResult) or hasattr(x, "ids") else x
    ids = np.asarray(ids)
    return ids.reshape(len(ids), -1) if ids.ndim != 2 else ids


def recall_per_query(exact, approx, k: int | None = None, rtol: float = RTOL) -> np.ndarray:
    """Per-query recall@k (the module's definition); NaN for queries with no exact result.

    ``exact``: a `SearchResult` (scores used for ties) or an id array; ``approx``: a `SearchResult` or an id
    array (nq, >= k). ``k`` defaults to the approximate result's width."""
    e_ids = _ids(exact).astype(np.int64, copy=False)
    a_ids = _ids(approx).astype(np.int64, copy=False)
    if len(e_ids) != len(a_ids):
        raise ValueError(f"exact has {len(e_ids)} queries but approx has {len(a_ids)}")
    k = a_ids.shape[1] if k is None else int(k)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    a_ids = a_ids[:, :k]
    scores = getattr(exact, "scores", None)
    e_sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(e_ids.shape)
    out = np.full(len(e_ids), np.nan)
    for q in range(len(e_ids)):
        valid = e_ids[q] >= 0
        n = int(valid[:k].sum())
        if n == 0:
            continue
        if e_sc is None:
            accept = e_ids[q, :k][valid[:k]]
        else:
            top = e_sc[q, :k][valid[:k]]
            t = top[-1]
            ok = valid & (e_sc[q] >= t - rtol * abs(t))
            ok[:k] |= valid[:k]  # the exact top-k itself is always acceptable
            accept = e_ids[q][ok]
        got = np.unique(a_ids[q][a_ids[q] >= 0])
        out[q] = min(int(np.isin(got, accept).sum()), n) / n
    return out


def recall_at_k(exact, approx, k: int | None = None, rtol: float = RTOL) -> float:
    """Recall@k of ``approx`` against ``exact``: tie-aware, mean over the queries that have an exact result
    (see the module docstring). 1.0 when no query has one."""
    per = recall_per_query(exact, approx, k, rtol)
    per = per[~np.isnan(per)]
    return float(per.mean()) if per.size else 1.0


DEFINITION = ("recall@k vs exact: tie-aware (a returned doc whose exact score ties the k-th exact score within "
              "rtol 1e-5 counts as a hit), mean over queries; queries with no exact result left out")


# ---------------------------------------------------------------------------------------------- trade-off
def pareto_frontier(points) -> list[tuple[float, float]]:
    """The (µs, recall) points no other point beats (as fast or faster with at least the recall), sorted by
    µs; along it recall strictly increases."""
    pts = sorted(((float(u), float(r)) for u, r in points if np.isfinite(u) and np.isfinite(r)),
                 key=lambda p: (p[0], -p[1]))
    front: list[tuple[float, float]] = []
    for u, r in pts:
        if not front or r > front[-1][1]:
            front.append((u, r))
    return front


def us_at_recall(points, target: float) -> float | None:
    """Mean µs needed to reach ``target`` recall: linear interpolation between the two Pareto-frontier
    points around it; the cheapest point's µs if that already reaches it (an upper bound); None if no point
    reaches it."""
    front = pareto_frontier(points)
    if not front or front[-1][1] < target:
        return None
    if front[0][1] >= target:
        return front[0][0]
    for (u0, r0), (u1, r1) in zip(front, front[1:]):
        if r0 < target <= r1:
            return u0 + (target - r0) * (u1 - u0) / (r1 - r0)
    return None  # unreachable: the frontier's recall is increasing

