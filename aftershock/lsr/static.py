"""Encoders without a model forward pass: `StaticEncoder` (binary bag of tokenizer tokens, or
IDF-weighted: the inference-free query side) and `InferenceFree` (static queries + a learned
document encoder over the same vocabulary)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from aftershock.errors import ConfigError, ModelFormatError
from aftershock.lsr.base import SparseEncoder, csr_from_parts
from aftershock.lsr.hf import load_tokenizer, model_dir, model_max_length, tokenizer_vocab

IDF_FILE = "idf.json"


def bm25_idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Lucene's BM25 idf: log(1 + (N - df + 0.5) / (df + 0.5)) (always > 0)."""
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


def document_frequencies(token_ids: Iterable[Iterable[int]], dim: int) -> tuple[np.ndarray, int]:
    """Number of documents containing each term id, and the number of documents."""
    df = np.zeros(dim, dtype=np.int64)
    n = 0
    for ids in token_ids:
        u = np.unique(np.asarray(ids, dtype=np.int64))
        df[u] += 1
        n += 1
    return df, n


class StaticEncoder(SparseEncoder):
    """w[t] = weight[t] for each distinct token t of the text (tokenizer only, no special tokens);
    with ``counts=True``, w[t] = weight[t] * (number of times t occurs in the text).

    ``weights=None`` gives the binary encoder (every token weighs 1); `fit_idf` or an ``idf.json``
    (token -> weight) gives the inference-free IDF query encoder, score = sum_t idf(t) * w_d(t).
    """

    def __init__(self, tokenizer_dir, weights: np.ndarray | None = None, batch_size: int = 256,
                 query_max_length: int | None = None, doc_max_length: int | None = None, progress: bool = False,
                 errors: str = "replace", name: str | None = None, counts: bool = False):
        super().__init__(batch_size, query_max_length, doc_max_length, progress, errors)
        self.counts = bool(counts)
        self.path = model_dir(tokenizer_dir)
        self.tokenizer = load_tokenizer(self.path, static=True)
        self.vocab = tokenizer_vocab(self.tokenizer)
        self.special = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        self._rust: dict = {}  # max length -> Rust tokenizer copy
        self.weights = None if weights is None else self._check_weights(weights)
        self.name = name or ("idf" if weights is not None else "binary")

    def _check_weights(self, weights) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != (len(self.vocab),):
            raise ModelFormatError(f"{w.shape[0] if w.ndim == 1 else w.shape} weights for a vocabulary of "
                                   f"{len(self.vocab)} tokens; give one weight per token id")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ModelFormatError("static token weights must be finite and >= 0")
        return w

    # ---------------------------------------------------------------- IDF
    def token_ids(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        limit = max_length or model_max_length(self.tokenizer)
        rt = self._rust.get(limit)
        if rt is None and getattr(self.tokenizer, "backend_tokenizer", None) is not None:
            rt = self._rust[limit] = copy.deepcopy(self.tokenizer.backend_tokenizer)  # the Rust tokenizer:
            rt.no_padding()                                                         # no per-call overhead
            rt.enable_truncation(max_length=limit)
        if rt is not None:
            return [e.ids for e in rt.encode_batch(list(texts), add_special_tokens=False)]
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)
        return enc["input_ids"]

    def fit_idf(self, corpus: Iterable[str], chunk: int = 4096) -> "StaticEncoder":
        """Set the weights to the BM25 idf of each token over ``corpus`` (document side max length)."""
        from aftershock.lsr.base import clean_texts

        df = np.zeros(len(self.vocab), dtype=np.int64)
        n = 0
        buf: list[str] = []

        def flush():
            nonlocal n
            d, k = document_frequencies(self.token_ids(clean_texts(buf, self.errors), self.doc_max_length),
                                        len(self.vocab))
            df[:] += d
            n += k
            buf.clear()

        for t in corpus:
            buf.append(t)
            if len(buf) >= chunk:
                flush()
        if buf:
            flush()
        if n == 0:
            raise ConfigError("fit_idf needs at least one document")
        self.weights = bm25_idf(df, n).astype(np.float32)
        self.weights[self.special] = 0.0
        self.name = "idf"
        return self

    def load_idf_json(self, path) -> "StaticEncoder":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ModelFormatError(f"{path}: expected a JSON object token -> weight")
        w = np.zeros(len(self.vocab), dtype=np.float32)
        unknown = [t for t in data if t not in self.vocab.token_to_id]
        if unknown:
            raise ModelFormatError(f"{path}: token {unknown[0]!r} (and {len(unknown) - 1} more) is not in the "
                                   f"tokenizer of {self.path}; use the idf.json made for this tokenizer")
        for t, v in data.items():
            w[self.vocab.token_to_id[t]] = v
        self.weights = self._check_weights(w)
        self.name = "idf"
        return self

    def save_idf_json(self, path) -> None:
        if self.weights is None:
            raise ConfigError("a binary encoder has no IDF weights to save; call fit_idf first")
        nz = np.flatnonzero(self.weights)
        Path(path).write_text(json.dumps({self.vocab.tokens[i]: float(self.weights[i]) for i in nz},
                                         ensure_ascii=False), encoding="utf-8")

    # ---------------------------------------------------------------- encoding
    def _encode(self, texts, side):
        V = len(self.vocab)
        keys = []
        for s in range(0, len(texts), self.batch_size):
            for r, ids in enumerate(self.token_ids(texts[s:s + self.batch_size], self.max_length(side)), s):
                keys.append(np.asarray(ids, dtype=np.int64) + r * V)
        # one sort for all texts: key = row * V + token id -> (row, token, count)
        u, c = np.unique(np.concatenate(keys) if keys else np.zeros(0, np.int64), return_counts=True)
        rows_a, cols_a = u // V, u % V
        keep = ~np.isin(cols_a, self.special)
        rows_a, cols_a, c = rows_a[keep], cols_a[keep], c[keep]
        vals = np.ones(cols_a.shape[0], np.float32) if self.weights is None else self.weights[cols_a]
        if self.counts:
            vals = vals * c.astype(np.float32)
        keep = vals > 0
        return csr_from_parts(len(texts), rows_a[keep], cols_a[keep], vals[keep])


class InferenceFree(SparseEncoder):
    """Queries by one encoder (usually `StaticEncoder` with IDF), documents by another (usually
    `Splade`); both must share the vocabulary."""

    def __init__(self, query_encoder: SparseEncoder, document_encoder: SparseEncoder):
        if query_encoder.vocab != document_encoder.vocab:
            raise ModelFormatError(f"the query encoder's vocabulary ({len(query_encoder.vocab)} tokens) differs from "
                                   f"the document encoder's ({len(document_encoder.vocab)}); they must be the same")
        super().__init__(document_encoder.batch_size, progress=document_encoder.progress)
        self.query_encoder, self.document_encoder = query_encoder, document_encoder
        self.vocab = document_encoder.vocab
        self.name = f"{document_encoder.name}+{query_encoder.name}-queries"

    def encode(self, texts, side: str = "document", ids=None):
        enc = self.query_encoder if side == "query" else self.document_encoder
        return enc.encode(texts, side=side, ids=ids)
