"""The one search result type every index returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SearchResult(NamedTuple):
    """Top-k per query: ``scores`` float32 (nq, k) best first, ``ids`` int64 row numbers (nq, k).

    Rows with fewer than k hits are padded with ``-inf`` / ``-1`` (as faiss does). Unpacks as
    ``scores, ids = index.search(...)``.
    """

    scores: np.ndarray
    ids: np.ndarray

    def doc_ids(self, names) -> list[list[str]]:
        """Map row numbers to external ids (``names[row]``), dropping padding."""
        return [[names[j] for j in row if j >= 0] for row in self.ids]
