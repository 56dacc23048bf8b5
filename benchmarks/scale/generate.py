"""Grow real learned-sparse vectors to N documents for the scale benchmark (``aftershock bench scale``).

The source is a real collection (by default the SPLADE-tiny vectors of lexicon, 268,640 documents). The
generated set is made of copies of it; each copy renames term ids *within frequency bands*:

1. every term's document frequency ``df`` is counted in the source; terms fall into bands of similar df:
   ``band = floor(log(df) / log(band_ratio))`` (df within a factor ``band_ratio`` of each other, 1.1 by
   default; the frequent head terms end up alone in their band and keep their id; the terms no document
   holds form one band of their own);
2. copy 0 is the source itself; copy c >= 1 applies a seeded permutation inside each band
   (``numpy.random.default_rng([seed, c])``), so a document of copy c is a source document whose terms were
   each swapped for a term of about the same df; weights, the number of non-zeros and the document's whole
   weight profile are untouched, only the names of its terms change;
3. N = C full copies + a seeded random subset of rows of one more copy; rows are re-sorted by term id.

So per-document non-zeros and weights keep their source distribution exactly, and a term's posting list in
the generated set holds about C x its source df (the df of the terms of its band, summed over the copies):
posting lists grow linearly in N, as they do in a larger collection over the same vocabulary.

Queries are remapped consistently: query i is assigned to copy ``c_i`` (seeded, among the copies that hold
documents, weighted by their size) and renamed with that copy's permutation; it therefore scores copy
``c_i``'s documents exactly as the source query scores the source, and the other copies are distractors
with the same statistics. `stats_table` compares nnz/doc, weights and the posting-length distribution
(normalised by the number of copies) of a generated set against its source.

The compact *seed* (``pack_seed``/``unpack_seed``) carries the source to a machine that cannot receive the
65 MB vectors file: term ids exact (delta-coded per row, LZMA), weights rounded to 256 log-spaced levels
between ``SEED_VMIN`` and the largest weight (max relative error ~1.6 % above SEED_VMIN; smaller weights
become SEED_VMIN), and the first queries exact.

``python -m benchmarks.scale.generate stats --docs D --n 1000000`` prints the statistics check;
``python -m benchmarks.scale.generate seed --docs D --queries Q --out seed.npz`` writes a seed.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time

import numba
import numpy as np

BAND_RATIO = 1.1
SEED = 1234
SEED_VMIN = 1e-3  # the seed's weight codebook: 256 log-spaced levels in [SEED_VMIN, max weight]
SEED_LEVELS = 256
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)


# ---------------------------------------------------------------------------------------------- bands
def term_df(indptr: np.ndarray, indices: np.ndarray, dim: int) -> np.ndarray:
    """Documents per term (rows hold a term at most once)."""
    return np.bincount(np.asarray(indices, np.int64), minlength=dim)[:dim]


def df_bands(df: np.ndarray, ratio: float = BAND_RATIO) -> np.ndarray:
    """Band id of each term: ``floor(log(df) / log(ratio))``; terms with df 0 get band -1."""
    band = np.full(df.shape[0], -1, np.int64)
    nz = df > 0
    band[nz] = np.floor(np.log(df[nz]) / np.log(ratio) + 1e-9).astype(np.int64)
    return band


def copy_permutation(band: np.ndarray, copy: int, seed: int = SEED) -> np.ndarray:
    """Term id map of copy ``copy``: identity for copy 0, else a seeded shuffle inside each band."""
    dim = band.shape[0]
    if copy == 0:
        return np.arange(dim, dtype=np.int64)
    members = np.lexsort((np.arange(dim), band))  # terms grouped by band, by id inside a band
    keys = np.random.default_rng([seed, copy]).random(dim)
    shuffled = np.lexsort((keys, band))  # the same band segments, a random order inside each
    perm = np.empty(dim, np.int64)
    perm[members] = shuffled
    return perm


@numba.njit(parallel=True, cache=True)
def _remap_sort(indptr, indices, values, perm, out_nnz0, out_idx, out_val):  # pragma: no cover - jit
    """Rows ``indptr`` of (indices, values) renamed by ``perm`` and re-sorted by term id, written at
    ``out_idx[out_nnz0 + indptr[r]]`` (insertion sort: rows are short)."""
    n = indptr.shape[0] - 1
    for r in numba.prange(n):
        a, b = indptr[r], indptr[r + 1]
        o = out_nnz0 + a - indptr[0]
        for j in range(b - a):
            t = perm[indices[a + j]]
            v = values[a + j]
            p = o + j
            while p > o and out_idx[p - 1] > t:
                out_idx[p] = out_idx[p - 1]
                out_val[p] = out_val[p - 1]
                p -= 1
            out_idx[p] = t
            out_val[p] = v


def _copy_sizes(n_src: int, n: int) -> list[int]:
    full, rem = divmod(n, n_src)
    return [n_src] * full + ([rem] if rem else [])


def grow_docs(indptr, indices, values, dim: int, n: int, seed: int = SEED, ratio: float = BAND_RATIO,
              band: np.ndarray | None = None):
    """CSR arrays (indptr int64, indices int32, values float32) of ``n`` documents grown from the source."""
    indptr = np.asarray(indptr, np.int64)
    indices = np.asarray(indices)
    values = np.asarray(values, np.float32)
    n_src = indptr.shape[0] - 1
    if n < 1 or n_src < 1:
        raise ValueError(f"n={n} must be >= 1 and the source must hold documents (it holds {n_src})")
    if band is None:
        band = df_bands(term_df(indptr, indices, dim), ratio)
    lengths = np.diff(indptr)
    sizes = _copy_sizes(n_src, n)
    rows_of = []
    for c, size in enumerate(sizes):
        if size == n_src:
            rows_of.append(None)
        else:  # the partial copy: a seeded subset of rows, in source order
            rows_of.append(np.sort(np.random.default_rng([seed, c, 7]).choice(n_src, size, replace=False)))
    nnz = sum(int(indptr[-1]) if r is None else int(lengths[r].sum()) for r in rows_of)
    out_ptr = np.empty(n + 1, np.int64)
    out_ptr[0] = 0
    out_idx = np.empty(nnz, np.int32)
    out_val = np.empty(nnz, np.float32)
    row0, nnz0 = 0, 0
    for c, rows in enumerate(rows_of):
        perm = copy_permutation(band, c, seed).astype(np.int32)
        if rows is None:
            src_ptr, src_idx, src_val = indptr, indices, values
        else:  # gather the subset's rows into a small CSR first
            ln = lengths[rows]
            src_ptr = np.concatenate([[0], np.cumsum(ln)]).astype(np.int64)
            take = np.repeat(indptr[rows] - src_ptr[:-1], ln) + np.arange(int(src_ptr[-1]))
            src_idx, src_val = indices[take], values[take]
        m = src_ptr.shape[0] - 1
        out_ptr[row0 + 1: row0 + m + 1] = nnz0 + src_ptr[1:]
        _remap_sort(src_ptr, src_idx, src_val, perm, nnz0, out_idx, out_val)
        row0 += m
        nnz0 += int(src_ptr[-1])
    return out_ptr, out_idx, out_val


def remap_queries(indptr, indices, values, band: np.ndarray, n_docs_src: int, n: int, seed: int = SEED):
    """(CSR arrays of the queries, each renamed with the permutation of its assigned copy; the copy of each).

    Query i goes to copy c with probability (documents of copy c) / n."""
    indptr = np.asarray(indptr, np.int64)
    indices = np.asarray(indices)
    values = np.asarray(values, np.float32)
    sizes = np.array(_copy_sizes(n_docs_src, n), np.float64)
    nq = indptr.shape[0] - 1
    copy = np.random.default_rng([seed, 99]).choice(len(sizes), nq, p=sizes / sizes.sum())
    dim = band.shape[0]
    out_idx = np.empty(indices.shape[0], np.int32)
    out_val = np.empty(indices.shape[0], np.float32)
    qband = band
    if indices.size and int(indices.max()) >= dim:  # query terms beyond the docs' dim keep their id
        qband = np.concatenate([band, np.full(int(indices.max()) + 1 - dim, -2, np.int64)])
    for c in np.unique(copy):
        rows = np.flatnonzero(copy == c)
        perm = copy_permutation(qband, int(c), seed).astype(np.int32)
        ln = np.diff(indptr)[rows]
        sub_ptr = np.concatenate([[0], np.cumsum(ln)]).astype(np.int64)
        take = np.repeat(indptr[rows] - sub_ptr[:-1], ln) + np.arange(int(sub_ptr[-1]))
        tmp_idx = np.empty(take.shape[0], np.int32)
        tmp_val = np.empty(take.shape[0], np.float32)
        _remap_sort(sub_ptr, indices[take], values[take], perm, 0, tmp_idx, tmp_val)
        out_idx[take] = tmp_idx
        out_val[take] = tmp_val
    return (indptr.copy(), out_idx, out_val), copy


# ---------------------------------------------------------------------------------------------- stats
def set_stats(indptr, indices, values, dim: int, copies: float = 1.0) -> dict:
    """nnz/doc, weight and posting-length quantiles; posting lengths also divided by ``copies``. Weight
    quantiles below the maximum come from a seeded sample of 5 M weights when there are more."""
    ln = np.diff(np.asarray(indptr, np.int64))
    df = term_df(indptr, indices, dim)
    dfn = df[df > 0]
    v = np.asarray(values, np.float32)
    sample = v if v.shape[0] <= 5_000_000 else v[np.random.default_rng(0).integers(0, v.shape[0], 5_000_000)]
    q = list(QUANTILES)
    return {
        "n_docs": int(ln.shape[0]), "nnz": int(indptr[-1]), "nnz_per_doc_mean": float(ln.mean()),
        "nnz_per_doc_q": [float(x) for x in np.quantile(ln, q)],
        "weight_q": [float(x) for x in np.quantile(sample, q[:-1])] + [float(v.max()) if v.size else 0.0],
        "terms_with_postings": int(dfn.shape[0]), "copies": float(copies),
        "posting_len_q": [float(x) for x in np.quantile(dfn, q)],
        "posting_len_per_copy_q": [float(x) / copies for x in np.quantile(dfn, q)],
        "posting_len_mean_per_copy": float(dfn.mean()) / copies,
    }


def stats_table(src: dict, gen: dict) -> str:
    """Markdown: source vs generated (posting lengths per copy), with the generated/source ratio."""
    rows = [("nnz per doc, mean", [src["nnz_per_doc_mean"]], [gen["nnz_per_doc_mean"]])]
    names = [f"q{x:g}" for x in QUANTILES]
    for key, label in (("nnz_per_doc_q", "nnz per doc"), ("weight_q", "weight"),
                       ("posting_len_per_copy_q", "posting length / copies")):
        for i, nm in enumerate(names):
            rows.append((f"{label} {nm}", [src[key][i]], [gen[key][i]]))
    rows.append(("posting length / copies, mean", [src["posting_len_mean_per_copy"]],
                 [gen["posting_len_mean_per_copy"]]))
    rows.append(("terms with postings", [src["terms_with_postings"]], [gen["terms_with_postings"]]))
    out = [f"| statistic | source ({src['n_docs']:,} docs) | generated ({gen['n_docs']:,} docs, "
           f"{gen['copies']:.2f} copies) | generated / source |", "|---|---:|---:|---:|"]
    for label, (a,), (b,) in rows:
        r = b / a if a else float("nan")
        out.append(f"| {label} | {a:.4g} | {b:.4g} | {r:.3f} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- seed
def _lz(a: np.ndarray) -> np.ndarray:
    return np.frombuffer(lzma.compress(np.ascontiguousarray(a).tobytes(), preset=6), np.uint8)


def _unlz(a: np.ndarray, dtype) -> np.ndarray:
    return np.frombuffer(lzma.decompress(a.tobytes()), dtype)


def pack_seed(path, docs, queries, n_queries: int = 2000) -> dict:
    """Write a compact seed (.npz) of ``docs`` and the first ``n_queries`` ``queries`` (SparseBatch-like:
    indptr, indices, values, dim). Term ids exact; document weights on 256 log levels."""
    ip = np.asarray(docs.indptr, np.int64)
    ind = np.asarray(docs.indices, np.int64)
    ln = np.diff(ip)
    if ln.size and ln.max() >= 2**16 or docs.dim > 2**16:
        raise ValueError("the seed format holds rows of < 65,536 terms and dim <= 65,536")
    delta = ind.copy()
    delta[1:] -= ind[:-1]
    first = ip[:-1][ln > 0]
    delta[first] = ind[first]  # each row starts from its first id; then gaps (rows are sorted)
    d16 = delta.astype(np.uint16)
    planes = d16.view(np.uint8).reshape(-1, 2).T.copy()  # low bytes, then high bytes: compress better
    v = np.asarray(docs.values, np.float32)
    vmax = float(v.max()) if v.size else 1.0
    lo, hi = np.log(SEED_VMIN), np.log(max(vmax, SEED_VMIN * 1.0001))
    code = np.rint((np.log(np.maximum(v, SEED_VMIN)) - lo) / (hi - lo) * (SEED_LEVELS - 1)).astype(np.uint8)
    nq = min(n_queries, len(queries))
    qip = np.asarray(queries.indptr[: nq + 1], np.int64)
    arrays = {"lengths": _lz(ln.astype(np.uint16)), "delta": _lz(planes), "codes": _lz(code),
              "meta": np.frombuffer(json.dumps({"dim": int(docs.dim), "n_docs": len(docs), "nnz": int(ip[-1]),
                                                "vmin": SEED_VMIN, "vmax": vmax, "levels": SEED_LEVELS,
                                                "n_queries": nq}).encode(), np.uint8),
              "q_indptr": qip, "q_indices": np.asarray(queries.indices[: qip[-1]], np.int32),
              "q_values": np.asarray(queries.values[: qip[-1]], np.float32), "q_dim": np.array([queries.dim])}
    np.savez(path, **arrays)
    return json.loads(bytes(arrays["meta"]).decode())


def seed_levels(meta: dict) -> np.ndarray:
    lo, hi = np.log(meta["vmin"]), np.log(max(meta["vmax"], meta["vmin"] * 1.0001))
    return np.exp(lo + np.arange(meta["levels"]) / (meta["levels"] - 1) * (hi - lo)).astype(np.float32)


def unpack_seed(path):
    """((indptr, indices int32, values float32, dim) of the docs, the same of the queries, meta)."""
    z = np.load(path)
    meta = json.loads(bytes(z["meta"]).decode())
    ln = _unlz(z["lengths"], np.uint16).astype(np.int64)
    ip = np.concatenate([[0], np.cumsum(ln)]).astype(np.int64)
    planes = _unlz(z["delta"], np.uint8).reshape(2, -1)
    delta = np.ascontiguousarray(planes.T).view(np.uint16).ravel().astype(np.int64)
    # undo the per-row gaps: cumulative sum, minus the sum before each row's start
    cs = np.cumsum(delta)
    before = np.repeat(np.concatenate([[0], cs])[ip[:-1]], ln)
    ind = (cs - before).astype(np.int32)
    vals = seed_levels(meta)[_unlz(z["codes"], np.uint8)]
    docs = (ip, ind, vals, int(meta["dim"]))
    queries = (z["q_indptr"].astype(np.int64), z["q_indices"].astype(np.int32), z["q_values"].astype(np.float32),
               int(z["q_dim"][0]))
    return docs, queries, meta


# ---------------------------------------------------------------------------------------------- CLI
def _load(path: str, dim: int):
    from aftershock.index import read_vectors

    return read_vectors(path, dim=dim, what="documents")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale.generate",
                                description="The scale benchmark's generator: statistics check, compact seed.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stats", help="grow the source to N docs and compare its statistics with the source")
    s.add_argument("--docs", required=True)
    s.add_argument("--dim", type=int, default=30522)
    s.add_argument("--n", type=int, action="append", required=True, help="documents to grow to (repeatable)")
    s.add_argument("--seed", type=int, default=SEED)
    s.add_argument("--json", default=None, help="also write the statistics here")
    k = sub.add_parser("seed", help="write a compact seed (.npz) of the docs and the first queries")
    k.add_argument("--docs", required=True)
    k.add_argument("--queries", required=True)
    k.add_argument("--dim", type=int, default=30522)
    k.add_argument("--n-queries", type=int, default=2000)
    k.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "seed":
        from aftershock.index import read_vectors

        docs = _load(a.docs, a.dim)
        queries = read_vectors(a.queries, dim=a.dim, what="queries")
        t0 = time.perf_counter()
        meta = pack_seed(a.out, docs, queries, a.n_queries)
        d, _, _ = unpack_seed(a.out)
        assert np.array_equal(d[0], docs.indptr) and np.array_equal(d[1], docs.indices), "term ids must round-trip"
        err = np.abs(d[2] - docs.values) / np.maximum(docs.values, SEED_VMIN)
        print(json.dumps(dict(meta, seconds=round(time.perf_counter() - t0, 1),
                              max_rel_weight_error_above_vmin=float(err[docs.values >= SEED_VMIN].max()))))
        return 0
    docs = _load(a.docs, a.dim)
    src = set_stats(docs.indptr, docs.indices, docs.values, docs.dim)
    report = {"source": src, "generated": []}
    for n in a.n:
        t0 = time.perf_counter()
        g = grow_docs(docs.indptr, docs.indices, docs.values, docs.dim, n, a.seed)
        secs = time.perf_counter() - t0
        gen = set_stats(*g, docs.dim, copies=n / len(docs))
        gen["generate_s"] = secs
        report["generated"].append(gen)
        print(f"\n### generated {n:,} docs from {len(docs):,} ({secs:.1f} s)\n\n{stats_table(src, gen)}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
