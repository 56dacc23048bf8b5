"""Text files of the data walk: one gzip-aware open, one JSONL reader/writer, BEIR corpora, queries and
qrels, TREC runs and id files. Every other room reads and writes these files through here.

* `open_text(path, mode)`: ``path.gz`` is gzip, anything else a plain file; text modes are UTF-8
  (invalid bytes read as U+FFFD), binary modes (``"rb"``, ``"wb"``) give bytes.
* JSONL: `iter_jsonl_records` / `read_jsonl_records` (one JSON object per non-empty line, a bad line
  raises `FormatError` naming ``path:line``), `write_jsonl_records`.
* BEIR: `iter_beir` (records with ``_id`` or ``id``), `iter_corpus` (`Document(id, title, text)`),
  `read_corpus` (id -> joined text), `read_documents` (id -> {title, text}; also ``id<TAB>text`` .tsv),
  `read_queries`, `read_qrels`, `find_beir_file`.
* TREC runs: `write_trec_run` / `read_trec_run` (``qid Q0 docid rank score tag``), `trec_lines`,
  `check_trec_id`.
* id files: `read_ids` / `write_ids` (one id per line).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from aftershock.errors import AftershockError, DuplicateIdError, FormatError, InvalidIdError

_TEXT_MODES = {"r": "rt", "rt": "rt", "w": "wt", "wt": "wt", "a": "at", "at": "at", "x": "xt", "xt": "xt"}
_BINARY_MODES = ("rb", "wb", "ab", "xb")


def is_gzip(path) -> bool:
    return Path(path).name.lower().endswith(".gz")


def open_text(path, mode: str = "r", errors: str | None = None, compresslevel: int = 6):
    """Open ``path`` (gzip when it ends in ``.gz``). Text modes (``r``, ``w``, ``a``, ``x``, with or without
    ``t``) are UTF-8; reading replaces invalid bytes by U+FFFD unless ``errors`` says otherwise. Binary
    modes (``rb``, ``wb``, ``ab``, ``xb``) return a byte stream."""
    path = Path(path)
    if mode in _BINARY_MODES:
        return gzip.open(path, mode, compresslevel=compresslevel) if is_gzip(path) else open(path, mode)
    if mode not in _TEXT_MODES:
        raise ValueError(f"open_text mode={mode!r}; use one of {sorted(_TEXT_MODES)} or {list(_BINARY_MODES)}")
    bmode = _TEXT_MODES[mode][0] + "b"
    raw = gzip.open(path, bmode, compresslevel=compresslevel) if is_gzip(path) else open(path, bmode)
    if errors is None:
        errors = "replace" if bmode == "rb" else "strict"
    return io.TextIOWrapper(raw, encoding="utf-8", errors=errors, newline="\n" if bmode != "rb" else None)


def _stem(path) -> str:
    """The file name without ``.gz``, lower case (``corpus.jsonl.gz`` -> ``corpus.jsonl``)."""
    name = Path(path).name.lower()
    return name[:-3] if name.endswith(".gz") else name


@contextmanager
def reading(path, what: str):
    """Turn the ways a damaged file fails inside a reader (bad gzip, truncated streams, undecodable UTF-8 under
    ``errors="strict"``, numpy/zip/pyarrow parse errors) into one `FormatError` naming ``path`` and ``what``
    it should have been. Aftershock's own errors and missing/unreadable files pass through unchanged."""
    try:
        yield
    except AftershockError:
        raise
    except UnicodeDecodeError as e:
        raise FormatError(f"{path} is not valid UTF-8 ({e.reason} at byte {e.start} of a chunk); {what} files must "
                          "be UTF-8 text") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise FormatError(f"{path} is not a readable gzip file ({e}); re-create it or drop the .gz suffix") from None
    except (zipfile.BadZipFile, ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        raise FormatError(f"{path} is not a valid {what} file ({type(e).__name__}: {e})") from None
    except Exception as e:
        if type(e).__module__.split(".")[0] == "pyarrow":
            raise FormatError(f"{path} is not a valid {what} file ({type(e).__name__}: {e})") from None
        raise


# ---------------------------------------------------------------------------------------------- JSONL
def iter_jsonl_records(path, line_numbers: bool = False) -> Iterator:
    """The JSON objects of a JSONL file (``.gz`` aware), one per non-empty line; ``(line number, object)``
    pairs with ``line_numbers=True`` (for messages that point into the file)."""
    for lineno, obj in _numbered_records(path):
        yield (lineno, obj) if line_numbers else obj


def _numbered_records(path) -> Iterator[tuple[int, dict]]:
    path = Path(path)
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise FormatError(f"{path}:{lineno}: a record must be a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl_records(path) -> list[dict]:
    return list(iter_jsonl_records(path))


def write_jsonl_records(path, rows: Iterable[dict]) -> int:
    """One compact JSON object per line (non-ASCII kept); returns the number of lines written."""
    n = 0
    with open_text(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


# ---------------------------------------------------------------------------------------------- BEIR
class Document(NamedTuple):
    id: str
    title: str
    text: str

    @property
    def joined(self) -> str:
        """``title + " " + text`` (BEIR's convention; either may be empty)."""
        return join_title(self.title, self.text)


def join_title(title: str, text: str) -> str:
    return f"{title} {text}".strip() if title else text


def record_id(obj: dict) -> str:
    """A record's ``_id`` (BEIR) or ``id``."""
    return str(obj["_id"] if "_id" in obj else obj.get("id"))


def doc_text(obj: dict) -> str:
    """BEIR convention: title and text joined by a space (either may be missing)."""
    return join_title(obj.get("title") or "", obj.get("text") or "")


def find_beir_file(folder, stem: str) -> Path:
    """``folder/stem.jsonl`` or ``folder/stem.jsonl.gz``."""
    folder = Path(folder)
    for suffix in (".jsonl", ".jsonl.gz"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    raise FormatError(f"{folder} has no {stem}.jsonl or {stem}.jsonl.gz; a BEIR folder needs corpus.jsonl[.gz], "
                      "queries.jsonl and qrels/<split>.tsv")


def iter_beir(path) -> Iterator[dict]:
    """Records of a BEIR JSONL file; each must have an ``_id`` (or ``id``) field."""
    for lineno, obj in _numbered_records(path):
        if "_id" not in obj and "id" not in obj:
            raise FormatError(f"{path}:{lineno}: a record needs an '_id' (or 'id') field")
        yield obj


def iter_corpus(path) -> Iterator[Document]:
    """`Document(id, title, text)` per record of a corpus JSONL (BEIR ``_id``/``title``/``text``, or
    ``id``/``contents``)."""
    for obj in iter_beir(path):
        text = obj.get("text") if obj.get("text") is not None else obj.get("contents")
        yield Document(record_id(obj), obj.get("title") or "", text or "")


def read_corpus(path, ids: set[str] | None = None) -> dict[str, str]:
    """id -> ``title + " " + text`` of a corpus JSONL (only the ``ids`` given, when given)."""
    return {d.id: d.joined for d in iter_corpus(path) if ids is None or d.id in ids}


def read_documents(path) -> dict[str, dict]:
    """id -> ``{"title": str | None, "text": str}`` of a BEIR ``corpus.jsonl[.gz]`` or an ``id<TAB>text``
    ``.tsv[.gz]`` (title None where there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"documents file {path} does not exist; pass a BEIR corpus.jsonl[.gz] or an id<TAB>text .tsv")
    name = _stem(path)
    if name.endswith((".jsonl", ".json")):
        return {d.id: {"title": d.title or None, "text": d.text} for d in iter_corpus(path)}
    if name.endswith(".tsv"):
        return {i: {"title": None, "text": t} for i, t in _iter_tsv_pairs(path)}
    raise FormatError(f"documents file {path}: use a .jsonl[.gz] BEIR corpus or an id<TAB>text .tsv[.gz]")


def _iter_tsv_pairs(path) -> Iterator[tuple[str, str]]:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                key, _, value = line.rstrip("\n").partition("\t")
                yield key, value


def read_queries(path) -> dict[str, str]:
    """qid -> text of a BEIR ``queries.jsonl[.gz]`` or a ``qid<TAB>text`` ``.tsv[.gz]``."""
    if _stem(path).endswith(".tsv"):
        return dict(_iter_tsv_pairs(path))
    return {record_id(o): o.get("text") or "" for o in iter_beir(path)}


def read_qrels(path) -> dict[str, dict[str, int]]:
    """qid -> {docid: relevance} of a BEIR ``qrels/<split>.tsv`` (``query-id corpus-id score``, header
    optional) or a TREC qrels file (``qid 0 docid rel``); tab or whitespace separated."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            line = line.rstrip("\n")
            parts = line.split("\t") if "\t" in line else line.split()
            if lineno == 1 and not parts[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(parts) == 4:  # TREC qrels: qid 0 docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
                raise FormatError(f"{path}:{lineno}: expected query-id<TAB>corpus-id<TAB>score (integer) or "
                                  "TREC 'qid 0 docid rel'")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


# ---------------------------------------------------------------------------------------------- TREC runs
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_trec_id(value: str, what: str = "id") -> str:
    """A query id, document id or run tag a TREC line can hold: not empty, no whitespace or control character."""
    if not value or any(c.isspace() for c in value) or _CONTROL.search(value):
        raise InvalidIdError(f"{what} {value!r} is empty or contains whitespace or a control character, which a "
                             "TREC run cannot hold; fix the id file")
    return value


def check_ids(ids, what: str = "document") -> None:
    """Every id of a build: non-empty, no whitespace or control characters (`check_trec_id`) and unique
    (`DuplicateIdError`): C-speed passes over the joined ids, a Python loop only to name the culprit."""
    ids = [str(x) for x in ids]
    if not ids:
        return
    joined = "\n".join(ids)
    parts = joined.split()
    if len(parts) != len(ids) or sum(map(len, parts)) != len(joined) - (len(ids) - 1) or _CONTROL.search(joined):
        for i, x in enumerate(ids):
            try:
                check_trec_id(x, f"{what} id")
            except InvalidIdError as e:
                raise InvalidIdError(f"{e} (row {i}); ids are written into TREC runs and API answers") from None
    if len(set(ids)) != len(ids):
        seen: dict = {}
        for i, x in enumerate(ids):
            if x in seen:
                raise DuplicateIdError(f"{what} id {x!r} appears twice (rows {seen[x]} and {i}); ids must be unique "
                                       "within an index: drop or rename the duplicate")
            seen[x] = i


def trec_lines(qid: str, doc_ids: Iterable[str], scores: Iterable[float], tag: str) -> list[str]:
    """``qid Q0 docid rank score tag`` lines: rank from 1 in the order given, the score with 9 significant
    digits (a float32 exactly); every id is checked with `check_trec_id`."""
    check_trec_id(qid, "query id")
    check_trec_id(tag, "run tag")
    return [f"{qid} Q0 {check_trec_id(str(d), 'document id')} {rank} {float(s):.9g} {tag}\n"
            for rank, (d, s) in enumerate(zip(doc_ids, scores), 1)]


def write_trec_run(run: dict[str, dict[str, float]], path, tag: str = "aftershock") -> None:
    """A run ``{qid: {docid: score}}`` as a TREC file; each query's documents by score (ties by docid)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_text(path, "w") as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda x: (-x[1], x[0]))
            f.writelines(trec_lines(qid, (d for d, _ in ranked), (s for _, s in ranked), tag))


def read_trec_run(path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` of a TREC run file (6 whitespace-separated columns per line)."""
    path = Path(path)
    run: dict[str, dict[str, float]] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                qid, _, did, _, score, _ = parts
                run.setdefault(qid, {})[did] = float(score)
            except ValueError:
                raise FormatError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag'") from None
    return run


# ---------------------------------------------------------------------------------------------- id files
def read_ids(path) -> list[str]:
    """One id per line (a companion file for vector formats without ids); strict UTF-8 (a replaced byte would
    silently change an id)."""
    with reading(path, "id (one id per line, UTF-8)"), open_text(path, "r", errors="strict") as f:
        return [line.rstrip("\n").removesuffix("\r") for line in f]


def write_ids(ids, path) -> None:
    with open_text(path, "w") as f:
        f.writelines(f"{i}\n" for i in ids)
