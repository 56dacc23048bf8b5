"""The write-ahead log: one file per manifest generation, a sequence of checksummed records.

Record: ``b"AWL1"`` + payload length (uint32 LE) + crc32 of the payload (uint32 LE) + payload. Payload:
JSON header length (uint32 LE) + UTF-8 JSON header (``op``, ``ids``, ``metadata``, ``n``, ``nnz``) + for an
upsert the CSR arrays ``indptr`` int64 (n+1), ``indices`` int32 (nnz), ``values`` float32 (nnz), raw.

`read_log` parses records until the first one that is incomplete or fails its checksum: everything from
there on is the *tail*, reported (bytes and a warning) and never applied. The writer then moves the bad tail
to ``<log>.corrupt-<n>`` and truncates the log, so new records never follow garbage.

Durability (`WriteAheadLog.commit`): ``fsync`` fsyncs in every call; ``batch`` is group commit — a caller
waits for an fsync that covers its record, and one fsync covers every record written before it started, so
concurrent writers share it; ``none`` leaves the data to the OS (fsync at rotation / close).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aftershock.index.store import fsync_dir

MAGIC = b"AWL1"
HEAD = struct.Struct("<4sII")
U32 = struct.Struct("<I")
MAX_RECORD = 1 << 31


@dataclass
class Record:
    op: str  # "upsert" | "delete"
    ids: list
    metadata: list | None = None
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    values: np.ndarray | None = None


def encode(rec: Record) -> bytes:
    header = {"op": rec.op, "ids": [str(i) for i in rec.ids], "metadata": rec.metadata}
    parts = []
    if rec.op == "upsert":
        indptr = np.ascontiguousarray(rec.indptr, np.int64)
        header["n"], header["nnz"] = int(indptr.shape[0] - 1), int(indptr[-1])
        parts = [indptr.tobytes(), np.ascontiguousarray(rec.indices, np.int32).tobytes(),
                 np.ascontiguousarray(rec.values, np.float32).tobytes()]
    hb = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    payload = b"".join([U32.pack(len(hb)), hb, *parts])
    return HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> Record:
    (hl,) = U32.unpack_from(payload, 0)
    header = json.loads(payload[4:4 + hl].decode())
    rec = Record(header["op"], header["ids"], header.get("metadata"))
    if rec.op == "upsert":
        n, nnz = header["n"], header["nnz"]
        off = 4 + hl
        rec.indptr = np.frombuffer(payload, np.int64, n + 1, off)
        off += 8 * (n + 1)
        rec.indices = np.frombuffer(payload, np.int32, nnz, off)
        rec.values = np.frombuffer(payload, np.float32, nnz, off + 4 * nnz)
    elif rec.op != "delete":
        raise ValueError(f"unknown op {rec.op!r}")
    return rec


@dataclass
class LogScan:
    records: list = field(default_factory=list)
    good_bytes: int = 0  # the valid prefix
    tail_bytes: int = 0  # bytes after it (truncated or corrupt), skipped
    reason: str = ""


def read_log(path) -> LogScan:
    """Every valid record of the log at ``path`` (missing = empty) and what follows the last valid one."""
    path = Path(path)
    scan = LogScan()
    if not path.exists():
        return scan
    data = path.read_bytes()
    off = 0
    while off < len(data):
        if len(data) - off < HEAD.size:
            scan.reason = "truncated record header"
            break
        magic, length, crc = HEAD.unpack_from(data, off)
        if magic != MAGIC:
            scan.reason = f"bad record marker at byte {off}"
            break
        if off + HEAD.size + length > len(data):
            scan.reason = f"record at byte {off} is truncated ({len(data) - off - HEAD.size} of {length} bytes)"
            break
        payload = data[off + HEAD.size: off + HEAD.size + length]
        if zlib.crc32(payload) != crc:
            scan.reason = f"record at byte {off} fails its crc32 checksum"
            break
        try:
            scan.records.append(_decode(payload))
        except (ValueError, KeyError, UnicodeDecodeError, struct.error) as e:
            scan.reason = f"record at byte {off} does not decode ({e})"
            break
        off += HEAD.size + length
    scan.good_bytes = off
    scan.tail_bytes = len(data) - off
    return scan


def cut_tail(path: Path, good_bytes: int) -> Path | None:
    """Move the bytes after ``good_bytes`` to ``<path>.corrupt-<n>`` and truncate the log there."""
    size = path.stat().st_size
    if size <= good_bytes:
        return None
    n = 0
    while path.with_name(f"{path.name}.corrupt-{n}").exists():
        n += 1
    side = path.with_name(f"{path.name}.corrupt-{n}")
    with open(path, "rb") as f:
        f.seek(good_bytes)
        side.write_bytes(f.read())
    with open(path, "r+b") as f:
        f.truncate(good_bytes)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)
    return side


class WriteAheadLog:
    """The open log a writer appends to. ``append`` returns a sequence number; ``commit(seq)`` makes every
    record up to it durable according to ``durability``."""

    def __init__(self, path, durability: str = "fsync"):
        self.path = Path(path)
        self.durability = durability
        new = not self.path.exists()
        self._f = open(self.path, "ab")
        if new:
            os.fsync(self._f.fileno())
            fsync_dir(self.path.parent)
        self._written = 0
        self._synced = 0
        self._sync_lock = threading.Lock()
        self.records = 0

    def append(self, rec: Record) -> int:
        data = encode(rec)
        if len(data) > MAX_RECORD:
            raise ValueError("a write of more than 2 GiB; split the batch")
        self._f.write(data)
        self._f.flush()  # in the OS: survives a process crash
        self._written += 1
        self.records += 1
        return self._written

    def commit(self, seq: int) -> None:
        if self.durability == "none" or self._synced >= seq:
            return
        with self._sync_lock:  # group commit: whoever gets here first fsyncs for everyone written so far
            if self._synced >= seq or self._f.closed:
                return
            target = self._written
            os.fsync(self._f.fileno())
            self._synced = max(self._synced, target)

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._synced = self._written

    def close(self) -> None:
        with self._sync_lock:
            if not self._f.closed:
                self.sync()
                self._f.close()
