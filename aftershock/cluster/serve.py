"""Serving a cluster with Ray Serve: the shard actors (`ray_shards.start_shards`, ``replicas`` per shard) and one
Serve deployment, the ingress, whose replicas each open the cluster over those actors and answer the REST API
of `aftershock.cluster.ingress` (the same routes as one machine)."""

from __future__ import annotations

import time

from aftershock.cluster.ray_shards import init_ray, start_shards, stop_shards

APP = "aftershock"


def _ingress_class():
    from ray import serve

    @serve.ingress()
    class ClusterIngress:
        """One replica of the ingress: the cluster over the running shard actors, and its FastAPI app."""

        def __init__(self, path: str, replicas: int, model: str | None, name: str, deadline: float):
            from aftershock.cluster.ray_shards import open_ray

            self.cluster = open_ray(path, replicas=replicas, start=False, deadline=deadline)
            self.encoder = None
            if model and model != "none":
                from aftershock.service.server import load_query_encoder

                try:
                    self.encoder = load_query_encoder(model)
                except Exception:  # noqa: BLE001 - the shipped model is optional: text queries then answer 422
                    if model != "default":
                        raise
                if self.encoder is not None and self.encoder.dim != self.cluster.dim:
                    if model != "default":
                        raise ValueError(f"--model {model} has {self.encoder.dim} terms, the cluster's dim is "
                                         f"{self.cluster.dim}; pass the encoder of the cluster's vectors")
                    self.encoder = None
            self.name = name

        def __serve_build_asgi_app__(self):
            from aftershock.cluster.ingress import create_cluster_app

            return create_cluster_app(self.cluster, self.encoder, self.name)

    return ClusterIngress


def deploy(path, address: str | None = None, replicas: int = 1, ingress_replicas: int = 1, host: str = "127.0.0.1",
           port: int = 8000, model: str | None = None, name: str = "default", threads: int | None = None,
           deadline: float = 30.0) -> str:
    """Start the shard actors and the Serve ingress on the Ray cluster at ``address`` (local when None);
    returns the URL. `undeploy` stops both."""
    from ray import serve

    init_ray(address)
    start_shards(path, replicas, threads, detached=True)  # found by name from the ingress replicas' jobs
    serve.start(http_options={"host": host, "port": port})
    ingress = serve.deployment(_ingress_class(), name="cluster-ingress", num_replicas=ingress_replicas,
                               ray_actor_options={"num_cpus": 0})
    serve.run(ingress.bind(str(path), replicas, model, name, deadline), name=APP, route_prefix="/")
    return f"http://{host}:{port}"


def undeploy(path, replicas: int = 1) -> None:
    from ray import serve

    serve.delete(APP)
    stop_shards(path, replicas)


def serve_forever(path, **kw) -> None:
    """`deploy`, then block until interrupted (Ctrl-C stops the ingress and the shard actors)."""
    url = deploy(path, **kw)
    print(f"serving cluster {path} at {url} (Ray Serve; Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        undeploy(path, kw.get("replicas", 1))
