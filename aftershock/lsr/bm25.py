"""BM25 as a sparse encoder, so BM25 runs through the same index as learned models.

Tokenization follows bm25s (and scikit-learn's CountVectorizer): lowercase, the regex
``(?u)\\b\\w\\w+\\b``, English stopwords (bm25s' list), Snowball English stemmer (PyStemmer). The
vocabulary is the set of stemmed terms of the corpus given to `fit`; dim = its size (it may well
exceed 65,535). Scoring is the Lucene variant: with ``idf_side="document"`` (default)

    document weight  w_d(t) = idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
    query weight     w_q(t) = number of times t occurs in the query (``query_weighting="tf"``, as
                              bm25s and Lucene score repeated query terms) or 1 (``"binary"``)

and idf(t) = log(1 + (N - df + 0.5) / (df + 0.5)); ``idf_side="query"`` moves idf to the query
weights (same scores; the documents then hold only the saturated tf).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from aftershock.errors import ConfigError, ModelFormatError
from aftershock.index import Vocabulary
from aftershock.lsr.base import SparseEncoder, clean_texts, csr_from_parts
from aftershock.lsr.static import bm25_idf

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
META_FILE = "aftershock_encoder.json"


def _stopwords(stopwords) -> frozenset:
    if stopwords in (None, False):
        return frozenset()
    if stopwords in ("en", "english"):
        try:
            from bm25s.stopwords import STOPWORDS_EN
        except ImportError:
            raise ConfigError("stopwords='en' uses bm25s' English list: pip install bm25s (or pass a list)") from None
        return frozenset(STOPWORDS_EN)
    if isinstance(stopwords, str):
        raise ConfigError(f"stopwords={stopwords!r}; use 'en', None or a list of words")
    return frozenset(stopwords)


class Analyzer:
    """Text -> list of stemmed terms (bm25s' analysis)."""

    def __init__(self, stopwords="en", stemmer: str | None = "english", lower: bool = True):
        self.stopwords = _stopwords(stopwords)
        self.lower = lower
        self.stemmer_name = stemmer
        self._split = re.compile(TOKEN_PATTERN).findall
        self._stem_cache: dict[str, str] = {}
        self._stem = None
        if stemmer:
            try:
                import Stemmer
            except ImportError:
                raise ConfigError("stemmer='english' needs PyStemmer: pip install PyStemmer (or stemmer=None)") from None
            self._stem = Stemmer.Stemmer(stemmer).stemWord

    def __call__(self, text: str) -> list[str]:
        toks = [t for t in self._split(text.lower() if self.lower else text) if t not in self.stopwords]
        if self._stem is None:
            return toks
        cache = self._stem_cache
        out = []
        for t in toks:
            s = cache.get(t)
            if s is None:
                s = cache[t] = self._stem(t)
            out.append(s)
        return out


class BM25(SparseEncoder):
    """BM25 (Lucene variant) as an encoder; call `fit(corpus_texts)` before encoding."""

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, stopwords="en", stemmer: str | None = "english",
                 idf_side: str = "document", query_weighting: str = "tf", progress: bool = False,
                 errors: str = "replace"):
        super().__init__(batch_size=1, progress=progress, errors=errors)
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"k1={k1}, b={b}: need k1 >= 0 and 0 <= b <= 1")
        if idf_side not in ("document", "query"):
            raise ConfigError(f"idf_side={idf_side!r}; use 'document' or 'query'")
        if query_weighting not in ("tf", "binary"):
            raise ConfigError(f"query_weighting={query_weighting!r}; use 'tf' or 'binary'")
        self.k1, self.b = float(k1), float(b)
        self.idf_side, self.query_weighting = idf_side, query_weighting
        self.analyzer = Analyzer(stopwords, stemmer)
        self._stopwords_arg = stopwords
        self.vocab = None
        self.df = None
        self.n_docs = 0
        self.avgdl = 0.0

    @property
    def dim(self) -> int:
        self._check_fitted()
        return len(self.vocab)

    def _check_fitted(self):
        if self.vocab is None:
            raise ConfigError("BM25 is not fitted: call encoder.fit(corpus_texts) first (the vocabulary, document "
                              "frequencies and average length come from the corpus)")

    def fit(self, corpus: Iterable[str]) -> "BM25":
        """Vocabulary, document frequencies, N and average document length from ``corpus``."""
        term_id: dict[str, int] = {}
        df: list[int] = []
        total, n = 0, 0
        for text in clean_texts(corpus, self.errors, what="document"):
            terms = self.analyzer(text)
            total += len(terms)
            n += 1
            for t in set(terms):
                i = term_id.get(t)
                if i is None:
                    term_id[t] = len(df)
                    df.append(1)
                else:
                    df[i] += 1
        if n == 0:
            raise ConfigError("BM25.fit needs at least one document")
        order = sorted(term_id)  # a deterministic vocabulary: terms in sorted order
        self.vocab = Vocabulary(order)
        self.df = np.array([df[term_id[t]] for t in order], dtype=np.int64)
        self.n_docs, self.avgdl = n, total / n
        return self

    @property
    def idf(self) -> np.ndarray:
        self._check_fitted()
        return bm25_idf(self.df, self.n_docs).astype(np.float32)

    def _counts(self, texts: list[str]):
        """(rows, term ids, counts, lengths) of the known terms of each text."""
        tid = self.vocab.token_to_id
        rows, cols, lengths = [], [], np.zeros(len(texts), np.int64)
        for r, text in enumerate(texts):
            terms = self.analyzer(text)
            lengths[r] = len(terms)
            ids = [tid[t] for t in terms if t in tid]
            rows.extend([r] * len(ids))
            cols.extend(ids)
        rows_a, cols_a = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        key = rows_a * len(self.vocab) + cols_a
        uniq, counts = np.unique(key, return_counts=True)  # sorted by (row, term)
        return uniq // len(self.vocab), uniq % len(self.vocab), counts.astype(np.float64), lengths

    def _encode(self, texts, side):
        self._check_fitted()
        rows, cols, tf, lengths = self._counts(texts)
        if side == "document":
            norm = self.k1 * (1 - self.b + self.b * lengths[rows] / max(self.avgdl, 1e-9))
            w = tf / (tf + norm)
            if self.idf_side == "document":
                w = w * self.idf[cols]
        else:
            w = tf if self.query_weighting == "tf" else np.ones_like(tf)
            if self.idf_side == "query":
                w = w * self.idf[cols]
        keep = w > 0
        return csr_from_parts(len(texts), rows[keep], cols[keep], w[keep])

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> Path:
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sw = self._stopwords_arg if isinstance(self._stopwords_arg, (str, type(None))) else sorted(self._stopwords_arg)
        meta = {"type": "bm25", "k1": self.k1, "b": self.b, "stopwords": sw, "stemmer": self.analyzer.stemmer_name,
                "idf_side": self.idf_side, "query_weighting": self.query_weighting, "n_docs": self.n_docs,
                "avgdl": self.avgdl}
        (path / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        (path / "bm25_terms.json").write_text(json.dumps({"terms": self.vocab.tokens, "df": self.df.tolist()},
                                                         ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> "BM25":
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
            terms = json.loads((path / "bm25_terms.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{path} is not a saved BM25 encoder ({e}); write one with BM25.save") from None
        enc = cls(k1=meta["k1"], b=meta["b"], stopwords=meta["stopwords"], stemmer=meta["stemmer"],
                  idf_side=meta["idf_side"], query_weighting=meta["query_weighting"])
        enc.vocab = Vocabulary(terms["terms"])
        enc.df = np.asarray(terms["df"], dtype=np.int64)
        enc.n_docs, enc.avgdl = int(meta["n_docs"]), float(meta["avgdl"])
        return enc
