"""The commits of a `Collection` (a mixin of it): flush, optimize, the merges the tiered policy asks for
(run by the background `merge.Merger` thread or inline), and the one commit routine they share.

A commit writes the new segment and the pending deletion files, fsyncs them, writes and fsyncs
``manifest-<gen+1>.json`` and renames ``CURRENT`` to name it (the commit point), then swaps the in-memory
state at once (a search keeps the `Generation` it started with). A flush starts a new log (the buffer is in
its segment); a merge keeps the log: every record in it is idempotent over the merged state (an upsert or
delete removes ids that the merge already dropped or carried as deleted), so replay after a crash gives
the same documents whichever side of the commit point the crash fell.
"""

from __future__ import annotations

import contextlib
import shutil
import time

import numpy as np

from aftershock.collection import filters as F
from aftershock.collection.buffer import Buffer
from aftershock.collection.manifest import commit_manifest
from aftershock.collection.merge import pick_merge
from aftershock.collection.segment import SEGMENTS, Segment, write_deletions, write_segment
from aftershock.collection.wal import WriteAheadLog
from aftershock.index import SparseBatch
from aftershock.index.store import fsync_dir

merge_hook = None  # tests: called by a background merge between building its segment and committing it


class Commits:
    """flush / optimize / merges of `Collection` (which holds the state these methods change)."""

    def flush(self) -> None:
        """Write the buffer to a new segment and pending deletions to new bitmap files, commit a new
        manifest and start a new log, then return; merges the policy asks for (`merge.pick_merge`) run in
        the background thread (``merge_mode="background"``) or here (``"inline"``)."""
        self._check_writable()
        with self._write_lock:
            if self._buffer or self._dirty or self._wal.records:
                self._commit([], flush_buffer=True)
        self._after_flush()

    def _buffer_expired(self) -> bool:
        t0, every = self._buffer_t0, self.config.flush_interval_s
        return bool(every) and t0 is not None and time.monotonic() - t0 >= every

    def _maybe_time_flush(self) -> None:
        """The time-based flush (``config.flush_interval_s``), called by the merger thread on its ticks."""
        if self._buffer_expired():
            with self._write_lock:
                if self._wal is None or not self._buffer_expired():
                    return
                self._commit([], flush_buffer=True)
            self._after_flush()

    def _after_flush(self) -> None:
        if self.config.merge_mode == "background":
            if self._merger is not None:
                self._merger.wake()
        else:
            while self._merge_step(background=False):
                pass

    def optimize(self) -> None:
        """Merge every segment and the buffer into one segment (Seismic when large), dropping deleted rows.
        A background merge in flight finishes first; none starts while this runs."""
        self._check_writable()
        with self.merges_paused(), self._write_lock:
            segs = list(self._segments)
            if len(segs) == 1 and not self._buffer and not segs[0].deleted.any() and not self._dirty:
                return  # already one segment without deletions
            self._commit(segs, flush_buffer=True)

    @contextlib.contextmanager
    def merges_paused(self):
        """A context in which no background merge runs (one in flight finishes and commits first)."""
        merger = self._merger
        if merger is not None:
            merger.pause()
        try:
            yield self
        finally:
            if merger is not None:
                merger.resume()

    def wait_for_merges(self, timeout: float | None = None) -> bool:
        """Block until the background merger is idle (no merge running or due); False if ``timeout`` passed."""
        return self._merger.idle(timeout) if self._merger is not None else True

    def _merge_step(self, background: bool = True) -> bool:
        """One merge of the segments `pick_merge` names: planned under the write lock (the sources and their
        deletion masks now, a reserved name), built without it when ``background``, committed under it
        (deletions that arrived meanwhile carried onto the merged rows). False when there is nothing to do."""
        with self._write_lock:
            if self._wal is None:
                return False
            segs = list(self._segments)
            pos = pick_merge([s.n - s.n_deleted for s in segs], [s.n for s in segs], self.config)
            if not pos:
                return False
            sources = [segs[p] for p in pos]
            live0 = [np.flatnonzero(~s.deleted) for s in sources]
            name = self._reserve()
            if not background:
                try:
                    self._commit(sources, flush_buffer=False, live0=live0, entry=self._build(name, sources, live0))
                finally:
                    self._reserved.discard(name)
                return True
        committed = False
        try:
            entry = self._build(name, sources, live0)
            if merge_hook is not None:
                merge_hook(self)
            with self._write_lock:
                if self._wal is not None and all(any(s is t for t in self._segments) for s in sources):
                    self._commit(sources, flush_buffer=False, live0=live0, entry=entry)
                    committed = True
        finally:
            self._reserved.discard(name)
            if not committed:  # closed or superseded meanwhile: the files are garbage
                shutil.rmtree(self.path / SEGMENTS / name, ignore_errors=True)
                (self.path / SEGMENTS / f"{name}.parquet").unlink(missing_ok=True)
        return committed

    def _reserve(self) -> str:
        name = f"seg-{self._next_segment:06d}"
        self._next_segment += 1
        self._reserved.add(name)
        return name

    def _build(self, name: str | None, sources: list, live0: list, buffer: Buffer | None = None):
        """Write the live rows ``live0`` of ``sources`` (then the buffer) as segment ``name``; its manifest
        entry, or None when there is no row. Reads only immutable state: runs without the write lock."""
        parts, tables = [], []
        for seg, live in zip(sources, live0):
            if live.size:
                parts.append(seg.rows(live))
                if self.schema:
                    tables.append(seg.table.take(live))
        if buffer is not None and buffer.n:
            parts.append(buffer.batch(self.vocab))
            if self.schema:
                tables.append(buffer.table)
        if not parts:
            return None
        docs = SparseBatch.concat(parts) if len(parts) > 1 else parts[0]
        docs.dim, docs.vocab = self.dim, None  # the collection keeps the vocabulary once
        table = None
        if self.schema:
            import pyarrow as pa

            table = pa.concat_tables([F.conform(t, self.schema) for t in tables])
        if name is None:  # a commit under the write lock: the name is taken now, the files are live at once
            name = f"seg-{self._next_segment:06d}"
            self._next_segment += 1
        return write_segment(self.path, name, docs, table, self.config)

    def _commit(self, sources: list, flush_buffer: bool, live0: list | None = None, entry: dict | None = None):
        """Commit generation + 1 (under the write lock): ``sources`` are replaced by one new segment holding
        their live rows (``entry``, already written from the rows ``live0``; built here when None) followed,
        with ``flush_buffer``, by the buffer; the other segments keep their rows with pending deletions
        written out. Rows of the new segment deleted since ``live0`` was taken are marked deleted in it.
        ``flush_buffer`` starts a new log (the buffer is in the segment); without it the log is kept."""
        gen = self.generation + 1
        root, seg_dir = self.path, self.path / SEGMENTS
        if live0 is None:
            live0 = [np.flatnonzero(~s.deleted) for s in sources]
        if entry is None:
            buf = Buffer(self._buffer, self.dim, self.schema) if flush_buffer and self._buffer else None
            entry = self._build(None, sources, live0, buf)
        keep = [s for s in self._segments if not any(s is t for t in sources)]
        entries = []
        for seg in keep:
            e = {"name": seg.name, "kind": seg.kind, "n_docs": seg.n, "deletions": seg.del_file,
                 "n_deleted": seg.n_deleted}
            if seg in self._dirty:
                e["deletions"] = write_deletions(root, seg.name, gen, seg.deleted)
            entries.append(e)
        if entry is not None and sources:
            carried = np.concatenate([s.deleted[r] for s, r in zip(sources, live0)])
            if carried.any():  # deleted (or replaced) while the merge ran: deleted in the merged segment too
                mask = np.zeros(entry["n_docs"], bool)
                mask[: carried.size] = carried
                entry = {**entry, "deletions": write_deletions(root, entry["name"], gen, mask),
                         "n_deleted": int(mask.sum())}
        manifest = {**self.manifest, "generation": gen, "segments": entries + ([entry] if entry else []),
                    "wal": f"wal-{gen:06d}.log" if flush_buffer else self.manifest["wal"],
                    "next_segment": self._next_segment}
        fsync_dir(seg_dir)
        new_seg = Segment(root, entry, bool(self.schema), verify=False) if entry else None
        self._wal.sync()
        commit_manifest(root, manifest)  # the commit point
        # the new in-memory state, swapped in at once (searches hold the previous Generation)
        with self._state_lock:
            for seg, e in zip(keep, entries):
                seg.del_file = e["deletions"]
            self._segments = keep + ([new_seg] if new_seg else [])
            if new_seg is not None:
                self._index_rows(new_seg)
            if flush_buffer:
                self._buffer = {}
                self._buffer_t0 = None
            self._dirty = set()
            self.manifest, self.generation = manifest, gen
            self._snap = None
        if flush_buffer:
            old = self._wal
            self._wal = WriteAheadLog(root / manifest["wal"], self.config.durability)
            old.close()
        self._collect_garbage()
        fsync_dir(root)
        fsync_dir(seg_dir)
