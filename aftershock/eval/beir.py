"""Dataset loaders: BEIR-layout folders and (where their files are cached) ``ir_datasets`` ids."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from aftershock.errors import FormatError


@dataclass
class Dataset:
    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def _open_text(path: Path):
    """Text lines of a (possibly gzipped) UTF-8 file; invalid bytes become U+FFFD."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    import io

    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def find_file(folder: Path, stem: str) -> Path:
    for suffix in (".jsonl", ".jsonl.gz"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    raise FormatError(f"{folder} has no {stem}.jsonl or {stem}.jsonl.gz; a BEIR folder needs corpus.jsonl[.gz], "
                      "queries.jsonl and qrels/<split>.tsv")


def iter_jsonl(path, fields=("_id", "title", "text")) -> Iterator[dict]:
    """Records of a BEIR JSONL file (``_id`` or ``id``), one dict per non-empty line."""
    path = Path(path)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(obj, dict) or ("_id" not in obj and "id" not in obj):
                raise FormatError(f"{path}:{lineno}: a record needs an '_id' (or 'id') field")
            yield obj


def doc_text(obj: dict) -> str:
    """BEIR convention: title and text joined by a space (either may be missing)."""
    title, text = obj.get("title") or "", obj.get("text") or ""
    return f"{title} {text}".strip() if title else text


def record_id(obj: dict) -> str:
    return str(obj.get("_id", obj.get("id")))


def read_qrels(path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(Path(path)) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            if len(parts) == 4:  # TREC qrels: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                if line.strip():
                    raise FormatError(f"{path}:{lineno}: expected query-id<TAB>corpus-id<TAB>score")
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def load_beir(folder, split: str = "test", max_docs: int | None = None) -> Dataset:
    """Load a BEIR folder; queries are restricted to those judged in ``qrels/<split>.tsv``."""
    folder = Path(folder)
    if not folder.is_dir():
        return load_ir_datasets(str(folder))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FormatError(f"{qrels_path} does not exist; splits here: {have or 'none'} (pass --split)")
    qrels = read_qrels(qrels_path)
    doc_ids, doc_texts = [], []
    for obj in iter_jsonl(find_file(folder, "corpus")):
        doc_ids.append(record_id(obj))
        doc_texts.append(doc_text(obj))
        if max_docs is not None and len(doc_ids) >= max_docs:
            break
    qids, qtexts = [], []
    for obj in iter_jsonl(find_file(folder, "queries")):
        qid = record_id(obj)
        if qid in qrels:
            qids.append(qid)
            qtexts.append(obj.get("text") or "")
    if not qids:
        raise FormatError(f"no query of {folder}/queries.jsonl is judged in {qrels_path}")
    return Dataset(folder.name, doc_ids, doc_texts, qids, qtexts, qrels)


def load_ir_datasets(dataset_id: str) -> Dataset:
    """An ``ir_datasets`` id such as ``beir/scifact/test``; works offline only when its files are cached."""
    try:
        import ir_datasets
    except ImportError:
        raise FormatError(f"{dataset_id!r} is not a folder, and ir_datasets is not installed to resolve it as a "
                          "dataset id (pip install ir-datasets)") from None
    try:
        ds = ir_datasets.load(dataset_id)
        doc_ids, doc_texts = [], []
        for d in ds.docs_iter():
            doc_ids.append(str(d.doc_id))
            doc_texts.append(doc_text({"title": getattr(d, "title", ""), "text": getattr(d, "text", "")}))
        qrels: dict[str, dict[str, int]] = {}
        for q in ds.qrels_iter():
            qrels.setdefault(str(q.query_id), {})[str(q.doc_id)] = int(q.relevance)
        qs = [(str(q.query_id), q.text) for q in ds.queries_iter() if str(q.query_id) in qrels]
    except Exception as e:  # download attempts fail offline
        raise FormatError(f"ir_datasets could not provide {dataset_id!r} offline ({type(e).__name__}: {e}); "
                          "use a BEIR folder or cache the dataset first") from None
    return Dataset(dataset_id.replace("/", "_"), doc_ids, doc_texts, [q for q, _ in qs], [t for _, t in qs], qrels)
