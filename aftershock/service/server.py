"""Start the service: load the index (mmap) and, when given, the query encoder and document texts, once.

``serve(...)`` runs uvicorn. With ``workers > 1`` uvicorn needs an import string, so the configuration
travels to each worker process in the environment variable ``AFTERSHOCK_SERVE_CONFIG`` and
`app_from_env` builds the app there (each worker maps the same index files; metrics are per worker).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aftershock.errors import BackendUnavailableError, FormatError
from aftershock.index import read_meta
from aftershock.seismic import load_index
from aftershock.service.app import create_app
from aftershock.service.engine import load_documents
from aftershock.service.settings import ServiceSettings

ENV = "AFTERSHOCK_SERVE_CONFIG"


def load_query_encoder(model_dir):
    """``aftershock.lsr.load_encoder(model_dir, device="cpu")``, imported only when a model is asked for."""
    if not Path(model_dir).is_dir():
        raise FormatError(f"--model {model_dir} is not a directory; pass a local model directory (no downloads)")
    try:
        from aftershock.lsr import load_encoder
    except ImportError as e:
        raise BackendUnavailableError(f"text queries need aftershock.lsr, which cannot be imported ({e}); install "
                                      "the encoder extras (pip install 'aftershock[lsr]') or serve without --model")
    return load_encoder(str(model_dir), device="cpu")


def build_app(index_dir, model=None, documents=None, settings: ServiceSettings | None = None):
    meta = read_meta(index_dir)
    index = load_index(index_dir, mmap=True)
    encoder = load_query_encoder(model) if model else None
    docs = load_documents(documents) if documents else None
    return create_app(index, encoder=encoder, settings=settings, documents=docs, meta=meta)


def app_from_env():
    """uvicorn factory for worker processes: the configuration comes from ``AFTERSHOCK_SERVE_CONFIG``."""
    cfg = json.loads(os.environ[ENV])
    return build_app(cfg["index"], cfg.get("model"), cfg.get("documents"),
                     ServiceSettings.from_json(cfg["settings"]))


def serve(index_dir, model=None, documents=None, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          settings: ServiceSettings | None = None, log_level: str = "info", access_log: bool = False) -> None:
    import uvicorn

    settings = settings or ServiceSettings()
    if workers == 1:  # load here, so a bad index or model fails before the port opens
        app = build_app(index_dir, model, documents, settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
        return
    read_meta(index_dir)  # fail fast on a missing or damaged index
    os.environ[ENV] = json.dumps({"index": str(index_dir), "model": model and str(model),
                                  "documents": documents and str(documents), "settings": settings.to_json()})
    uvicorn.run("aftershock.service.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log)
