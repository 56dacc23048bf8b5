"""`ShardedCollection`: S collections behind the `Collection` interface. Writes are routed by the stable hash
of each external id (`layout.shard_of`), so an upsert or a delete touches one shard per id; a search is
scattered to every shard and the per-shard top-k are merged (score, then external id: deterministic ties).

The shards are reached through *clients* (`LocalShard`: collections in this process; `RayShard` in
`aftershock.cluster.ray_shards`: Ray actors) with two calls: ``submit(method, *args, **kw)`` returns a pending
call, ``collect(pending, timeout)`` its value, raising `ShardDown` when the shard is unreachable (its process
died, is restarting) and `TimeoutError` when it has not answered in time.

A shard that is down never yields a silently short list: a search either waits for it (retrying until its
deadline, then `ShardUnavailableError`) or, with ``partial=True``, answers from the other shards and marks
the result (``result.partial``, ``result.missing_shards``, ``last_stats``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from aftershock.cluster import layout as L
from aftershock.collection import Collection, CollectionConfig, CollectionResult, check_filter
from aftershock.collection.search import check_queries, merge
from aftershock.errors import ConfigError, FormatError
from aftershock.index import SparseBatch, Vocabulary

DEADLINE_S = 30.0  # default: how long a search or write waits for a shard that is down
RETRY_S = 0.05


class ShardDown(Exception):
    """A shard's process is unreachable (died or restarting); the call may be retried."""


class ShardUnavailableError(RuntimeError):
    """A shard stayed unreachable past the request's deadline; ``shards`` names them. Not a refused request
    (no `AftershockError`): the service answers 503 with Retry-After, and the same call may succeed later."""

    def __init__(self, shards, deadline):
        self.shards = sorted(shards)
        self.field, self.value = "shards", self.shards
        super().__init__(f"shard(s) {self.shards} did not answer within the deadline of {deadline:g} s (down or "
                         "restarting); retry later, raise the deadline, or search with partial=True to get the other "
                         "shards' results marked partial")


class ClusterResult(CollectionResult):
    """A `CollectionResult` (``scores, ids = ...``) that also says whether shards were left out:
    ``partial`` (bool) and ``missing_shards`` (tuple of shard numbers)."""

    partial = False
    missing_shards = ()


def shard_search(coll: Collection, queries, k, params, filt, overrides=None, threads=None):
    """What a shard does for a search: (scores, external ids, seconds spent searching, CPU seconds of the
    shard's process meanwhile: exact for a shard actor, other threads included in-process). ``threads`` (the
    shard's share of cores) applies unless the request names its own."""
    t0, c0 = time.perf_counter(), time.process_time()
    overrides = dict(overrides or {})
    if threads is not None and overrides.get("threads") is None and getattr(params, "threads", None) is None:
        overrides["threads"] = threads
    s, i = coll.search(queries, k, params, filter=filt, **overrides)
    return s, i, time.perf_counter() - t0, time.process_time() - c0


def shard_meta(coll: Collection) -> dict:
    return {"dim": coll.dim, "schema": dict(coll.schema), "config": coll.config.to_dict(),
            "vocab": coll.vocab.tokens if coll.vocab is not None else None}


class LocalShard:
    """A shard opened in this process (tests, one-machine use, benchmarks' baseline)."""

    def __init__(self, path, read_only: bool = False, threads: int | None = None, pool: ThreadPoolExecutor = None):
        self.coll = Collection.open(path, read_only=read_only)
        self.threads = threads
        self.pool = pool or ThreadPoolExecutor(4)

    def submit(self, method: str, *args, **kw):
        if method == "search":
            return self.pool.submit(shard_search, self.coll, *args, threads=self.threads, **kw)
        if method == "meta":
            return self.pool.submit(shard_meta, self.coll)
        return self.pool.submit(getattr(self.coll, method), *args, **kw)

    def collect(self, pending, timeout: float):
        try:
            return pending.result(timeout=max(timeout, 0))
        except FutureTimeout:
            raise TimeoutError from None

    def close(self):
        self.coll.close()


class ShardedCollection:
    """S shard collections behind the `Collection` interface (see the module docstring).

    ``search(queries, k=10, params=None, filter=None, partial=False, deadline=None, **overrides)``; ``upsert``,
    ``delete``, ``get``, ``count``, ``info``, ``flush``, ``optimize``, ``close``. ``deadline`` (seconds, default
    ``self.deadline``) bounds how long a call waits for shards that are down."""

    def __init__(self, path, clients: list, deadline: float = DEADLINE_S):
        self.path = path
        self.manifest = L.read_manifest(path)
        if len(clients) != self.manifest["shards"]:
            raise ConfigError(f"{len(clients)} shard clients for a cluster of {self.manifest['shards']} shards")
        self.clients = clients
        self.n_shards = len(clients)
        self.deadline = float(deadline)
        self.read_only = False
        self.generation = 0  # counts acknowledged write calls (the REST answers' operation_id)
        self._gen_lock = threading.Lock()
        self.last_stats: dict = {}
        meta = self._all("meta")[0]
        self.dim = int(meta["dim"])
        self.schema = meta["schema"]
        self.config = CollectionConfig.from_dict(meta["config"])
        self.vocab = Vocabulary(meta["vocab"]) if meta["vocab"] is not None else None

    @classmethod
    def open_local(cls, path, read_only: bool = False, threads: int | None = None, deadline: float = DEADLINE_S):
        """Every shard opened in this process (one thread pool)."""
        pool = ThreadPoolExecutor(max(4, 2 * len(L.shard_paths(path))))
        return cls(path, [LocalShard(p, read_only, threads, pool) for p in L.shard_paths(path)], deadline)

    # ------------------------------------------------------------------ scatter / gather
    def _gather(self, calls: dict, deadline: float, partial: bool) -> tuple[dict, list]:
        """Run ``calls`` {shard: (method, args, kw)}; returns ({shard: value}, missing shards). ``partial``: a
        shard that is down or late is left out (missing); otherwise one that is down is retried until
        ``deadline`` and then named in a `ShardUnavailableError`."""
        end = time.monotonic() + deadline
        pending = {s: self.clients[s].submit(m, *a, **kw) for s, (m, a, kw) in calls.items()}
        out, missing = {}, []
        many = getattr(type(self.clients[0]), "collect_many", None) if self.clients else None
        if many is not None and all(type(self.clients[s]) is type(self.clients[0]) for s in pending):
            got = many([self.clients[s] for s in pending], list(pending.values()), deadline)  # one wait for all
            if got is not None:
                return dict(zip(pending, got)), []
        for s in sorted(pending):
            while True:
                try:
                    out[s] = self.clients[s].collect(pending[s], end - time.monotonic())
                    break
                except ShardDown:
                    if partial or time.monotonic() >= end:
                        missing.append(s)
                        break
                    time.sleep(RETRY_S)
                    m, a, kw = calls[s]
                    pending[s] = self.clients[s].submit(m, *a, **kw)
                except TimeoutError:
                    missing.append(s)
                    break
        if missing and not partial:
            raise ShardUnavailableError(missing, deadline)
        return out, missing

    def _all(self, method: str, *args, deadline: float | None = None, **kw) -> list:
        out, _ = self._gather({s: (method, args, kw) for s in range(self.n_shards)},
                              self.deadline if deadline is None else deadline, partial=False)
        return [out[s] for s in range(self.n_shards)]

    # ------------------------------------------------------------------ reads
    def search(self, queries, k: int = 10, params=None, filter: dict | None = None,
               partial: bool = False, deadline: float | None = None, **overrides) -> ClusterResult:
        """Top-k over every shard, merged by score then external id; ``params`` (a `SearchParams`) and
        ``overrides`` go to every shard's `Collection.search`. A shard that is down: with
        ``partial=False`` the search waits for it up to ``deadline`` seconds, then raises
        `ShardUnavailableError`; with ``partial=True`` the other shards' results come back marked
        (``result.partial``, ``result.missing_shards``)."""
        if params is not None and not hasattr(params, "with_"):
            raise ConfigError(f"params must be a SearchParams, got {type(params).__name__}")
        if params is not None and overrides:
            params, overrides = params.with_(**overrides), {}
        deadline = self._deadline(deadline)
        check_filter(filter, self.schema)
        queries = check_queries(queries, k, self.dim)
        t0 = time.perf_counter()
        out, missing = self._gather({s: ("search", (queries, int(k), params, filter, overrides), {})
                                     for s in range(self.n_shards)}, deadline, partial=bool(partial))
        t1 = time.perf_counter()
        res = merge([(v[0], v[1]) for v in out.values()], len(queries), int(k))
        t2 = time.perf_counter()
        result = ClusterResult(*res)
        result.partial, result.missing_shards = bool(missing), tuple(missing)
        shard_s = [float(v[2]) for v in out.values()]
        cpu_s = [float(v[3]) for v in out.values()]
        self.last_stats = {"shards": self.n_shards, "missing_shards": list(missing), "partial": bool(missing),
                           "scatter_s": t1 - t0, "merge_s": t2 - t1, "total_s": t2 - t0,
                           "shard_search_s": max(shard_s, default=0.0), "shard_cpu_s": cpu_s}
        return result

    def _deadline(self, deadline) -> float:
        if deadline is None:
            return self.deadline
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline <= 3600:
            raise ConfigError(f"deadline={deadline!r} must be a number of seconds in (0, 3600]", field="deadline",
                              value=deadline)
        return float(deadline)

    def ping(self, deadline: float = 2.0) -> int:
        """Live documents, every shard asked with a short ``deadline``: `ShardUnavailableError` names the down."""
        out, _ = self._gather({s: ("count", (), {}) for s in range(self.n_shards)}, deadline, partial=False)
        return int(sum(out.values()))

    def count(self) -> int:
        return int(sum(self._all("count")))

    def get(self, ids) -> tuple[SparseBatch, list[dict]]:
        """Stored vectors and metadata of the ``ids`` that exist, in the order asked (as `Collection.get`)."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        parts = L.split(ids, self.n_shards)
        out, _ = self._gather({s: ("get", ([ids[r] for r in rows.tolist()],), {}) for s, rows in enumerate(parts)
                               if rows.size}, self.deadline, partial=False)
        found = {}
        for batch, md in out.values():
            for j, i in enumerate(batch.ids):
                found[str(i)] = (batch.row(j), md[j])
        keep = [i for i in ids if i in found]
        return (SparseBatch.from_rows([found[i][0] for i in keep], ids=keep, dim=self.dim, vocab=self.vocab),
                [found[i][1] for i in keep])

    def info(self) -> dict:
        infos = self._all("info")
        return {"path": str(self.path), "shards": self.n_shards, "hash": self.manifest["hash"], "dim": self.dim,
                "count": sum(i["count"] for i in infos), "generation": self.generation,
                "segments": [dict(s, shard=n) for n, i in enumerate(infos) for s in i["segments"]],
                "buffer_docs": sum(i["buffer_docs"] for i in infos), "durability": infos[0]["durability"],
                "schema": dict(self.schema), "config": self.config.to_dict(), "read_only": self.read_only,
                "disk_bytes": sum(i["disk_bytes"] for i in infos),
                "shard_info": [{"shard": n, "count": i["count"], "generation": i["generation"],
                                "replay": i["replay"]} for n, i in enumerate(infos)]}

    # ------------------------------------------------------------------ writes
    def upsert(self, vectors, ids=None, metadata=None, deadline: float | None = None) -> int:
        """Insert or replace documents; each goes to the shard of its id. Acknowledged (durable on every shard
        it touched) when it returns; a shard that is down is retried until ``deadline`` (an upsert repeats
        harmlessly), then `ShardUnavailableError` (the other shards' part is written)."""
        if not isinstance(vectors, SparseBatch):
            vectors = SparseBatch.from_scipy(vectors, ids=ids)
        ids = [str(i) for i in (vectors.ids if ids is None else ids)]
        if len(ids) != len(vectors):
            raise FormatError(f"{len(ids)} ids for {len(vectors)} vectors; pass one id per vector")
        if metadata is not None and len(metadata) != len(ids):
            raise FormatError(f"{len(metadata)} metadata entries for {len(ids)} ids; pass one per document")
        calls = {s: ("upsert", (batch, sids, md), {}) for s, batch, sids, md in
                 L.split_batch(vectors, ids, self.n_shards, metadata)}
        out, _ = self._gather(calls, self._deadline(deadline), partial=False)
        self._bump()
        return int(sum(out.values()))

    def delete(self, ids, deadline: float | None = None) -> int:
        """Delete by external id (each on its shard); returns how many existed."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        calls = {s: ("delete", ([ids[r] for r in rows.tolist()],), {})
                 for s, rows in enumerate(L.split(ids, self.n_shards)) if rows.size}
        out, _ = self._gather(calls, self._deadline(deadline), partial=False)
        self._bump()
        return int(sum(out.values()))

    def _bump(self):
        with self._gen_lock:
            self.generation += 1

    def flush(self) -> None:
        self._all("flush")

    def optimize(self) -> None:
        self._all("optimize")

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"ShardedCollection({str(self.path)!r}, shards={self.n_shards})"


__all__ = ["ShardedCollection", "ClusterResult", "ShardDown", "ShardUnavailableError", "LocalShard"]
