"""Shards as Ray actors: one writer actor per shard (+ ``replicas - 1`` read-only followers), restarted by Ray
when their process dies (``max_restarts=-1``): the new process opens the shard's collection again (segments
memory-mapped, the write-ahead log replayed), so every acknowledged write is back.

Actors are named ``<cluster id>/shard-0000/r0`` in the namespace ``aftershock``, so any process of the Ray
cluster (the Serve ingress replicas) finds them with `connect`. Followers open the shard ``read_only`` and
reopen it when a search carries a newer write version than the one they opened (read-your-writes through the
client that wrote); writes always go to the writer (r0).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path

from aftershock.cluster import layout as L
from aftershock.cluster.sharded import DEADLINE_S, ShardDown, ShardedCollection, shard_meta, shard_search

NAMESPACE = "aftershock"


def _ray():
    try:
        import ray
    except ImportError as e:
        from aftershock.errors import BackendUnavailableError

        raise BackendUnavailableError(f"clusters run on Ray, which cannot be imported ({e}); pip install "
                                      "'aftershock[cluster]'") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379"), or start a local
    one (``address`` None); a no-op when this process is already connected."""
    ray = _ray()
    if not ray.is_initialized():
        kw = {"namespace": NAMESPACE, "ignore_reinit_error": True, "log_to_driver": False}
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kw)
    return ray


def cluster_id(path) -> str:
    return "c" + hashlib.blake2b(str(Path(path).resolve()).encode(), digest_size=6).hexdigest()


class ShardActor:
    """One shard's collection in its own process (wrapped by ``ray.remote`` in `start_shards`)."""

    def __init__(self, path: str, read_only: bool = False, threads: int | None = None):
        from aftershock.collection import Collection

        self.path, self.read_only, self.threads = path, read_only, threads
        if threads:
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.coll = Collection.open(path, read_only=read_only)
        self.opened = self.version()

    def pid(self) -> int:
        return os.getpid()

    def version(self) -> tuple[int, int]:
        """(generation, log bytes): grows with every acknowledged write of the writer."""
        try:
            size = os.path.getsize(os.path.join(self.path, self.coll.manifest["wal"]))
        except OSError:
            size = 0
        return (int(self.coll.generation), int(size))

    def _fresh(self, min_version):
        if self.read_only and min_version is not None and tuple(min_version) > tuple(self.opened):
            from aftershock.collection import Collection

            before = self.version()
            self.coll = Collection.open(self.path, read_only=True, verify=False)
            self.opened = max(before, tuple(min_version))

    def search(self, queries, k, params, filt, overrides=None, min_version=None):
        self._fresh(min_version)
        return shard_search(self.coll, queries, k, params, filt, overrides, threads=self.threads)

    def meta(self) -> dict:
        return shard_meta(self.coll)

    def call(self, method: str, *args, **kw):
        value = getattr(self.coll, method)(*args, **kw)
        if method in ("upsert", "delete", "flush", "optimize"):
            return value, self.version()
        return value


class RayShard:
    """Client of one shard's actors: writes to the writer, searches round-robin over every replica (a replica
    that is down is skipped for the next one before the shard counts as down)."""

    def __init__(self, handles: list):
        self.handles = handles
        self.min_version = None
        self._next = itertools.cycle(range(len(handles)))

    def submit(self, method: str, *args, **kw):
        if method == "search":
            r = next(self._next)
            return ("search", r, args, self.handles[r].search.remote(*args, min_version=self.min_version))
        if method == "meta":
            return ("meta", 0, args, self.handles[0].meta.remote())
        return (method, 0, args, self.handles[0].call.remote(method, *args, **kw))

    @staticmethod
    def collect_many(clients: list, pendings: list, timeout: float):
        """Every answer at once (one ``ray.get`` for all shards), or None when any call failed or was late:
        the caller then collects shard by shard, with retries and the deadline."""
        ray = _ray()
        try:
            values = ray.get([p[3] for p in pendings], timeout=max(timeout, 0.001))
        except Exception:  # noqa: BLE001 - any failure: the per-shard path sorts it out
            return None
        return [c._done(p[0], v) for c, p, v in zip(clients, pendings, values)]

    def _done(self, method: str, value):
        if method in ("upsert", "delete", "flush", "optimize"):
            value, version = value
            if self.min_version is None or tuple(version) > tuple(self.min_version):
                self.min_version = tuple(version)
        return value

    def collect(self, pending, timeout: float):
        ray = _ray()
        from ray import exceptions as E

        method, r, args, ref = pending
        tried = {r}
        end = time.monotonic() + max(timeout, 0)
        while True:
            try:
                value = ray.get(ref, timeout=max(end - time.monotonic(), 0.001))
                break
            except E.GetTimeoutError:
                raise TimeoutError from None
            except E.RayTaskError as e:  # the shard raised: the caller gets the shard's own exception
                raise e.cause if isinstance(getattr(e, "cause", None), BaseException) else e from None
            except (E.RayActorError, E.ObjectLostError):
                others = [j for j in range(len(self.handles)) if j not in tried] if method == "search" else []
                if not others:
                    raise ShardDown from None
                r = others[0]
                tried.add(r)
                ref = self.handles[r].search.remote(*args, min_version=self.min_version)
        return self._done(method, value)

    def close(self):
        pass


def actor_name(cid: str, shard: int, replica: int) -> str:
    return f"{cid}/{L.shard_name(shard)}/r{replica}"


def start_shards(path, replicas: int = 1, threads: int | None = None, detached: bool = False) -> list[list]:
    """Start (or find, when already running) the actors of every shard of cluster ``path``: handles per shard,
    the writer first. Each is restarted by Ray when its process dies."""
    ray = _ray()
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        from aftershock.errors import ConfigError

        raise ConfigError(f"replicas={replicas!r} must be an integer >= 1", field="replicas", value=replicas)
    paths = L.shard_paths(path)
    cid = cluster_id(path)
    remote = ray.remote(ShardActor)
    out = []
    for s, p in enumerate(paths):
        handles = []
        for r in range(replicas):
            opts = dict(name=actor_name(cid, s, r), namespace=NAMESPACE, get_if_exists=True, max_restarts=-1,
                        max_task_retries=0, num_cpus=0, max_concurrency=8, scheduling_strategy="SPREAD")
            if detached:
                opts["lifetime"] = "detached"
            handles.append(remote.options(**opts).remote(str(p.resolve()), r > 0, threads))
        out.append(handles)
    ray.get([h.pid.remote() for hs in out for h in hs])  # every shard open before the first call
    return out


def connect(path, replicas: int = 1) -> list[list]:
    """Handles of the running actors of cluster ``path`` (started by `start_shards` elsewhere)."""
    ray = _ray()
    cid = cluster_id(path)
    return [[ray.get_actor(actor_name(cid, s, r), namespace=NAMESPACE) for r in range(replicas)]
            for s in range(len(L.shard_paths(path)))]


def open_ray(path, address: str | None = None, replicas: int = 1, threads: int | None = None,
             deadline: float = DEADLINE_S, start: bool = True, detached: bool = False) -> ShardedCollection:
    """A `ShardedCollection` whose shards are Ray actors (started here, or found with ``start=False``)."""
    init_ray(address)
    handles = start_shards(path, replicas, threads, detached) if start else connect(path, replicas)
    return ShardedCollection(path, [RayShard(h) for h in handles], deadline)


def stop_shards(path, replicas: int = 1) -> None:
    """Kill the actors of cluster ``path`` (without restart); the shards' directories are untouched."""
    ray = _ray()
    for hs in connect(path, replicas):
        for h in hs:
            ray.kill(h, no_restart=True)
