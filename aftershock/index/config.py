"""Config validation written once: every build config and search-parameter dataclass of the project
derives from `Config` and states its rules with `check`.

``check(cond, msg)`` raises `ConfigError(msg)`; the message names the value, the limit and the fix.
`Config` adds ``with_(**kw)`` (unknown names are an error), ``to_dict()`` and ``from_dict(d)`` (keys
this version does not know are ignored, so an index written by a newer minor version still loads).
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace

from aftershock.errors import ConfigError


def check(cond: bool, msg: str) -> None:
    """Raise `ConfigError(msg)` unless ``cond``."""
    if not cond:
        raise ConfigError(msg)


def is_int(x, lo: int | None = None, hi: int | None = None) -> bool:
    """``x`` is an int (not a bool) within [lo, hi]."""
    if isinstance(x, bool) or not isinstance(x, int):
        return False
    return (lo is None or x >= lo) and (hi is None or x <= hi)


def is_real(x, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> bool:
    """``x`` is a finite real number (int or float, not a bool) within [lo, hi] ((lo, hi] with ``lo_open``)."""
    import math

    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return False
    if lo is not None and (x <= lo if lo_open else x < lo):
        return False
    return hi is None or x <= hi


def check_known(cls, kw: dict) -> None:
    """Every key of ``kw`` is a field of dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(kw) - names)
    check(not unknown, f"unknown {cls.__name__} parameter(s) {unknown}; known: {sorted(names)}")


class Config:
    """Mixin for the project's (frozen) config dataclasses."""

    # keyword overrides equal to None keep the current value (CLI flags that were not given)
    none_keeps: bool = False

    def with_(self, **kw):
        check_known(type(self), kw)
        if self.none_keeps:
            kw = {k: v for k, v in kw.items() if v is not None}
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
