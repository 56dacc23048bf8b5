"""Sharded collections (on Ray): a cluster directory (a manifest + one collection per shard), documents routed
by a stable hash of their external id, searches scattered to every shard and merged, shards as Ray actors
restarted from their directories, distributed builds (Ray tasks, Ray Data encoding) and a Ray Serve ingress.

``ShardedCollection.open_local(path)`` opens every shard in this process; ``open_ray(path, address=None,
replicas=1)`` runs each shard as Ray actors. Both have the `Collection` interface. Ray is imported only by the
Ray parts (the ``cluster`` extra)."""

from aftershock.cluster.layout import create_cluster, read_manifest, route, shard_of
from aftershock.cluster.sharded import ClusterResult, ShardedCollection, ShardUnavailableError


def open_ray(*args, **kw):
    """See `aftershock.cluster.ray_shards.open_ray`."""
    from aftershock.cluster.ray_shards import open_ray as _open

    return _open(*args, **kw)


__all__ = ["ClusterResult", "ShardedCollection", "ShardUnavailableError", "create_cluster", "open_ray",
           "read_manifest", "route", "shard_of"]
