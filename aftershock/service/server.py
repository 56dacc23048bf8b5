"""Start the service: load the index (mmap) and, when given, the query encoder and document texts, once.

``serve(...)`` runs uvicorn. With ``workers > 1`` uvicorn needs an import string, so the configuration
travels to each worker process in the environment variable ``AFTERSHOCK_SERVE_CONFIG`` and
`app_from_env` builds the app there (each worker maps the same index files; metrics are per worker).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from aftershock.errors import BackendUnavailableError, ConfigError, FormatError
from aftershock.index import read_meta
from aftershock.seismic import load_index
from aftershock.service.app import create_app
from aftershock.service.protocol import GuardedH11Protocol
from aftershock.index import read_documents
from aftershock.service.settings import ServiceSettings

ENV = "AFTERSHOCK_SERVE_CONFIG"
# seconds a Python thread may hold the GIL while another waits (CPython's default is 0.005): a thread that
# builds a large response then delays a small request's many GIL hand-offs by at most this much each
SWITCH_INTERVAL = 0.001


def load_query_encoder(model_dir):
    """The query side of ``model_dir`` (`aftershock.lsr.load_query_encoder`, CPU): ``"default"`` is the
    model shipped with Aftershock; imported only when a model is asked for."""
    if str(model_dir) != "default" and not Path(model_dir).is_dir():
        raise FormatError(f"--model {model_dir} is not a directory; pass a local model directory (no downloads), "
                          "'default' (the shipped model) or 'none'")
    try:
        from aftershock.lsr import load_query_encoder as load
    except ImportError as e:
        raise BackendUnavailableError(f"text queries need aftershock.lsr, which cannot be imported ({e}); install "
                                      "the encoder extras (pip install 'aftershock[lsr]') or serve with --model none")
    return load(str(model_dir), device="cpu")


def _default_encoder(index):
    """The shipped model when it fits the index (same vocabulary size) and its dependencies are
    installed; otherwise None, with the reason logged (text queries then answer 422 no_encoder)."""
    import logging

    log = logging.getLogger("aftershock.service")
    try:
        enc = load_query_encoder("default")
    except (BackendUnavailableError, FormatError, ImportError) as e:
        log.warning("serving without a query encoder (text queries disabled): the default model is unavailable: %s", e)
        return None
    if enc.dim != index.dim:
        log.warning("serving without a query encoder: the default model's vocabulary has %d terms but the index's "
                    "dim is %d; pass --model DIR with the index's encoder", enc.dim, index.dim)
        return None
    return enc


def query_encoder(model, target):
    """The query encoder of ``model`` (a directory, "default" when it fits ``target``'s dim, None/"none")."""
    if model is None or str(model).lower() == "none":
        return None
    return _default_encoder(target) if str(model) == "default" else load_query_encoder(model)


def build_app(index_dir, model="default", documents=None, settings: ServiceSettings | None = None):
    """``model``: a model directory, ``"default"`` (the shipped model, used when it fits the index) or
    None / ``"none"`` (no text queries)."""
    meta = read_meta(index_dir)
    settings = settings or ServiceSettings()
    index = load_index(index_dir, backend=settings.backend, mmap=True)
    encoder = query_encoder(model, index)
    docs = read_documents(documents) if documents else None
    return create_app(index, encoder=encoder, settings=settings, documents=docs, meta=meta)


def app_from_env():
    """uvicorn factory for worker processes: the configuration comes from ``AFTERSHOCK_SERVE_CONFIG``."""
    cfg = json.loads(os.environ[ENV])
    settings = ServiceSettings.from_json(cfg["settings"])
    GuardedH11Protocol.configure(settings)
    return build_app(cfg["index"], cfg.get("model"), cfg.get("documents"), settings)


def uvicorn_options(settings: ServiceSettings) -> dict:
    """The connection limits of ``settings`` as `uvicorn.run` options: the guarded h11 protocol (connection cap,
    header timeout, JSON refusals), ``limit_concurrency`` (503 beyond ``max_connections``), the keep-alive
    timeout and h11's header size limit."""
    GuardedH11Protocol.configure(settings)
    return {"http": GuardedH11Protocol, "limit_concurrency": settings.max_connections + 1,
            "timeout_keep_alive": max(1, int(round(settings.keep_alive_timeout))),
            "h11_max_incomplete_event_size": settings.max_header_bytes}


def serve(index_dir, model="default", documents=None, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          settings: ServiceSettings | None = None, log_level: str = "info", access_log: bool = False) -> None:
    import uvicorn

    settings = settings or ServiceSettings()
    sys.setswitchinterval(SWITCH_INTERVAL)
    if workers == 1:  # load here, so a bad index or model fails before the port opens
        app = build_app(index_dir, model, documents, settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                    **uvicorn_options(settings))
        return
    read_meta(index_dir)  # fail fast on a missing or damaged index
    os.environ[ENV] = json.dumps({"index": str(index_dir), "model": model and str(model),
                                  "documents": documents and str(documents), "settings": settings.to_json()})
    uvicorn.run("aftershock.service.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log, **uvicorn_options(settings))


def build_collection_app(path, model="default", settings: ServiceSettings | None = None):
    """(app, collection): the service over collection ``path`` opened as its writer; ``model`` as for
    ``serve --index`` (text in searches and upserts is encoded with its query side)."""
    from aftershock.collection import Collection

    collection = Collection.open(path)
    try:
        return create_app(None, query_encoder(model, collection), settings, collection=collection), collection
    except BaseException:
        collection.close()
        raise


def serve_collection(path, model="default", host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
                     settings: ServiceSettings | None = None, access_log: bool = False) -> None:
    """``aftershock serve --collection DIR``: one worker (a collection has one writer); the collection is closed
    (its log synced) when the server stops."""
    import uvicorn

    if workers != 1:
        raise ConfigError(f"--workers {workers}: a collection has one writer process, so serve --collection runs one "
                          "worker (searches still run on all cores); drop --workers")
    settings = settings or ServiceSettings()
    sys.setswitchinterval(SWITCH_INTERVAL)
    app, collection = build_collection_app(path, model, settings)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, **uvicorn_options(settings))
    finally:
        collection.close()
