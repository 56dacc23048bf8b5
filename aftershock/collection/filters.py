"""Metadata with a declared schema, stored columnar (Arrow tables, Parquet per segment), and filters in
Qdrant's JSON shape compiled to a row mask per segment.

Schema: ``{"field": type}`` with type ``"keyword"`` (string), ``"integer"`` (int64), ``"float"`` (float64),
``"bool"`` or ``"keyword[]"`` (a list of strings; ``"keyword_list"`` is accepted too). A missing field is null.

Filter (Qdrant): ``{"must": [...], "should": [...], "must_not": [...]}``, each a list of conditions (or one);
a document passes when every ``must`` holds, at least one ``should`` holds (when there are any) and no
``must_not`` holds. Conditions: ``{"key": f, "match": {"value": v}}``, ``{"key": f, "match": {"any": [...]}}``,
``{"key": f, "match": {"except": [...]}}``, ``{"key": f, "range": {"gt"|"gte"|"lt"|"lte": x}}``,
``{"has_id": [ids]}``, ``{"is_empty": {"key": f}}``, ``{"is_null": {"key": f}}`` and a nested filter.
On a ``keyword[]`` field a match holds when any element matches. A null never matches a match or a range.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aftershock.errors import ConfigError, FormatError

TYPES = ("keyword", "integer", "float", "bool", "keyword[]")


def arrow_type(t: str):
    import pyarrow as pa  # lazily: `import aftershock` stays light

    return {"keyword": pa.string(), "integer": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
            "keyword[]": pa.list_(pa.string())}[t]
ALIASES = {"keyword_list": "keyword[]", "int": "integer", "str": "keyword", "string": "keyword",
           "boolean": "bool", "double": "float"}
ID = "__id"


def check_schema(schema) -> dict:
    """The schema with its type names normalised (raises ConfigError naming the bad field)."""
    if schema is None:
        return {}
    if not isinstance(schema, dict):
        raise ConfigError(f"schema must be a dict field -> type, got {type(schema).__name__}; e.g. "
                          "{'source': 'keyword', 'year': 'integer'}")
    out = {}
    for name, t in schema.items():
        t = ALIASES.get(t, t)
        if not isinstance(name, str) or not name or name == ID:
            raise ConfigError(f"schema field name {name!r} must be a non-empty string other than {ID!r}")
        if t not in TYPES:
            raise ConfigError(f"schema field {name!r} has type {t!r}; use one of {sorted(TYPES)}")
        out[name] = t
    return out


def _value_ok(t: str, v) -> bool:
    if t == "keyword":
        return isinstance(v, str)
    if t == "integer":
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if t == "float":
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if t == "bool":
        return isinstance(v, (bool, np.bool_))
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def check_metadata(schema: dict, metadata, n: int, ids) -> list:
    """One dict per document (None -> {}), every field in the schema and of its type."""
    if metadata is None:
        return [{} for _ in range(n)]
    metadata = list(metadata)
    if len(metadata) != n:
        raise FormatError(f"{len(metadata)} metadata records for {n} vectors; pass one per vector (or None)")
    out = []
    for doc_id, md in zip(ids, metadata):
        md = {} if md is None else md
        if not isinstance(md, dict):
            raise FormatError(f"metadata of {doc_id!r} must be a dict, got {type(md).__name__}")
        clean = {}
        for k, v in md.items():
            if k not in schema:
                raise FormatError(f"metadata of {doc_id!r} has field {k!r} that the schema does not declare; "
                                  f"declared: {sorted(schema)} (create the collection with schema={{...}})")
            if v is None:
                continue
            if not _value_ok(schema[k], v):
                raise FormatError(f"metadata field {k!r} of {doc_id!r} is {v!r}, not a {schema[k]}")
            clean[k] = list(v) if schema[k] == "keyword[]" else (float(v) if schema[k] == "float" else v)
        out.append(clean)
    return out


def to_table(schema: dict, ids, metadata: list):
    import pyarrow as pa

    cols = {ID: pa.array([str(i) for i in ids], pa.string())}
    for name, t in schema.items():
        cols[name] = pa.array([md.get(name) for md in metadata], arrow_type(t))
    return pa.table(cols)


def conform(table, schema: dict):
    """``table`` cast to the canonical column types of ``schema`` (Parquet may name list items differently)."""
    import pyarrow as pa

    target = pa.schema([(ID, pa.string())] + [(n, arrow_type(t)) for n, t in schema.items()])
    return table if table.schema.equals(target) else table.select(target.names).cast(target)


def write_table(table, path: Path) -> None:
    """Write Parquet atomically (temporary file, fsync, rename)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_table(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path, memory_map=True)


def row_metadata(schema: dict, table, row: int) -> dict:
    if table is None:
        return {}
    out = {}
    for name in schema:
        v = table.column(name)[row].as_py()
        if v is not None:
            out[name] = v
    return out


# ---------------------------------------------------------------------------------------------- filters
def _as_list(x, where):
    if x is None:
        return []
    if isinstance(x, dict):
        return [x]
    if isinstance(x, list):
        return x
    raise ConfigError(f"filter {where} must be a list of conditions (or one condition), got {type(x).__name__}")


def check_filter(filt, schema: dict, where: str = "filter") -> None:
    """Raise ConfigError (naming the path in the filter) unless ``filt`` is a valid filter for ``schema``."""
    if filt is None:
        return
    if not isinstance(filt, dict):
        raise ConfigError(f"{where} must be a JSON object with must / should / must_not, got {type(filt).__name__}")
    unknown = set(filt) - {"must", "should", "must_not"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; a filter has must / should / must_not")
    for clause in ("must", "should", "must_not"):
        for i, cond in enumerate(_as_list(filt.get(clause), f"{where}.{clause}")):
            _check_condition(cond, schema, f"{where}.{clause}[{i}]")


def _check_condition(cond, schema, where):
    if not isinstance(cond, dict):
        raise ConfigError(f"{where} must be a JSON object, got {cond!r}")
    if set(cond) & {"must", "should", "must_not"}:
        return check_filter(cond, schema, where)
    if "has_id" in cond:
        if not isinstance(cond["has_id"], list):
            raise ConfigError(f"{where}.has_id must be a list of ids")
        return
    for key in ("is_empty", "is_null"):
        if key in cond:
            f = cond[key].get("key") if isinstance(cond[key], dict) else None
            if f not in schema:
                raise ConfigError(f"{where}.{key}.key={f!r} is not a schema field; declared: {sorted(schema)}")
            return
    f = cond.get("key")
    if f not in schema:
        raise ConfigError(f"{where}.key={f!r} is not a schema field; declared: {sorted(schema)}")
    t = schema[f]
    base = "keyword" if t == "keyword[]" else t
    if "match" in cond:
        m = cond["match"]
        if not isinstance(m, dict) or len(set(m) & {"value", "any", "except"}) != 1:
            raise ConfigError(f"{where}.match must be {{'value': v}}, {{'any': [...]}} or {{'except': [...]}}")
        vals = [m["value"]] if "value" in m else m.get("any", m.get("except"))
        if not isinstance(vals, list) or not all(_value_ok(base, v) for v in vals):
            raise ConfigError(f"{where}.match {m!r} must hold {base} values for field {f!r}")
        if base == "float":
            raise ConfigError(f"{where}: field {f!r} is a float; use range, not match")
    elif "range" in cond:
        r = cond["range"]
        if t not in ("integer", "float"):
            raise ConfigError(f"{where}: range needs an integer or float field; {f!r} is a {t}")
        if not isinstance(r, dict) or not r or set(r) - {"gt", "gte", "lt", "lte"} or not all(
                _value_ok("float", v) for v in r.values()):
            raise ConfigError(f"{where}.range {r!r} must map some of gt / gte / lt / lte to numbers")
    else:
        raise ConfigError(f"{where} has neither match, range, has_id, is_empty, is_null nor a nested filter")


def filter_mask(filt, schema: dict, table, ids: np.ndarray) -> np.ndarray:
    """Boolean row mask of the rows of ``table`` / ``ids`` that pass ``filt`` (checked already)."""
    n = len(ids)
    mask = np.ones(n, bool)
    for cond in _as_list(filt.get("must"), "must"):
        mask &= _cond_mask(cond, schema, table, ids)
    should = _as_list(filt.get("should"), "should")
    if should:
        any_ = np.zeros(n, bool)
        for cond in should:
            any_ |= _cond_mask(cond, schema, table, ids)
        mask &= any_
    for cond in _as_list(filt.get("must_not"), "must_not"):
        mask &= ~_cond_mask(cond, schema, table, ids)
    return mask


def _np(arr) -> np.ndarray:
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), bool)


def _column(table, f, n):
    if table is None:
        import pyarrow as pa

        return pa.nulls(n, pa.string())
    return table.column(f).combine_chunks()


def _cond_mask(cond, schema, table, ids) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    if set(cond) & {"must", "should", "must_not"}:
        return filter_mask(cond, schema, table, ids)
    if "has_id" in cond:
        return np.isin(np.asarray(ids, dtype=object).astype(str), np.array([str(x) for x in cond["has_id"]]))
    for key in ("is_empty", "is_null"):
        if key in cond:
            col = _column(table, cond[key]["key"], n)
            out = _np(pc.is_null(col))
            if key == "is_empty" and pa.types.is_list(col.type):
                out |= _np(pc.equal(pc.list_value_length(col), 0))
            return out
    f = cond["key"]
    col = _column(table, f, n)
    if "range" in cond:
        out = np.ones(n, bool)
        for op, x in cond["range"].items():
            fn = {"gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}[op]
            out &= _np(fn(col, pa.scalar(float(x)) if schema[f] == "float" else x))
        return out
    m = cond["match"]
    vals = [m["value"]] if "value" in m else m.get("any", m.get("except"))
    is_list = pa.types.is_list(col.type)
    flat = pc.list_flatten(col) if is_list else col
    hit = _np(pc.is_in(flat, value_set=pa.array(vals, flat.type)))
    if is_list:
        parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
        out = np.zeros(n, bool)
        out[parents[hit]] = True
        if "except" in m:  # a list passes `except` when it has an element outside the set
            out = np.zeros(n, bool)
            out[parents[~hit]] = True
        return out
    if "except" in m:
        return ~hit & ~_np(pc.is_null(col))
    return hit
