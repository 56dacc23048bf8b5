"""Dataset loaders: BEIR-layout folders and (where their files are cached) ``ir_datasets`` ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aftershock.errors import FormatError
from aftershock.index.text import doc_text, find_beir_file, iter_beir, iter_corpus, read_qrels, record_id

# the readers live in the data layer (aftershock.index.text); these names stay importable from here
find_file, iter_jsonl = find_beir_file, iter_beir
__all__ = ["Dataset", "load_beir", "load_ir_datasets", "doc_text", "find_file", "iter_jsonl", "read_qrels",
           "record_id"]


@dataclass
class Dataset:
    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


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
    for doc in iter_corpus(find_beir_file(folder, "corpus")):
        doc_ids.append(doc.id)
        doc_texts.append(doc.joined)
        if max_docs is not None and len(doc_ids) >= max_docs:
            break
    qids, qtexts = [], []
    for obj in iter_beir(find_beir_file(folder, "queries")):
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
