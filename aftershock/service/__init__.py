"""REST search service (FastAPI): text, token-map or sparse-vector queries, batch search, document
lookup, index info, health and Prometheus metrics, with Qdrant- and OpenSearch-style aliases.

``create_app(index, encoder=None, settings=ServiceSettings(...))`` builds the app around a loaded index;
``serve(index_dir, model=None, ...)`` (``aftershock serve``) runs it on uvicorn.
"""

from aftershock.service.app import create_app
from aftershock.service.engine import ApiError, SearchEngine, load_documents
from aftershock.service.server import build_app, serve
from aftershock.service.settings import ServiceSettings

__all__ = ["create_app", "serve", "build_app", "ServiceSettings", "SearchEngine", "ApiError", "load_documents"]
