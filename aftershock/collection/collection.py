"""`Collection`: a mutable, durable, filterable set of sparse documents keyed by external string ids.

Directory layout::

    LOCK                          the writer's lock (fcntl.flock; released when the process dies)
    CURRENT                       names the live manifest (replaced by rename: the commit point)
    manifest-<gen>.json           dim, config, schema, live segments (+ their deletion files), the log
    wal-<gen>.log                 write-ahead log of every call since that manifest (see `wal`)
    vocab.json                    the vocabulary, when the collection has one
    segments/<seg>/               an index directory (ExactIndex or SeismicIndex .save)
    segments/<seg>.parquet        its metadata columns (with a schema)
    segments/<seg>.del-<gen>.npy  its deletion bitmap (uint8 per row), a new file per generation

A commit (flush, merge) writes new segments and deletion files, fsyncs them, writes manifest-<gen+1>.json,
fsyncs it, then renames a new CURRENT into place and fsyncs the directory (as Lucene's segments_N); only
then are the old log, manifest and unreferenced files removed. A crash before the rename leaves the old
generation and its complete log; after it, the new one. Opening replays the log over the manifest.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from aftershock.collection import filters as F
from aftershock.collection.buffer import Buffer, Generation
from aftershock.collection.config import CollectionConfig
from aftershock.collection.commits import Commits
from aftershock.collection.manifest import FORMAT, VERSION, commit_manifest, write_atomic
from aftershock.collection.merge import Merger
from aftershock.collection.search import CollectionResult, check_queries, search_generation
from aftershock.collection.segment import SEGMENTS, Segment
from aftershock.collection.wal import Record, WriteAheadLog, cut_tail, read_log
from aftershock.errors import ConfigError, FormatError, IndexFormatError, TermIdOutOfRangeError
from aftershock.index import SparseBatch, Vocabulary
from aftershock.seismic import SearchParams

_OWNED = re.compile(r"^(manifest-\d+\.json|wal-\d+\.log|\.CURRENT\.tmp|\.manifest-\d+\.json\.tmp)$")
_SEG_OWNED = re.compile(r"^(seg-\d+(\.parquet|\.del-\d+\.npy)?|\.seg-\d+.*|\.seg-.*\.tmp)$")


class CollectionLockedError(IndexFormatError):
    """Another process holds the collection's writer lock."""


class Collection(Commits):
    """A directory of immutable segments + a write-ahead log + deletion bitmaps + metadata columns, behind
    one manifest switched atomically. One writer (a lock file), any number of readers (``read_only=True``).

    ``search(queries, k=10, params=None, filter=None, **overrides) -> CollectionResult``: the search
    contract of every index, except that ``ids`` are the **external string ids** (an object array padded
    with None) — a collection's row numbers change at every flush and merge, so they are never exposed.
    ``scores, ids = collection.search(...)`` unpacks as for `SearchResult`.

    Writes: ``upsert(vectors, ids, metadata=None)`` (replaces documents with the same ids), ``delete(ids)``;
    both are in the log (durable per ``config.durability``) before they return, and visible to the next
    search. ``flush()`` writes the buffer to a segment (also by size, ``buffer_docs``, and by age,
    ``flush_interval_s``); the tiered merge policy then merges segments in a background thread (see
    `aftershock.collection.merge`, `commits`); ``optimize()`` merges everything into one segment, dropping
    deleted rows; ``wait_for_merges()``, ``merges_paused()``. ``count()``, ``get(ids)``, ``info()``, ``close()``
    (waits for a merge in flight; also a context manager).
    """

    def __init__(self, path: Path, read_only: bool):
        self.path = Path(path)
        self.read_only = read_only
        self._write_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._lock_fd = None
        self._wal = None
        self._snap = None
        self._merger = None
        self._reserved = set()  # names of segments a merge in flight is writing (kept by the garbage collector)
        self.replay = {"records": 0, "skipped_bytes": 0, "skipped_reason": "", "moved_to": None}

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path, dim: int | None = None, vocab: Vocabulary | None = None,
               config: CollectionConfig | None = None, schema: dict | None = None) -> "Collection":
        """A new, empty collection at ``path`` (which must not exist or be an empty directory)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"{path} exists and is not an empty directory; pick a new path or open it with "
                              "Collection.open")
        if dim is None:
            if vocab is None:
                raise ConfigError("pass dim= (the vocabulary size) or vocab=")
            dim = len(vocab)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ConfigError(f"dim={dim!r} must be an integer >= 1 (the vocabulary size)")
        if vocab is not None and len(vocab) != dim:
            raise ConfigError(f"dim={dim} but the vocabulary has {len(vocab)} tokens; they must agree")
        config = config or CollectionConfig()
        if not isinstance(config, CollectionConfig):
            raise ConfigError(f"config must be a CollectionConfig, got {type(config).__name__}")
        schema = F.check_schema(schema)
        path.mkdir(parents=True, exist_ok=True)
        (path / SEGMENTS).mkdir(exist_ok=True)
        if vocab is not None:
            write_atomic(path / "vocab.json", json.dumps(vocab.tokens, ensure_ascii=False).encode())
        manifest = {"format": FORMAT, "version": VERSION, "generation": 0, "dim": int(dim),
                    "config": config.to_dict(), "schema": schema, "segments": [], "wal": "wal-000000.log",
                    "next_segment": 1}
        commit_manifest(path, manifest)
        return cls.open(path)

    @classmethod
    def open(cls, path, read_only: bool = False, verify: bool = True) -> "Collection":
        """Open a collection: as its one writer (takes the lock file), or ``read_only`` (no lock, no writes).
        The log is replayed; a truncated or corrupt tail is reported (a warning, ``info()["replay"]``),
        skipped and, for a writer, moved aside to ``wal-<gen>.log.corrupt-<n>``."""
        self = cls(path, read_only)
        if not (self.path / "CURRENT").exists():
            raise IndexFormatError(f"{self.path} is not an Aftershock collection (no CURRENT file); create one "
                                   "with Collection.create or `aftershock collection create`")
        if not read_only:
            self._take_lock()
        try:
            for attempt in range(20):  # a reader may race a writer's commit that removes the old generation
                try:
                    self._load(verify)
                    break
                except FileNotFoundError:
                    if not read_only or attempt == 19:
                        raise
                    time.sleep(0.05)
            if not read_only:
                self._collect_garbage()
                self._wal = WriteAheadLog(self.path / self.manifest["wal"], self.config.durability)
                if self.config.merge_mode == "background" or self.config.flush_interval_s:
                    tick = self.config.flush_interval_s / 2 if self.config.flush_interval_s else None
                    self._merger = Merger(self, tick)  # merges start at the first flush
                    self._merger.start()
        except BaseException:
            self._release_lock()
            raise
        return self

    def _take_lock(self):
        fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CollectionLockedError(f"{self.path} is open for writing by another process; open it with "
                                        "read_only=True, or close the other writer") from None
        self._lock_fd = fd

    def _release_lock(self):
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self, verify: bool):
        name = (self.path / "CURRENT").read_text().strip()
        try:
            manifest = json.loads((self.path / name).read_text())
        except json.JSONDecodeError as e:
            raise IndexFormatError(f"{self.path / name} is not valid JSON ({e}); the collection is damaged") from None
        if manifest.get("format") != FORMAT or manifest.get("version", 99) > VERSION:
            raise IndexFormatError(f"{self.path / name} is not a collection manifest of version <= {VERSION}; "
                                   "upgrade aftershock")
        self.manifest = manifest
        self.generation = int(manifest["generation"])
        self.dim = int(manifest["dim"])
        self.config = CollectionConfig.from_dict(manifest["config"])
        self.schema = F.check_schema(manifest.get("schema") or {})
        vf = self.path / "vocab.json"
        self.vocab = Vocabulary(json.loads(vf.read_text(encoding="utf-8"))) if vf.exists() else None
        self._segments = [Segment(self.path, e, bool(self.schema), verify) for e in manifest["segments"]]
        self._next_segment = int(manifest["next_segment"])
        self._where = {}  # external id -> (Segment, row) of live segment rows
        for seg in self._segments:
            self._index_rows(seg)
        self._buffer = {}  # external id -> (indices int32, values float32, metadata dict)
        self._buffer_t0 = None  # time.monotonic() when the buffer got its first document (time-based flush)
        self._dirty = set()  # segments whose deletions are not yet in a deletion file
        scan = read_log(self.path / manifest["wal"])
        for rec in scan.records:
            self._apply(rec)
        self.replay = {"records": len(scan.records), "skipped_bytes": scan.tail_bytes,
                       "skipped_reason": scan.reason, "moved_to": None}
        if scan.tail_bytes:
            warnings.warn(f"{self.path / manifest['wal']}: skipped {scan.tail_bytes} bytes after the last valid "
                          f"record ({scan.reason}); writes that were never acknowledged are lost, nothing else",
                          RuntimeWarning, stacklevel=3)
            if not self.read_only:
                side = cut_tail(self.path / manifest["wal"], scan.good_bytes)
                self.replay["moved_to"] = side.name if side else None

    def _index_rows(self, seg):
        live = np.flatnonzero(~seg.deleted)
        self._where.update(zip(seg.doc_ids[live].tolist(), ((seg, int(r)) for r in live.tolist())))

    def _collect_garbage(self):
        """Remove the files of this collection that the live manifest does not name (left by a crash), except
        those of a segment a merge in flight is writing."""
        live = {self.manifest["wal"], (self.path / "CURRENT").read_text().strip()}
        for f in self.path.iterdir():
            if _OWNED.match(f.name) and f.name not in live:
                f.unlink(missing_ok=True)
        seg_live = set()
        for e in self.manifest["segments"]:
            seg_live |= {e["name"], f"{e['name']}.parquet"} | ({e["deletions"]} if e.get("deletions") else set())
        for f in (self.path / SEGMENTS).iterdir():
            if _SEG_OWNED.match(f.name) and f.name not in seg_live and not any(r in f.name for r in self._reserved):
                shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writes
    def _check_writable(self):
        if self.read_only:
            raise ConfigError(f"{self.path} is open read-only; open it with read_only=False to write")
        if self._wal is None:
            raise ConfigError(f"{self.path} is closed; open it again")

    def upsert(self, vectors, ids=None, metadata=None) -> int:
        """Insert or replace documents: ``vectors`` a `SparseBatch` (or scipy matrix), ``ids`` their external
        ids (default ``vectors.ids``), ``metadata`` one dict per document (schema fields) or None. Returns
        the number written; durable (per the durability mode) and searchable when it returns."""
        self._check_writable()
        if not isinstance(vectors, SparseBatch):
            vectors = SparseBatch.from_scipy(vectors, ids=ids)
        ids = [str(i) for i in (vectors.ids if ids is None else ids)]
        if len(ids) != len(vectors):
            raise FormatError(f"{len(ids)} ids for {len(vectors)} vectors; pass one id per vector")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise FormatError(f"id {dup!r} appears twice in one upsert; pass each id once per call")
        if vectors.nnz and int(vectors.indices.max()) >= self.dim:
            raise TermIdOutOfRangeError(f"a vector has term id {int(vectors.indices.max())} >= the collection's "
                                        f"dim {self.dim}; encode with the collection's vocabulary")
        md = F.check_metadata(self.schema, metadata, len(ids), ids)
        rec = Record("upsert", ids, md if self.schema else None, vectors.indptr, vectors.indices, vectors.values)
        self._write(rec)
        if len(self._buffer) >= self.config.buffer_docs or self._buffer_expired():
            self.flush()
        return len(ids)

    def delete(self, ids) -> int:
        """Delete documents by external id (unknown ids are ignored); returns how many existed."""
        self._check_writable()
        if isinstance(ids, str):
            ids = [ids]
        ids = [str(i) for i in ids]
        n = sum(1 for i in ids if i in self._buffer or i in self._where)
        self._write(Record("delete", ids))
        return n

    def _write(self, rec: Record):
        with self._write_lock:
            seq = self._wal.append(rec)
            self._apply(rec)
            if self.config.durability == "fsync":
                self._wal.commit(seq)
            wal = self._wal
        if self.config.durability == "batch":
            wal.commit(seq)  # group commit: outside the lock, so writers waiting here share one fsync

    def _apply(self, rec: Record):
        """Apply one log record to the in-memory state (copy-on-write deletion masks)."""
        with self._state_lock:
            masks = {}
            for i in rec.ids:
                self._buffer.pop(i, None)
                where = self._where.pop(i, None)
                if where is not None:
                    masks.setdefault(where[0], []).append(where[1])
            for seg, rows in masks.items():
                d = seg.deleted.copy()
                d[rows] = True
                seg.deleted = d
                self._dirty.add(seg)
            if rec.op == "upsert":
                if self._buffer_t0 is None:
                    self._buffer_t0 = time.monotonic()
                md = rec.metadata or [{}] * len(rec.ids)
                for j, i in enumerate(rec.ids):
                    a, b = int(rec.indptr[j]), int(rec.indptr[j + 1])
                    self._buffer[i] = (np.array(rec.indices[a:b], np.int32), np.array(rec.values[a:b], np.float32),
                                       md[j])
            self._snap = None

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> Generation:
        """The current generation (segments + deletion masks + buffer), immutable: what one search sees."""
        with self._state_lock:
            if self._snap is None:
                self._snap = Generation(self.dim, self.schema, tuple((s, s.deleted) for s in self._segments),
                                        Buffer(self._buffer, self.dim, self.schema))
            return self._snap

    def search(self, queries, k: int = 10, params: SearchParams | None = None, filter: dict | None = None,
               **overrides) -> CollectionResult:
        """Top-k per query over every live document (passing ``filter``, Qdrant's JSON shape), best first;
        ``ids`` are external ids padded with None. ``params`` / overrides: `SearchParams` of the Seismic
        segments (exact segments and the buffer are scored exactly)."""
        if params is not None and not isinstance(params, SearchParams):
            raise ConfigError(f"params must be a SearchParams, got {type(params).__name__}")
        params = params or SearchParams()
        if overrides:
            params = params.with_(**overrides)
        F.check_filter(filter, self.schema)
        queries = check_queries(queries, k, self.dim)
        return search_generation(self.snapshot(), queries, int(k), params, filter, self.config)

    def count(self) -> int:
        """Live documents (segments minus deletions, plus the buffer)."""
        with self._state_lock:
            return len(self._where) + len(self._buffer)

    def get(self, ids) -> tuple[SparseBatch, list[dict]]:
        """The stored vectors and metadata of ``ids`` that exist, in the order asked (unknown ids are skipped:
        the batch's ``ids`` say which were found). Seismic segments return their forward index's values."""
        if isinstance(ids, str):
            ids = [ids]
        rows, found, md = [], [], []
        ids = [str(x) for x in ids]
        with self._state_lock:
            found_at = [self._buffer.get(i) or self._where.get(i) for i in ids]
        for i, at in zip(ids, found_at):
            if at is None:
                continue
            if len(at) == 3:  # the buffer: (indices, values, metadata); a segment: (Segment, row)
                rows.append((at[0], at[1]))
                md.append(dict(at[2]))
            else:
                seg, row = at
                r = seg.rows(np.array([row]))
                rows.append((r.indices, r.values))
                md.append(F.row_metadata(self.schema, seg.table, row))
            found.append(i)
        return SparseBatch.from_rows(rows, ids=found, dim=self.dim, vocab=self.vocab), md

    def info(self) -> dict:
        """A JSON-ready summary: counts, segments, the log, the last replay (skipped bytes), config, schema."""
        snap = self.snapshot()
        wal = self.path / self.manifest["wal"]
        return {"path": str(self.path), "generation": self.generation, "dim": self.dim, "count": self.count(),
                "segments": [{"name": s.name, "kind": s.kind, "n_docs": s.n, "n_deleted": int(d.sum())}
                             for s, d in snap.segments],
                "buffer_docs": snap.buffer.n, "durability": self.config.durability,
                "wal": {"file": wal.name, "bytes": wal.stat().st_size if wal.exists() else 0},
                "replay": dict(self.replay), "read_only": self.read_only,
                "config": self.config.to_dict(), "schema": dict(self.schema),
                "disk_bytes": sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()),
                "merges": self._merge_info()}

    def _merge_info(self) -> dict:
        m = self._merger
        return {"mode": self.config.merge_mode, "running": bool(m and m.busy), "done": m.merges if m else 0,
                "seconds": round(m.merge_s, 3) if m else 0.0, "error": repr(m.error) if m and m.error else None}

    def close(self) -> None:
        """Stop the merger (a merge in flight finishes and commits first), sync the log and release the
        writer lock (the buffer stays in the log; nothing is lost)."""
        merger, self._merger = self._merger, None
        if merger is not None:
            merger.stop()
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        self._release_lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, count={self.count()}, segments={len(self._segments)})"
