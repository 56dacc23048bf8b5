"""lsr is inference only: no module of aftershock.lsr imports eval, seismic, train, gpu, kv, service or cli
(lazy imports inside functions included), and aftershock.index imports only aftershock.errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "aftershock"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m == "aftershock" or m.startswith("aftershock.")}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<facade>"


@pytest.mark.parametrize("room,allowed", [("lsr", {"errors", "index", "lsr"}), ("index", {"errors", "index"})])
def test_room_imports(room, allowed):
    bad = {f"{p.relative_to(PKG)} -> {m}" for p in (PKG / room).rglob("*.py") for m in _imports(p)
           if _room(m) not in allowed}
    assert not bad, sorted(bad)


def test_load_and_model_do_not_import_each_other():
    assert not any(m.startswith("aftershock.lsr.load") for m in _imports(PKG / "lsr" / "model.py"))
