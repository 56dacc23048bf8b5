"""aftershock.eval.metrics: the one recall definition, on hand-computed cases; and the single-recall-definition
check (no other recall computation in aftershock/ or benchmarks/)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from aftershock.eval.metrics import recall_at_k, recall_per_query
from aftershock.index import SearchResult

NEG = -np.inf


def _res(scores, ids) -> SearchResult:
    return SearchResult(np.asarray(scores, np.float32), np.asarray(ids, np.int64))


def test_plain_overlap_mean_over_queries():
    exact = _res([[3, 2, 1], [9, 8, 7]], [[1, 2, 3], [4, 5, 6]])
    approx = _res([[3, 1, 0.5], [9, 8, 7]], [[1, 3, 9], [6, 5, 4]])  # 2/3 and 3/3; order does not matter
    assert recall_per_query(exact, approx) == pytest.approx([2 / 3, 1.0])
    assert recall_at_k(exact, approx) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_at_k(exact.ids, approx.ids) == pytest.approx((2 / 3 + 1) / 2)  # no scores: no ties seen


def test_padding_and_short_queries():
    # query 0 has 2 exact hits (1 found); query 1 has none (left out); query 2 all 3 found
    exact = _res([[2, 1, NEG], [NEG, NEG, NEG], [3, 2, 1]], [[1, 2, -1], [-1, -1, -1], [4, 5, 6]])
    approx = _res([[2, 0.5, NEG], [1, NEG, NEG], [1, 2, 3]], [[2, 9, -1], [3, -1, -1], [6, 5, 4]])
    per = recall_per_query(exact, approx)
    assert per[0] == pytest.approx(0.5) and np.isnan(per[1]) and per[2] == 1.0
    assert recall_at_k(exact, approx) == pytest.approx(0.75)


def test_all_queries_empty_is_one_and_no_queries_is_one():
    empty = _res(np.full((2, 3), NEG), np.full((2, 3), -1))
    assert recall_at_k(empty, empty) == 1.0
    assert recall_at_k(_res(np.zeros((0, 3)), np.zeros((0, 3))), _res(np.zeros((0, 3)), np.zeros((0, 3)))) == 1.0


def test_ties_with_the_kth_score_count_as_hits():
    # exact searched deeper than k=2: docs 2, 3 and 4 all score 5 (tied with the 2nd)
    exact = _res([[9, 5, 5, 5, 1]], [[1, 2, 3, 4, 7]])
    assert recall_at_k(exact, _res([[9, 5]], [[1, 4]]), k=2) == 1.0  # doc 4 ties the 2nd: a hit
    assert recall_at_k(exact, _res([[9, 5]], [[3, 4]]), k=2) == 1.0  # two tied docs: capped at n_q = 2
    assert recall_at_k(exact, _res([[9, 1]], [[1, 7]]), k=2) == 0.5  # doc 7 scores 1 < 5: a miss
    # a near-tie within rtol counts, a real gap does not
    near = _res([[9, 5, 5 * (1 - 1e-7), 4.9]], [[1, 2, 3, 4]])
    assert recall_at_k(near, _res([[9, 5]], [[1, 3]]), k=2) == 1.0
    assert recall_at_k(near, _res([[9, 5]], [[1, 4]]), k=2) == 0.5
    # without scores there is no tie: doc 4 is not in the exact top-2
    assert recall_at_k(exact.ids, np.array([[1, 4]]), k=2) == 0.5


def test_k_defaults_to_the_approx_width_and_duplicates_count_once():
    exact = _res([[4, 3, 2, 1]], [[1, 2, 3, 4]])
    assert recall_at_k(exact, np.array([[1, 1]])) == 0.5  # k = 2: {1, 2}; doc 1 twice is one hit
    assert recall_at_k(exact, np.array([[4, 3, 2, 1]]), k=4) == 1.0
    with pytest.raises(ValueError):
        recall_at_k(exact, np.array([[1], [2]]))


# ------------------------------------------------------------------------------------ single definition
ROOT = Path(__file__).resolve().parents[2]
# what a private recall computation looks like: a set intersection of ids, intersect1d / isin of an exact
# top-k, or a function named recall/recall_vs*
# (pattern, and a word the line must also contain, or None); np.isin has other uses (e.g. masking tokens)
PATTERNS = [(re.compile(p), None if c is None else re.compile(c)) for p, c in (
    (r"def\s+\w*recall\w*\s*\(", None),
    (r"np\.intersect1d\(", None),
    (r"np\.isin\(", r"exact|truth|gt\b|true|hit|recall"),
    (r"set\([^)]*\)\s*&\s*set\(", r"exact|truth|gt\b|true|hit|recall"),
)]
ALLOWED = {
    "aftershock/eval/metrics.py",  # the definition
    "tests/eval/test_metrics.py",  # its tests (and this check's patterns)
}
# names that contain "recall" but compute no recall (Pareto read-off, scan fraction at a recall target)
ALLOWED_DEFS = {"us_at_recall", "scan_at_recall"}


def _delegates(path: Path, func: str) -> bool:
    """A helper named *recall* whose body only calls aftershock.eval.metrics (tests/conftest.py's)."""
    src = path.read_text(encoding="utf-8")
    body = src[src.index(f"def {func}("):].split("\ndef ", 1)[0]
    return "aftershock.eval.metrics" in body and not re.search(r"intersect1d|isin\(|&", body)


def test_single_recall_definition():
    offenders = []
    for folder in ("aftershock", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for pat, ctx in PATTERNS:
                    if not pat.search(line) or (ctx is not None and not ctx.search(line)):
                        continue
                    name = re.search(r"def\s+(\w+)", line)
                    if name and (name.group(1) in ALLOWED_DEFS or name.group(1).startswith("test_")
                                 or _delegates(path, name.group(1))):
                        continue
                    offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "recall is computed outside aftershock.eval.metrics:\n" + "\n".join(offenders)
