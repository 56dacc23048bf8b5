"""Mutable, durable, filterable collections: immutable segments (exact or Seismic), a write-ahead log,
deletion bitmaps, metadata columns with Qdrant-shaped filters, and a manifest switched atomically."""

from aftershock.collection.collection import Collection, CollectionLockedError, Generation
from aftershock.collection.config import CollectionConfig
from aftershock.collection.filters import check_filter, check_schema, filter_mask
from aftershock.collection.search import CollectionResult

__all__ = ["Collection", "CollectionConfig", "CollectionResult", "CollectionLockedError", "Generation",
           "check_filter", "check_schema", "filter_mask"]
