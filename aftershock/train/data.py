"""Offline training data for distilling sparse encoders: query -> positive(s) + mined hard negatives,
scored by a heterogeneous ensemble of teachers (BM25, a SPLADE model, a dense bi-encoder).

Two steps, so the expensive one can run on a GPU:

1. `prepare` (CPU): training pairs from the sources below, hard negatives mined with Aftershock's own
   index (`BM25` fitted on the source corpus + `ExactIndex`), BM25 scores of every (query, candidate)
   pair, and ``corpus.jsonl[.gz]`` with every referenced document.
2. `aftershock.train.teachers.score` (CPU or CUDA): adds each sparse/dense teacher's scores and recomputes the ensemble.

Sources (``SOURCES``):

* ``scifact-train``: SciFact **train** qrels (809 queries) over the SciFact corpus (title + text).
  The test qrels are never read except to keep test queries out: a query of any source whose text
  equals a test query of any BEIR folder in the data directory is dropped (2 SciFact train claims are
  worded exactly like test claims).
* ``<dataset>-title`` for the BEIR folders whose documents have titles (scifact, cranfield, cisi,
  adi; medline and vaswani-npl have none): the query is a document's title, the positive is the same
  document with its title removed (and, as in Cranfield, a copy of the title at the start of the
  text stripped), so the match is not trivial. Candidates come from the title-less corpus too, so
  the positive is never the only title-less document.
* your own BEIR folders: ``qrels:DIR`` (its ``qrels/train.tsv``) and ``titles:DIR`` (title -> text).
* ``gcide`` / ``wordnet`` (``lexicon/corpus.jsonl.gz``): GCIDE headword -> definition, WordNet
  synset words -> gloss, titles removed likewise; ``kjv`` is skipped (its titles are verse references).
  The lexicon queries are subsampled (``lexicon_queries``, seeded) from both together.

For title sources a candidate whose title equals the query (duplicate entries such as GCIDE's
several "Bank" entries) or whose text equals a positive's is never used as a negative.

Negatives: the ``depth`` best BM25 hits that are not excluded; ``n_negatives`` of them are kept:
the ``n_top`` best plus a seeded sample of the other ranks; when the index finds fewer (queries with
rare terms), random documents of the same corpus fill the list, so every query has exactly
``n_negatives`` negatives.

Record format (one JSON object per line in ``train.jsonl[.gz]`` / ``dev.jsonl[.gz]``)::

    {"qid", "query", "doc_ids": [positives..., negatives...], "labels": [1.., 0..],
     "teacher": [ensemble score per doc], "scores": {"bm25": [...], "<teacher>": [...]}, "source"}

Document ids are made globally unique: ``scifact/<id>`` (title + text), ``<dataset>-notitle/<id>``
(title removed), lexicon ids as they are (``gcide-5``, ``wordnet-7``). The student and the teachers
see a document as ``title + " " + text`` (`aftershock.index.doc_text`).

Dev is a split of the training queries by a hash of the qid (``dev_fraction``), never test data.

Ensemble (`ensemble`): per query and teacher, the scores over that query's candidates are min-max
normalised to [0, 1] (a constant row, where max - min <= 1e-9 x max(1, |max|), becomes all 0.5: the
teacher expresses no preference); the normalised rows are averaged over the teachers and multiplied
by ``scale`` (default 10), which sets the temperature of the student's KL loss.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from aftershock.errors import ConfigError, FormatError
from aftershock.index import (find_beir_file, iter_beir, iter_corpus, iter_jsonl_records, read_qrels, read_queries,
                              record_id, write_jsonl_records)

TITLE_DATASETS = ("scifact", "cranfield", "cisi", "adi")  # medline, vaswani-npl: no titles
LEXICON_SOURCES = ("gcide", "wordnet")  # kjv: titles are verse references
SOURCES = ("scifact-train",) + tuple(f"{d}-title" for d in TITLE_DATASETS) + LEXICON_SOURCES
SPLITS = ("train", "dev")
FLAT_EPS = 1e-9


# ------------------------------------------------------------------------------------------ files
def find_split(folder: Path, stem: str) -> Path:
    """``folder/stem.jsonl`` or ``folder/stem.jsonl.gz``."""
    try:
        return find_beir_file(Path(folder), stem)
    except FormatError:
        raise FormatError(f"{folder} has no {stem}.jsonl or {stem}.jsonl.gz; write it with "
                          "`aftershock train-data prepare --output DIR`") from None


def default_data_dir() -> Path:
    """``shared/data`` next to the repository (the folder `prepare` reads by default)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def round_scores(values) -> list[float]:
    return [float(f"{v:.5g}") for v in np.asarray(values, dtype=np.float64)]


# ------------------------------------------------------------------------------------------ ensemble
def minmax(row) -> np.ndarray:
    """Min-max normalise one query's candidate scores to [0, 1]; a constant row becomes all 0.5."""
    x = np.asarray(row, dtype=np.float64)
    if x.size == 0:
        return x
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"teacher scores must be finite, got {x[~np.isfinite(x)][:3].tolist()}")
    lo, hi = x.min(), x.max()
    if hi - lo <= FLAT_EPS * max(1.0, abs(hi)):
        return np.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def ensemble(scores: dict, scale: float = 10.0, teachers: Iterable[str] | None = None) -> np.ndarray:
    """scale x mean over teachers of the min-max normalised scores (one query's candidates)."""
    names = list(scores) if teachers is None else list(teachers)
    missing = [n for n in names if n not in scores]
    if not names or missing:
        raise ConfigError(f"ensemble teachers {names} (missing {missing}); the record has scores of {list(scores)}")
    rows = [minmax(scores[n]) for n in names]
    if len({len(r) for r in rows}) != 1:
        raise ConfigError(f"teachers score different numbers of candidates: {[len(r) for r in rows]}")
    return scale * np.mean(rows, axis=0)


# ------------------------------------------------------------------------------------------ sources
@dataclass
class Source:
    """One corpus as the student sees it (ids already prefixed) and its training queries."""

    name: str
    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    queries: list[tuple[str, str, list[str]]]  # (qid, query, positive doc ids)
    title_match: bool = False  # exclude candidates whose original title equals the query
    orig_titles: list[str] = field(default_factory=list)


def _norm(s: str) -> str:
    return " ".join(re.findall(r"\w+", s.lower()))


def strip_title(title: str, text: str) -> str:
    """The text without leading copies of the title (Cranfield's texts start with it, some twice)."""
    t, x = title.strip(), text.strip()
    while t and x.lower().startswith(t.lower()):
        x = x[len(t):].lstrip(" .,:;-\n\t")
    return x


def _cut(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def _has_word(s: str) -> bool:
    return bool(re.search(r"[^\W\d_]{2,}", s))


def heldout_query_ids(folder) -> set[str]:
    path = Path(folder) / "qrels" / "test.tsv"
    return set(read_qrels(path)) if path.is_file() else set()


def heldout_texts(data_dir, extra_folders: Iterable = ()) -> set[str]:
    """Normalised texts of every test query of the BEIR folders in ``data_dir`` and ``extra_folders``
    (SciFact's train qrels hold 2 claims worded exactly like test claims; such queries are dropped)."""
    out = set()
    folders = {p.parent.parent for p in Path(data_dir).glob("*/qrels/test.tsv")}
    folders |= {Path(f) for f in extra_folders if (Path(f) / "qrels" / "test.tsv").is_file()}
    for folder in sorted(folders):
        ids = heldout_query_ids(folder)
        out |= {_norm(t) for q, t in read_queries(find_beir_file(folder, "queries")).items() if q in ids}
    return out


def qrels_source(folder, name: str, max_chars: int | None = None) -> Source:
    """Train-split qrels of a BEIR folder (SciFact: 809 queries) over its full corpus (title + text)."""
    folder = Path(folder)
    qrels = read_qrels(folder / "qrels" / "train.tsv")
    leaked = set(qrels) & heldout_query_ids(folder)
    if leaked:
        raise FormatError(f"{folder}: queries {sorted(leaked)[:5]} are in both train and test qrels; "
                          "refusing to train on test queries")
    prefix = folder.name
    ids, titles, texts = [], [], []
    for doc in iter_corpus(find_beir_file(folder, "corpus")):
        ids.append(f"{prefix}/{doc.id}")
        titles.append(doc.title.strip())
        texts.append(_cut(doc.text.strip(), max_chars))
    known = set(ids)
    queries = []
    for qid, text in read_queries(find_beir_file(folder, "queries")).items():
        if qid in qrels:
            pos = [f"{prefix}/{d}" for d, rel in qrels[qid].items() if rel > 0 and f"{prefix}/{d}" in known]
            if pos and text.strip():
                queries.append((f"{name}/{qid}", text.strip(), pos))
    return Source(name, ids, titles, texts, queries)


def title_source(records: Iterable[dict], name: str, id_prefix: str, max_chars: int | None = None,
                 min_body_chars: int = 10, keep=None) -> Source:
    """Title -> title-less text pairs; ``keep(record)`` filters records (e.g. one lexicon source)."""
    ids, texts, orig, queries = [], [], [], []
    for obj in records:
        if keep is not None and not keep(obj):
            continue
        title = (obj.get("title") or "").strip()
        body = strip_title(title, obj.get("text") or "")
        if len(body) < min_body_chars:
            continue  # nothing left to retrieve without the title
        did = f"{id_prefix}{record_id(obj)}"
        ids.append(did)
        texts.append(_cut(body, max_chars))
        orig.append(title)
        if _has_word(title):
            queries.append((f"{name}/{record_id(obj)}", title, [did]))
    return Source(name, ids, [""] * len(ids), texts, queries, title_match=True, orig_titles=orig)


def load_sources(data_dir, names: Iterable[str] = SOURCES, lexicon_queries: int = 20000, seed: int = 0,
                 max_chars: int | None = 4000) -> list[Source]:
    """The named sources from a folder laid out like ``shared/data``."""
    data = Path(data_dir)
    names = list(names)
    unknown = [n for n in names if n not in SOURCES and not n.startswith(("qrels:", "titles:"))]
    if unknown:
        raise ConfigError(f"unknown training source(s) {unknown}; available: {', '.join(SOURCES)}, or your own "
                          "BEIR folders as qrels:DIR (qrels/train.tsv) and titles:DIR (title -> text)")
    out: list[Source] = []
    for n in names:
        kind, _, folder = n.partition(":")
        if n == "scifact-train" or kind == "qrels":
            folder = Path(folder) if folder else data / "scifact"
            out.append(qrels_source(folder, n if n in SOURCES else f"{folder.name}-train", max_chars))
        elif n.endswith("-title") or kind == "titles":
            folder = Path(folder) if folder else data / n[:-len("-title")]
            out.append(title_source(iter_beir(find_beir_file(folder, "corpus")), f"{folder.name}-title",
                                    f"{folder.name}-notitle/", max_chars))
    lex = [n for n in names if n in LEXICON_SOURCES]
    if lex:
        path = data / "lexicon" / "corpus.jsonl.gz"
        if not path.is_file():
            raise FormatError(f"{path} does not exist; the lexicon sources need shared/data/lexicon")
        recs = [r for r in iter_beir(path) if (r.get("metadata") or {}).get("source") in lex]
        srcs = [title_source(recs, s, "", max_chars, keep=lambda r, s=s: r["metadata"]["source"] == s) for s in lex]
        # subsample the queries of all lexicon sources together, so each keeps its share
        pool = [(i, j) for i, s in enumerate(srcs) for j in range(len(s.queries))]
        pick = sorted(random.Random(seed).sample(pool, min(lexicon_queries, len(pool))))
        for i, s in enumerate(srcs):
            s.queries = [s.queries[j] for i2, j in pick if i2 == i]
        out.extend(srcs)
    heldout = heldout_texts(data, [n.partition(":")[2] for n in names if n.startswith(("qrels:", "titles:"))])
    for s in out:
        s.queries = [q for q in s.queries if _norm(q[1]) not in heldout]
    return out


# ------------------------------------------------------------------------------------------ mining
def pair_dot(q, d, qrow: np.ndarray, drow: np.ndarray) -> np.ndarray:
    """Scores of the pairs (q[qrow[i]], d[drow[i]]): sparse (scipy CSR) or dense (numpy) rows."""
    out = np.empty(len(qrow), np.float64)
    for s in range(0, len(qrow), 65536):  # bounded memory
        a, b = q[qrow[s:s + 65536]], d[drow[s:s + 65536]]
        if isinstance(a, np.ndarray):
            out[s:s + 65536] = np.einsum("ij,ij->i", a, b, dtype=np.float64)
        else:
            out[s:s + 65536] = np.asarray(a.multiply(b).sum(axis=1), dtype=np.float64).ravel()
    return out


def mine(source: Source, depth: int = 30, n_negatives: int = 15, n_top: int | None = None, seed: int = 0,
         threads: int | None = None, scale: float = 10.0) -> list[dict]:
    """Records of one source: positives + ``n_negatives`` BM25-mined negatives, with BM25 scores."""
    from aftershock.lsr.bm25 import BM25
    from aftershock.seismic import ExactIndex

    if n_negatives < 1 or depth < 1:
        raise ConfigError(f"n_negatives={n_negatives}, depth={depth}: both must be >= 1")
    n_top = (n_negatives + 1) // 2 if n_top is None else n_top
    if not 0 <= n_top <= n_negatives:
        raise ConfigError(f"n_top={n_top} must be in 0..n_negatives={n_negatives}")
    if not source.queries:
        return []
    doc_texts = [f"{t} {x}".strip() if t else x for t, x in zip(source.titles, source.texts)]
    row_of = {d: i for i, d in enumerate(source.doc_ids)}
    bm25 = BM25().fit(doc_texts)
    docs = bm25.encode_documents(doc_texts)
    queries = bm25.encode_queries([q for _, q, _ in source.queries])
    max_pos = max(len(p) for _, _, p in source.queries)
    res = ExactIndex.build(docs).search(queries, k=min(len(doc_texts), depth + max_pos + 8), threads=threads)
    by_title: dict[str, list[int]] = {}
    by_text: dict[str, list[int]] = {}
    if source.title_match:
        for i, t in enumerate(source.orig_titles):
            by_title.setdefault(_norm(t), []).append(i)
        for i, t in enumerate(source.texts):
            by_text.setdefault(t, []).append(i)
    rng = np.random.default_rng([seed, int(hashlib.sha1(source.name.encode()).hexdigest()[:8], 16)])
    n_docs = len(doc_texts)
    rows, qrows, drows = [], [], []
    for qi, (qid, query, pos_ids) in enumerate(source.queries):
        pos = [row_of[p] for p in pos_ids]
        excluded = set(pos)
        if source.title_match:
            excluded.update(by_title.get(_norm(query), ()))
            for p in pos:
                excluded.update(by_text.get(source.texts[p], ()))
        ranked = [int(r) for r in res.ids[qi] if r >= 0 and int(r) not in excluded][:depth]
        neg = ranked[:n_top]
        rest = ranked[n_top:]
        take = min(n_negatives - len(neg), len(rest))
        if take > 0:
            neg += [rest[j] for j in sorted(rng.choice(len(rest), size=take, replace=False))]
        if len(neg) < n_negatives:  # too few hits: random documents of the corpus
            if n_docs - len(excluded) < n_negatives:
                raise ConfigError(f"source {source.name}: corpus of {n_docs} docs is too small for "
                                  f"n_negatives={n_negatives}; lower n_negatives")
            have = set(neg) | excluded
            while len(neg) < n_negatives:
                r = int(rng.integers(n_docs))
                if r not in have:
                    have.add(r)
                    neg.append(r)
        cand = pos + neg
        rows.append((qid, query, cand, len(pos)))
        qrows.extend([qi] * len(cand))
        drows.extend(cand)
    scores = pair_dot(queries.to_scipy(), docs.to_scipy(), np.asarray(qrows), np.asarray(drows))
    out, at = [], 0
    for qid, query, cand, n_pos in rows:
        s = scores[at:at + len(cand)]
        at += len(cand)
        out.append({"qid": qid, "query": query, "doc_ids": [source.doc_ids[c] for c in cand],
                    "labels": [1] * n_pos + [0] * (len(cand) - n_pos), "teacher": round_scores(ensemble({"bm25": s}, scale)),
                    "scores": {"bm25": round_scores(s)}, "source": source.name})
    return out


def is_dev(qid: str, dev_fraction: float) -> bool:
    h = int(hashlib.sha1(qid.encode("utf-8")).hexdigest()[:8], 16)
    return h % 100000 < dev_fraction * 100000


def out_paths(output, compress: bool) -> dict[str, Path]:
    ext = ".jsonl.gz" if compress else ".jsonl"
    return {s: Path(output) / f"{s}{ext}" for s in (*SPLITS, "corpus")}


def prepare(data_dir, output, sources: Iterable[str] = SOURCES, lexicon_queries: int = 20000, depth: int = 30,
            n_negatives: int = 15, n_top: int | None = None, dev_fraction: float = 0.03, seed: int = 0,
            scale: float = 10.0, max_chars: int | None = 4000, compress: bool = True, threads: int | None = None,
            log=print) -> dict:
    """Step 1: write train/dev/corpus to ``output``; returns counts per source and split, bytes, seconds."""
    if not 0 <= dev_fraction < 1:
        raise ConfigError(f"dev_fraction={dev_fraction} must be in [0, 1)")
    t0 = time.perf_counter()
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_paths(out_dir, compress)
    split_rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    corpus: dict[str, dict] = {}
    counts: dict[str, dict] = {}
    for src in load_sources(data_dir, sources, lexicon_queries, seed, max_chars):
        ts = time.perf_counter()
        recs = mine(src, depth, n_negatives, n_top, seed, threads, scale)
        titles = dict(zip(src.doc_ids, src.titles))
        texts = dict(zip(src.doc_ids, src.texts))
        for r in recs:
            split_rows["dev" if is_dev(r["qid"], dev_fraction) else "train"].append(r)
            for d in r["doc_ids"]:
                corpus.setdefault(d, {"_id": d, "title": titles[d], "text": texts[d]})
        counts[src.name] = {s: sum(r["source"] == src.name for r in split_rows[s]) for s in SPLITS}
        log(f"  {src.name}: {len(recs)} queries over {len(src.doc_ids)} docs "
            f"(train {counts[src.name]['train']}, dev {counts[src.name]['dev']}), {time.perf_counter() - ts:.1f} s")
    for s in SPLITS:
        write_jsonl_records(paths[s], split_rows[s])
    write_jsonl_records(paths["corpus"], corpus.values())
    stats = {"counts": counts, "queries": {s: len(split_rows[s]) for s in SPLITS}, "docs": len(corpus),
             "bytes": {k: p.stat().st_size for k, p in paths.items()}, "seconds": time.perf_counter() - t0}
    return stats


def iter_split(folder, split: str = "train") -> Iterator[dict]:
    """Records of ``folder/<split>.jsonl[.gz]`` one at a time (for a trainer)."""
    return iter_jsonl_records(find_split(Path(folder), split))
