"""The import rules of ../shared/DESIGN.md, checked on the source: every `import` and `from ... import` in
the package (module level or inside a function, lazily or not) is an arrow from one room to another,
and no arrow may point to a room that is not allowed, nor close a circle between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "aftershock"

# room -> rooms it may import (errors is open to every room; a room may always import itself)
ALLOWED = {
    "errors": set(),
    "index": set(),
    "seismic": {"index"},
    "lsr": {"index"},
    "gpu": {"seismic", "index"},
    "collection": {"seismic", "index"},
    "eval": {"lsr", "seismic", "collection", "index"},
    "train": {"lsr", "seismic", "eval", "index"},
    "kv": {"seismic", "index"},
    "service": {"collection", "seismic", "gpu", "lsr", "index"},
    "cluster": {"collection", "service", "lsr", "index"},
}
# the facade (aftershock/__init__.py), `python -m aftershock` and the CLI may import every room
OPEN = {"", "__main__", "cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _targets(module: str, path: Path) -> list[tuple[str, int]]:
    """Aftershock modules imported by ``module`` (with line numbers): ``from pkg import name`` points at
    ``pkg.name`` when that is a module, else at ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "aftershock"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "aftershock":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, node.lineno))
    return out


GRAPH = {m: _targets(m, p) for m, p in MODULES.items()}


def test_the_package_is_found():
    assert "aftershock.seismic" in MODULES and "aftershock.index" in MODULES and len(MODULES) > 40


def test_rooms_import_only_allowed_rooms():
    bad = []
    for mod, targets in GRAPH.items():
        src = _room(mod)
        if src in OPEN:
            continue
        assert src in ALLOWED, f"{mod}: room {src!r} is not in DESIGN.md's table; add it to ALLOWED"
        for tgt, line in targets:
            dst = _room(tgt)
            if dst in (src, "errors"):
                continue
            if dst not in ALLOWED[src]:
                bad.append(f"{MODULES[mod].relative_to(PKG.parent)}:{line}: {src} -> {dst or 'aftershock (facade)'}"
                           f" ({tgt})")
    assert not bad, "imports that break the room rules:\n" + "\n".join(sorted(set(bad)))


def test_no_import_circles():
    """Tarjan's strongly connected components over the module graph: every component is one module."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in GRAPH.get(v, []):
            if w not in MODULES or w == v:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10000)
    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    assert not comps, "import circles:\n" + "\n".join(" <-> ".join(c) for c in comps)


@pytest.mark.parametrize("src,dst", [("index", "seismic"), ("lsr", "eval"), ("lsr", "seismic"), ("lsr", "train"),
                                     ("seismic", "gpu"), ("seismic", "lsr")])
def test_the_named_arrows_of_issue_12_are_absent(src, dst):
    hits = [m for m, ts in GRAPH.items() if _room(m) == src for t, _ in ts if _room(t) == dst]
    assert not hits, f"{src} imports {dst} in {sorted(set(hits))}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("def f():\n    from aftershock.gpu import search\n    from . import config\n", encoding="utf-8")
    targets = [t for t, _ in _targets("aftershock.seismic.mod", f)]
    assert "aftershock.gpu.search" in targets and "aftershock.seismic.config" in targets


def test_no_file_over_500_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, f"files over 500 lines (split them by concern): {long}"


def test_test_file_names_are_unique():
    """tests/ has no __init__.py files, so pytest imports test modules by basename: two files of one name in
    different folders stop the whole run at collection."""
    names = [p.name for p in (PKG.parent / "tests").rglob("test_*.py")]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"test files with the same name in two folders: {dupes}; rename one"
