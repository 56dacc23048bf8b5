"""Typed errors for the whole project.

Every message names the offending value, the limit it broke and the fix, e.g.
``InvalidVectorError: document 'd42' has term id 40000 >= dim 30522; pass dim= or check the vocabulary``.
The CLI prints them without a traceback; the service maps them to 4xx.
"""

from __future__ import annotations


class AftershockError(Exception):
    """Base class of every error Aftershock raises on purpose. ``field`` / ``value`` (optional keywords) name
    the parameter or input at fault, for callers that map errors to responses (the service) without parsing
    the message."""

    def __init__(self, *args, field: str | None = None, value=None):
        super().__init__(*args)
        self.field, self.value = field, value


class InvalidVectorError(AftershockError, ValueError):
    """A sparse vector breaks the data contract (finite, non-negative, ids in range, unique)."""


class NonFiniteValueError(InvalidVectorError):
    """A weight is NaN or infinite."""


class NegativeWeightError(InvalidVectorError):
    """A weight is negative (learned sparse weights are >= 0)."""


class TermIdOutOfRangeError(InvalidVectorError):
    """A term id is negative or >= dim."""


class DuplicateTermError(InvalidVectorError):
    """The same term id appears twice in one vector."""


class RaggedArrayError(InvalidVectorError):
    """Parallel arrays (indices/values, rows/ids) have different lengths."""


class UnknownTokenError(InvalidVectorError):
    """A token string is not in the vocabulary."""


class FormatError(AftershockError, ValueError):
    """A file does not follow the format it claims to be in."""


class IndexFormatError(AftershockError):
    """An index directory is missing, incomplete, corrupt or from a newer format."""


class IndexCorruptError(IndexFormatError):
    """A file of an index directory is missing or its checksum does not match."""


class IndexVersionError(IndexFormatError):
    """The index was written by a newer, unknown format version."""


class ConfigError(AftershockError, ValueError):
    """A build or search parameter is out of its valid range."""


class BackendUnavailableError(AftershockError, RuntimeError):
    """The requested compute backend is not installed or has no device."""


class InputTextError(AftershockError, ValueError):
    """A text given to an encoder is not a string (or bytes), or is not valid UTF-8 under errors='strict'."""


class ModelFormatError(AftershockError, ValueError):
    """A model directory is missing files or uses a layout/module Aftershock cannot load."""


class DuplicateIdError(InvalidVectorError):
    """Two documents of one build share an id (ids must be unique within an index)."""


class InvalidIdError(InvalidVectorError, FormatError):
    """An id is empty or holds whitespace or control characters (a TREC run could not hold it)."""


class ResourceLimitError(AftershockError, ValueError):
    """An input or request exceeds a resource limit (terms per document, k, dim, memory); the message names
    the limit and how to raise it."""


class IndexExistsError(AftershockError):
    """Saving would replace something that is not an Aftershock index (or an input); pass overwrite=True."""


class IndexBusyError(AftershockError):
    """Another writer holds the lock of the index directory being saved."""
