"""Keyword options of the encoders: `make(cls, ...)` passes each encoder the options it takes, drops the
generic ones it does not use and rejects unknown ones (shared by `load_encoder` and the trained-model loader)."""

from __future__ import annotations

import inspect

from aftershock.errors import ConfigError

# options every caller may pass whatever the encoder; one that an encoder does not use is dropped
GENERIC = {"batch_size", "query_max_length", "doc_max_length", "dtype", "long_documents", "stride", "top_k",
           "threshold", "progress", "errors", "pooling", "vocab_chunk", "chunk_bytes", "pack"}


def _params(cls) -> set[str]:
    """Keyword names ``cls(...)`` accepts, following ``**kw`` up to the parent classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def make(cls, *args, **kwargs):
    """``cls(*args, **kwargs)`` without the generic options ``cls`` does not take; unknown options raise."""
    accepted = _params(cls)
    unknown = sorted(k for k in kwargs if k not in accepted and k not in GENERIC)
    if unknown:
        raise ConfigError(f"{cls.__name__} does not take the option(s) {unknown}; "
                          f"it takes {sorted(accepted - {'self', 'args', 'kw', 'kwargs'})}")
    return cls(*args, **{k: v for k, v in kwargs.items() if k in accepted})
