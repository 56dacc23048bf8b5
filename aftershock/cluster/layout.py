"""The cluster directory: ``cluster.json`` (format, version, shard count, hash function) + one collection per
shard (``shard-0000/``, ...), and the routing of a document to its shard by a stable hash of its external id.

The hash is blake2b (8-byte digest) of the id's UTF-8 bytes read as a little-endian unsigned integer, modulo
the shard count: the same id goes to the same shard on every machine, Python version and process (Python's
own ``hash()`` is salted per process and must never route). The manifest records the function by name, so a
reader refuses a cluster written with another one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from aftershock.collection import Collection, CollectionConfig
from aftershock.collection.manifest import write_atomic
from aftershock.errors import ConfigError, IndexFormatError
from aftershock.index import SparseBatch, Vocabulary

FORMAT = "aftershock-cluster"
VERSION = 1
HASH = "blake2b8-le-mod"
MANIFEST = "cluster.json"


def shard_of(doc_id, n_shards: int) -> int:
    """The shard of one external id (see the module docstring)."""
    digest = hashlib.blake2b(str(doc_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def route(ids, n_shards: int) -> np.ndarray:
    """The shard of each id, as an int64 array."""
    return np.fromiter((shard_of(i, n_shards) for i in ids), dtype=np.int64, count=len(ids))


def split(ids, n_shards: int) -> list[np.ndarray]:
    """Row positions of ``ids`` per shard (each in the original order)."""
    where = route(ids, n_shards)
    return [np.flatnonzero(where == s) for s in range(n_shards)]


def shard_name(s: int) -> str:
    return f"shard-{s:04d}"


def check_shards(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 4096:
        raise ConfigError(f"shards={n!r} must be an integer in [1, 4096] (try the number of cores or nodes)",
                          field="shards", value=n)
    return int(n)


def read_manifest(path) -> dict:
    """The checked ``cluster.json`` of cluster directory ``path``."""
    f = Path(path) / MANIFEST
    if not f.exists():
        raise IndexFormatError(f"{path} is not an Aftershock cluster (no {MANIFEST}); create one with "
                               "`aftershock build --shards N` or aftershock.cluster.create_cluster")
    try:
        m = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{f} is not valid JSON ({e}); the cluster manifest is damaged") from None
    if m.get("format") != FORMAT or m.get("version", 99) > VERSION:
        raise IndexFormatError(f"{f} is not a cluster manifest of version <= {VERSION}; upgrade aftershock")
    if m.get("hash") != HASH:
        raise IndexFormatError(f"{f} routes with hash {m.get('hash')!r}, this aftershock with {HASH!r}; open it "
                               "with the aftershock version that wrote it")
    check_shards(m.get("shards"))
    return m


def shard_paths(path) -> list[Path]:
    m = read_manifest(path)
    return [Path(path) / d for d in m["shard_dirs"]]


def create_cluster(path, shards: int, dim: int | None = None, vocab: Vocabulary | None = None,
                   config: CollectionConfig | None = None, schema: dict | None = None) -> Path:
    """A new cluster directory at ``path``: ``shards`` empty collections (same dim, vocabulary, config and
    schema) and the manifest, written last (a directory without it is not a cluster)."""
    shards = check_shards(shards)
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path} exists and is not an empty directory; pick a new path", field="output",
                          value=str(path))
    path.mkdir(parents=True, exist_ok=True)
    dirs = [shard_name(s) for s in range(shards)]
    for d in dirs:
        Collection.create(path / d, dim=dim, vocab=vocab, config=config, schema=schema).close()
    dim = dim if dim is not None else len(vocab)
    write_atomic(path / MANIFEST, json.dumps({"format": FORMAT, "version": VERSION, "shards": shards, "hash": HASH,
                                              "dim": int(dim), "shard_dirs": dirs}, indent=1).encode())
    return path


def split_batch(docs: SparseBatch, ids: list[str], n_shards: int, metadata=None):
    """(shard, rows SparseBatch, ids, metadata or None) for each shard that receives rows."""
    out = []
    for s, rows in enumerate(split(ids, n_shards)):
        if rows.size:
            md = [metadata[r] for r in rows.tolist()] if metadata is not None else None
            out.append((s, docs[rows] if rows.size != len(ids) else docs, [ids[r] for r in rows.tolist()], md))
    return out
