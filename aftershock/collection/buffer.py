"""The in-memory buffer's frozen view and the generation one search sees."""

from __future__ import annotations

import numpy as np

from aftershock.collection import filters as F
from aftershock.index import SparseBatch


class Buffer:
    """A frozen view of the in-memory buffer: ids, a CSR matrix (searched exactly) and a metadata table."""

    def __init__(self, docs: dict, dim: int, schema: dict):
        import scipy.sparse as sp

        self.n = len(docs)
        self.ids = np.array(list(docs), dtype=object)
        vals = list(docs.values())
        lengths = np.array([0] + [v[0].shape[0] for v in vals], np.int64)
        indptr = np.cumsum(lengths)
        idx = np.concatenate([v[0] for v in vals]).astype(np.int32) if vals else np.zeros(0, np.int32)
        val = np.concatenate([v[1] for v in vals]).astype(np.float32) if vals else np.zeros(0, np.float32)
        self.matrix = sp.csr_matrix((val, idx, indptr), shape=(self.n, dim))
        self.metadata = [v[2] for v in vals]
        self.table = F.to_table(schema, self.ids, self.metadata) if schema else None

    def batch(self, vocab) -> SparseBatch:
        m = self.matrix
        return SparseBatch(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32),
                           self.ids, m.shape[1], vocab)


class Generation:
    """What one search sees: segments with the deletion masks of one moment, and the buffer then."""

    def __init__(self, dim, schema, segments, buffer):
        self.dim, self.schema, self.segments, self.buffer = dim, schema, segments, buffer
