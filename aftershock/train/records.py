"""Training records: read, check, split into train/dev and batch them for the trainer.

Training records (JSONL, one query per line)::

    {"qid": "q1", "query": "...", "doc_ids": ["d1", "d7", ...], "labels": [1, 0, ...], "teacher": [9.1, 3.2, ...]}

``docs: [text, ...]`` may replace ``doc_ids``; ``labels`` defaults to "first document relevant, the
rest not"; ``teacher`` (one ensemble score per document) is needed by the KL and MarginMSE losses.

The dev set is ``data.dev`` or a hash split of the training queries (``data.dev_fraction``).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aftershock.errors import ConfigError, FormatError
from aftershock.index import iter_jsonl_records, read_corpus
from aftershock.train.config import TrainConfig


@dataclass
class Record:
    qid: str
    query: str
    docs: list          # document texts
    positives: list     # indices into docs (label > 0), in order
    negatives: list     # indices into docs (label <= 0)
    teacher: list | None
    line: int


def _check_record(path: Path, lineno: int, obj: dict) -> dict:
    for key, kind in (("qid", (str, int)), ("query", str)):
        if not isinstance(obj.get(key), kind):
            raise FormatError(f"{path}:{lineno}: missing or non-string field {key!r}; a record is "
                              '{"qid", "query", "doc_ids" or "docs", "labels"?, "teacher"?}')
    has_ids, has_docs = isinstance(obj.get("doc_ids"), list), isinstance(obj.get("docs"), list)
    if has_ids == has_docs:
        raise FormatError(f"{path}:{lineno}: give exactly one of 'doc_ids' (ids in data.corpus) or 'docs' (texts)")
    items = obj["doc_ids" if has_ids else "docs"]
    if not all(isinstance(x, (str, int)) if has_ids else isinstance(x, str) for x in items):
        raise FormatError(f"{path}:{lineno}: {'doc_ids' if has_ids else 'docs'} must be a list of strings")
    n = len(items)
    for key, kind in (("labels", (int, float)), ("teacher", (int, float))):
        value = obj.get(key)
        if value is not None and (not isinstance(value, list) or len(value) != n
                                  or not all(isinstance(x, kind) and not isinstance(x, bool) for x in value)):
            raise FormatError(f"{path}:{lineno}: {key!r} must be a list of {n} numbers, one per document")
    return obj


def _read_records(path, corpus, n_negatives: int, *, training: bool) -> tuple[list[Record], dict]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training data {path} does not exist; set [data] train / dev to a JSONL file")
    raw = [(lineno, _check_record(path, lineno, obj))
           for lineno, obj in iter_jsonl_records(path, line_numbers=True)]
    needed = {str(i) for _, obj in raw for i in obj.get("doc_ids", ())}
    texts = _corpus_texts(corpus, needed, path) if needed else {}
    records, skipped = [], {"no_positive": 0, "too_few_negatives": 0}
    for lineno, obj in raw:
        docs = [texts[str(i)] for i in obj["doc_ids"]] if "doc_ids" in obj else obj["docs"]
        labels = obj["labels"] if obj.get("labels") is not None else [1] + [0] * (len(docs) - 1) if docs else []
        pos = [j for j, y in enumerate(labels) if y > 0]
        neg = [j for j, y in enumerate(labels) if y <= 0]
        if not pos:
            skipped["no_positive"] += 1
        elif training and len(neg) < n_negatives:
            skipped["too_few_negatives"] += 1
        else:
            records.append(Record(str(obj["qid"]), obj["query"], docs, pos, neg, obj.get("teacher"), lineno))
    if any(skipped.values()):
        warnings.warn(f"{path}: skipped {sum(skipped.values())} of {len(raw)} records: {skipped['no_positive']} "
                      f"without a positive label, {skipped['too_few_negatives']} with fewer than "
                      f"n_negatives={n_negatives} non-positive documents", stacklevel=3)
    return records, skipped


def _corpus_texts(corpus, needed: set, source: Path) -> dict:
    if not corpus:
        raise ConfigError(f"{source} gives doc_ids but data.corpus is not set; set [data] corpus = "
                          "\"corpus.jsonl[.gz]\" (BEIR _id/title/text) or give the texts inline as 'docs'")
    texts = read_corpus(corpus, needed)
    missing = needed - texts.keys()
    if missing:
        raise FormatError(f"{source}: {len(missing)} doc ids are not in the corpus {corpus}, e.g. "
                          f"{sorted(missing)[:3]}; check data.corpus")
    return texts


def in_dev(qid: str, fraction: float) -> bool:
    return int(hashlib.sha1(qid.encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32 < fraction


def load_data(cfg: TrainConfig) -> tuple[list[Record], list[Record], dict]:
    """Training records, dev records (from data.dev or a hash split of the training queries), skip counts."""
    d = cfg.data
    train, skipped = _read_records(d.train, d.corpus, d.n_negatives, training=True)
    if d.dev:
        dev, _ = _read_records(d.dev, d.corpus, d.n_negatives, training=False)
    elif d.dev_fraction > 0:
        dev = [r for r in train if in_dev(r.qid, d.dev_fraction)]
        train = [r for r in train if not in_dev(r.qid, d.dev_fraction)]
    else:
        dev = []
    if cfg.uses_teacher:
        for r in train:
            if r.teacher is None:
                raise ConfigError(f"loss.ranking uses kl / margin_mse but {d.train}:{r.line} (qid {r.qid!r}) has no "
                                  "'teacher' scores; add them to every record or set those weights to 0")
    return train, dev, skipped


def sample_batch(records: list[Record], rng: np.random.Generator, n_negatives: int):
    """Per query: its first positive then ``n_negatives`` sampled non-positives (and their teacher scores)."""
    queries, docs, teacher = [], [], []
    for r in records:
        picks = [r.positives[0], *(r.negatives[j] for j in rng.choice(len(r.negatives), n_negatives, replace=False))]
        queries.append(r.query)
        docs.extend(r.docs[j] for j in picks)
        teacher.append([r.teacher[j] for j in picks] if r.teacher is not None else None)
    return queries, docs, teacher
