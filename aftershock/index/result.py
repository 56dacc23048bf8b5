"""The one search result type every index returns, and the search protocol every index follows."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


class SearchResult(NamedTuple):
    """Top-k per query: ``scores`` float32 (nq, k) best first, ``ids`` int64 (nq, k).

    ``ids`` are **row numbers** (positions of the documents in the batch the index was built from, as in
    faiss), not the documents' own ids: ``result.doc_ids(index.doc_ids)`` gives those. Rows with fewer than
    k hits are padded with ``-inf`` / ``-1``. Unpacks as ``scores, rows = index.search(...)``.
    """

    scores: np.ndarray
    ids: np.ndarray

    def doc_ids(self, names) -> list[list[str]]:
        """Map row numbers to external ids (``names[row]``), dropping padding."""
        return [[names[j] for j in row if j >= 0] for row in self.ids]


@runtime_checkable
class SearchIndex(Protocol):
    """The search contract of every index (exact, Seismic, their GPU copies, the dense KV index).

    ``search(queries, k=10, params=None, **overrides) -> SearchResult``: ``params`` is the index's params
    dataclass (`SearchParams` for sparse indexes), ``overrides`` replace its fields (unknown names raise
    ConfigError; None keeps a field). No other keyword arguments. ``last_stats``: the last search's work
    counters, name -> per-query int64 array (empty dict when the index keeps none); their means are
    ``{k: float(v.mean()) for k, v in index.last_stats.items()}``.
    """

    last_stats: dict

    def search(self, queries, k: int = 10, params: Any = None, **overrides) -> SearchResult: ...
