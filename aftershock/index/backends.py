"""The compute-backend registry: which room turns a CPU index into a backend's index.

The index rooms know nothing of each other's backends: ``aftershock.seismic`` builds CPU indexes (backend
``"numba"``), ``aftershock.gpu`` copies them to a GPU (backend ``"cuda"``). The façade
(``aftershock/__init__.py``) registers ``"cuda"`` with a factory that imports ``aftershock.gpu`` only when
asked, so ``load_index(path, backend="cuda")`` and ``index.to("cuda")`` work without ``seismic`` importing
``gpu``.

``register_backend(name, factory, available=None, hint="")``: ``factory(index, **kw)`` returns the index on
that backend; ``available()`` says whether it can run here (default: always); ``hint`` is appended to the
error when it cannot (e.g. the pip extra to install). ``to_backend(index, name, **kw)`` applies it;
``"auto"`` picks the first registered accelerator that is available, else ``"numba"``.
"""

from __future__ import annotations

from typing import Callable

from aftershock.errors import BackendUnavailableError, ConfigError

CPU = "numba"
ALIASES = {"cpu": CPU}  # index.to("cpu")


class _Backend:
    __slots__ = ("factory", "available", "hint")

    def __init__(self, factory, available, hint):
        self.factory, self.available, self.hint = factory, available, hint


_REGISTRY: dict[str, _Backend] = {CPU: _Backend(lambda index, **kw: index.to_host(), lambda: True, "")}


def register_backend(name: str, factory: Callable, available: Callable[[], bool] | None = None,
                     hint: str = "") -> None:
    """Make ``name`` a backend: ``factory(index, **kw)`` -> the index on it (replaces an earlier entry)."""
    if not isinstance(name, str) or not name or name in ALIASES or name == "auto":
        raise ConfigError(f"backend name {name!r} must be a non-empty string other than 'auto' and {sorted(ALIASES)}")
    _REGISTRY[name] = _Backend(factory, available or (lambda: True), hint)


def backends() -> list[str]:
    """Registered backend names (``"auto"`` is accepted too)."""
    return sorted(_REGISTRY)


def resolve_backend(name: str) -> str:
    """The registered name ``name`` stands for: ``"auto"`` -> the first available accelerator, else numba."""
    name = ALIASES.get(name, name)
    if name == "auto":
        for other, b in _REGISTRY.items():
            if other != CPU and _available(b):
                return other
        return CPU
    if name not in _REGISTRY:
        raise ConfigError(f"backend={name!r} is unknown; choose one of {['auto', *backends()]}")
    return name


def _available(b: _Backend) -> bool:
    try:
        return bool(b.available())
    except Exception:  # noqa: BLE001 - a backend whose probe fails is not available
        return False


def to_backend(index, name: str = "auto", **kw):
    """``index`` on backend ``name`` (``"numba"``/``"cpu"``: the CPU index; ``"cuda"``: its GPU copy)."""
    name = resolve_backend(name)
    b = _REGISTRY[name]
    if name != CPU and not _available(b):
        raise BackendUnavailableError(f"backend {name!r} is not available here{'; ' + b.hint if b.hint else ''}; "
                                      f"use backend='numba' (the CPU) or 'auto'")
    return b.factory(index, **kw)
