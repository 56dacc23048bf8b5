"""The small real set of the cluster tests: scifact (SPLADE-tiny vectors, 5,183 documents, 1,109 queries) from
the read-only ../shared next to the repository; the tests that need it skip on a clone without it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT.parent / "shared" / "vectors" / "splade-tiny"
DIM = 30522

needs_scifact = pytest.mark.skipif(not (VECTORS / "scifact.docs.npz").exists(),
                                   reason=f"{VECTORS}/scifact.* is not here (../shared)")


def scifact(n_queries: int = 200):
    from aftershock.index import read_vectors

    docs = read_vectors(VECTORS / "scifact.docs.npz", ids=VECTORS / "scifact.docs.ids.txt", dim=DIM)
    qs = read_vectors(VECTORS / "scifact.queries.npz", ids=VECTORS / "scifact.queries.ids.txt", dim=DIM)
    return docs, qs[:n_queries]


def as_rows(result, docs):
    """A collection result with external ids -> a `SearchResult` with row numbers of ``docs`` (-1 padding), the
    shape `aftershock.eval.metrics.recall_at_k` reads."""
    import numpy as np

    from aftershock.index import SearchResult

    row = {str(i): r for r, i in enumerate(docs.ids)}
    ids = np.array([[row[x] if x is not None else -1 for x in q] for q in result.ids], dtype=np.int64)
    return SearchResult(np.asarray(result.scores), ids)
