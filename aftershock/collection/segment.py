"""Immutable segments (an index directory each, exact or Seismic, + Parquet metadata + deletion bitmaps)
and exact scoring over a set of rows (the per-segment filtered search is `aftershock.collection.search`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aftershock.collection.filters import read_table, write_table
from aftershock.index import SparseBatch
from aftershock.seismic import ExactIndex, SeismicIndex, load_index

SEGMENTS = "segments"


class Segment:
    """One loaded segment: ``index`` (memory-mapped), ``doc_ids`` (external ids by row), ``deleted`` (bool
    per row: replaced, never changed in place, so a search's snapshot keeps the mask it started with),
    ``table`` (its metadata, or None) and ``del_file`` (the deletion generation file on disk)."""

    def __init__(self, root: Path, entry: dict, with_table: bool, verify: bool = True):
        self.name, self.kind = entry["name"], entry["kind"]
        d = root / SEGMENTS
        self.index = load_index(d / self.name, mmap=True, verify=verify)
        self.n = int(self.index.n_docs)
        self.doc_ids = np.asarray(self.index.doc_ids, dtype=object)
        self.del_file = entry.get("deletions")
        self.deleted = (np.load(d / self.del_file).astype(bool) if self.del_file else np.zeros(self.n, bool))
        if self.deleted.shape != (self.n,):
            from aftershock.errors import IndexCorruptError

            raise IndexCorruptError(f"{d / self.del_file} has {self.deleted.shape} entries for {self.n} rows; "
                                    "the collection is damaged")
        self.table = read_table(d / f"{self.name}.parquet") if with_table else None
        self._fwd = None

    @property
    def n_deleted(self) -> int:
        return int(self.deleted.sum())

    def forward(self):
        """The documents as a scipy CSR matrix (n, dim) float32 (Seismic: the forward index, as stored)."""
        if self._fwd is None:
            import scipy.sparse as sp

            ix = self.index
            if isinstance(ix, SeismicIndex):
                vals = ix._decoded_values()
                m = sp.csr_matrix((vals, np.asarray(ix.fwd_idx).astype(np.int32), np.asarray(ix.fwd_ptr)),
                                  shape=(self.n, ix.dim))
            else:
                ptr, idx, val = ix._forward()
                m = sp.csr_matrix((val, idx.astype(np.int32), ptr), shape=(self.n, ix.dim))
            self._fwd = m
        return self._fwd

    def rows(self, rows: np.ndarray) -> SparseBatch:
        m = self.forward()[rows]
        return SparseBatch(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32),
                           self.doc_ids[rows], self.index.dim, self.index.vocab)


def write_segment(root: Path, name: str, docs: SparseBatch, table, config) -> dict:
    """Write ``docs`` as segment ``name`` (exact below ``config.exact_threshold`` rows, else Seismic)."""
    d = root / SEGMENTS
    d.mkdir(exist_ok=True)
    kind = "seismic" if len(docs) >= max(config.exact_threshold, 2) else "exact"
    index = SeismicIndex.build(docs, config.seismic) if kind == "seismic" else ExactIndex.build(docs)
    index.save(d / name)
    if table is not None:
        write_table(table, d / f"{name}.parquet")
    return {"name": name, "kind": kind, "n_docs": len(docs), "deletions": None, "n_deleted": 0}


def write_deletions(root: Path, name: str, gen: int, deleted: np.ndarray) -> str:
    fname = f"{name}.del-{gen:06d}.npy"
    f = root / SEGMENTS / fname
    tmp = f.with_name(f".{fname}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, deleted.astype(np.uint8), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, f)
    return fname


# ---------------------------------------------------------------------------------------------- scoring
def topk_dense(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per row of a dense score matrix (only scores > 0), padded -inf / -1."""
    nq, m = S.shape
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    if m == 0:
        return out_s, out_i
    kk = min(k, m)
    part = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (nq, 1))
    ps = np.take_along_axis(S, part, 1)
    order = np.lexsort((part, -ps), axis=1)
    part, ps = np.take_along_axis(part, order, 1), np.take_along_axis(ps, order, 1)
    ok = ps > 0
    out_s[:, :kk] = np.where(ok, ps, -np.inf)
    out_i[:, :kk] = np.where(ok, part, -1)
    return out_s, out_i


def score_exact(fwd, rows: np.ndarray, Q, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the queries ``Q`` (scipy CSR) over the given rows of ``fwd``; ids are those rows."""
    nq = Q.shape[0]
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    if rows.size == 0 or nq == 0:
        return out_s, out_i
    sub_t = fwd[rows].T.tocsr()
    step = max(1, (1 << 24) // max(rows.size, 1))
    for a in range(0, nq, step):
        S = np.asarray((Q[a:a + step] @ sub_t).toarray(), np.float32)
        s, i = topk_dense(S, k)
        out_s[a:a + step] = s
        out_i[a:a + step] = np.where(i >= 0, rows[np.maximum(i, 0)], -1)
    return out_s, out_i

