"""Distributed builds: rows routed to their shard (`layout.split_batch`), each shard written and optimized as
one Ray task (`build_cluster`); text encoded with Ray Data ``map_batches`` over an actor pool, GPU actors when
the Ray cluster has GPUs, CPU actors otherwise (`encode_ray`)."""

from __future__ import annotations

import time

import numpy as np

from aftershock.cluster import layout as L
from aftershock.collection import Collection, CollectionConfig
from aftershock.index import SparseBatch, iter_corpus

UPSERT_ROWS = 10_000


def build_shard(path: str, docs: SparseBatch, ids: list, metadata, threads: int | None = None) -> dict:
    """Write ``docs`` into the (empty) shard collection at ``path`` and optimize it into one segment (Seismic
    at or above the config's exact_threshold rows, exact below)."""
    if threads:
        import numba

        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    t0 = time.perf_counter()
    with Collection.open(path) as coll:
        step = max(1, min(UPSERT_ROWS, coll.config.buffer_docs))
        for a in range(0, len(ids), step):
            rows = slice(a, min(a + step, len(ids)))
            coll.upsert(docs[rows], ids=ids[rows], metadata=metadata[rows] if metadata is not None else None)
        coll.optimize()
        info = coll.info()
    return {"shard": path, "docs": info["count"], "segments": [s["kind"] for s in info["segments"]],
            "seconds": time.perf_counter() - t0, "disk_bytes": info["disk_bytes"]}


def build_cluster(path, docs: SparseBatch, shards: int, config: CollectionConfig | None = None,
                  schema: dict | None = None, metadata: list | None = None, ids=None, ray_address: str | None = None,
                  use_ray: bool = True, threads_per_shard: int = 1) -> list[dict]:
    """A new cluster at ``path`` holding ``docs`` (ids: ``ids`` or ``docs.ids``) split over ``shards`` shards.
    With ``use_ray`` each shard is built by a Ray task (``threads_per_shard`` CPUs each) on the Ray cluster at
    ``ray_address`` (a local one when None); otherwise one after another in this process."""
    ids = [str(i) for i in (docs.ids if ids is None else ids)]
    L.create_cluster(path, shards, dim=docs.dim, vocab=docs.vocab, config=config, schema=schema)
    paths = [str(p.resolve()) for p in L.shard_paths(path)]
    parts = L.split_batch(docs, ids, shards, metadata)
    if not use_ray:
        return [build_shard(paths[s], b, i, md, threads_per_shard) for s, b, i, md in parts]
    from aftershock.cluster.ray_shards import init_ray

    ray = init_ray(ray_address)
    task = ray.remote(build_shard).options(num_cpus=threads_per_shard, max_retries=0)
    return ray.get([task.remote(paths[s], b, i, md, threads_per_shard) for s, b, i, md in parts])


class _Encoder:
    """A Ray Data actor: loads the document encoder once, encodes one batch of texts per call."""

    def __init__(self, model: str, device: str, batch_size: int):
        from aftershock.lsr import load_encoder

        self.encoder = load_encoder(model, device=device, batch_size=batch_size)

    def __call__(self, batch: dict) -> dict:
        out = self.encoder.encode_documents([str(t) for t in batch["text"]], ids=[str(i) for i in batch["id"]])
        rows = [out.row(j) for j in range(len(out))]
        return {"id": np.asarray(batch["id"]), "indices": [np.asarray(r[0], np.int32) for r in rows],
                "values": [np.asarray(r[1], np.float32) for r in rows]}


def encode_ray(corpus, model: str, ray_address: str | None = None, actors: int | None = None,
               batch_size: int = 32, rows_per_call: int = 256) -> SparseBatch:
    """Encode a JSONL/BEIR corpus with Ray Data: ``map_batches`` over a pool of ``actors`` encoder actors (one
    GPU each when the Ray cluster has GPUs, else one CPU each; default: as many as GPUs, else CPUs - 1)."""
    from aftershock.cluster.ray_shards import init_ray
    from aftershock.lsr import load_encoder

    ray = init_ray(ray_address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if actors is None:
        actors = gpus or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    docs = [{"id": d.id, "text": d.joined} for d in iter_corpus(corpus)]
    ds = ray.data.from_items(docs).map_batches(
        _Encoder, fn_constructor_kwargs={"model": str(model), "device": "cuda" if gpus else "cpu",
                                         "batch_size": batch_size},
        batch_size=rows_per_call, batch_format="numpy", concurrency=actors,
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
    rows, ids = [], []
    for b in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        ids += [str(i) for i in b["id"]]
        rows += list(zip(b["indices"], b["values"]))
    enc = load_encoder(str(model), device="cpu")  # the vocabulary (tokenizer files only; no weights used)
    return SparseBatch.from_rows(rows, ids=ids, dim=enc.dim, vocab=enc.vocab)
