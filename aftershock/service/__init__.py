"""REST search service (FastAPI): text, token-map or sparse-vector queries, batch search, document
lookup, index info, health and Prometheus metrics, with Qdrant- and OpenSearch-style aliases.

``create_app(index, encoder=None, settings=ServiceSettings(...))`` builds the app around a loaded index;
``serve(index_dir, model=None, ...)`` (``aftershock serve``) runs it on uvicorn.

The names are imported on first use, so ``aftershock.service.settings`` (the CLI reads its defaults) works
without the ``service`` extra (FastAPI, uvicorn) installed.
"""

from importlib import import_module

_WHERE = {"create_app": "app", "serve": "server", "build_app": "server", "ServiceSettings": "settings",
          "SearchEngine": "engine", "ApiError": "engine"}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'aftershock.service' has no attribute {name!r}")
    try:
        module = import_module(f"aftershock.service.{_WHERE[name]}")
    except ModuleNotFoundError as e:  # FastAPI / uvicorn / prometheus-client missing
        raise ModuleNotFoundError(f"aftershock.service.{name} needs {e.name!r}: pip install 'aftershock[service]'") \
            from e
    return getattr(module, name)
