"""Hybrid systems in ``aftershock eval``: ``A+B[:METHOD]`` fuses system A (e.g. ``bm25``) with system B (e.g.
``default`` or a model directory) per query, by `aftershock.index.fusion`.

``METHOD``: ``convex`` (default; weight `DEFAULT_WEIGHT` on B, chosen on SciFact's train qrels),
``convex=W`` (weight W on B, 1 - W on A), ``rrf`` (k = 60) or ``rrf=K``. Both components are searched
exactly at the run's depth ``k``, over the same document order, and fused to the top ``k``; a component
that is also in ``--systems`` is encoded and searched once.
"""

from __future__ import annotations

import re
from pathlib import Path

from aftershock.errors import ConfigError
from aftershock.index.fusion import FusionParams, fuse, parse_fusion

_SPEC = re.compile(r"^(?P<a>[^+]+)\+(?P<b>.+?)(?::(?P<f>(?:convex|rrf)(?:=[^:]*)?))?$", re.IGNORECASE)


def parse_hybrid(system: str) -> tuple[str, str, FusionParams] | None:
    """``"bm25+default:rrf"`` -> ``("bm25", "default", FusionParams(method="rrf"))``; None for a plain system."""
    m = _SPEC.match(str(system).strip())
    if m is None:
        return None
    a, b = m["a"].strip(), m["b"].strip()
    for part in (a, b):
        if not part or part.lower() == "bm25s" or "+" in part:
            raise ConfigError(f"--systems: hybrid {system!r} fuses two systems A+B[:convex[=W]|:rrf[=K]], each "
                              "bm25, default or a model directory (not bm25s, not a third system)")
    return a, b, parse_fusion(m["f"]) if m["f"] else FusionParams()


def name_of(system: str) -> str:
    """Short display name: a path's last part; a hybrid as ``A+B:method``."""
    spec = parse_hybrid(system)
    if spec is None:
        return Path(system).name or system
    a, b, fp = spec
    how = f"convex={fp.weight:g}" if fp.method == "convex" else ("rrf" if fp.rrf_k == 60 else f"rrf={fp.rrf_k:g}")
    return f"{name_of(a)}+{name_of(b)}:{how}"


def fused_row(ds, system: str, parts: tuple[str, str, FusionParams], done: dict, k: int) -> tuple[dict, object]:
    """The eval row and fused `SearchResult` of a hybrid, from its components' rows and exact results in
    ``done`` (system -> (row, SearchResult)); both components index ``ds``'s documents in the same order."""
    a, b, fp = parts
    (ra, xa), (rb, xb) = done[a], done[b]
    fused = fuse([xa, xb], fp.method, fp.weights(2), k, fp.rrf_k)
    row = {"dataset": ds.name, "system": system, "index": "exact", "n_docs": len(ds.doc_ids),
           "n_queries": len(ds.query_ids), "fusion": dict(fp.to_dict(), depth=k),
           "encode_docs_s": ra.get("encode_docs_s", 0.0) + rb.get("encode_docs_s", 0.0),
           "search_s": ra.get("search_s", 0.0) + rb.get("search_s", 0.0)}
    return row, fused
