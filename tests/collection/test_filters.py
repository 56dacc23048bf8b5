"""Metadata and Qdrant-shaped filters: filtered search equals brute force (filter in plain Python, then exact
top-k) on the buffer, exact segments and Seismic segments, through both the exact-over-allowed path and the
over-fetch + post-filter path; k is respected whenever k allowed documents exist."""

from __future__ import annotations

import numpy as np
import pytest
from collection_helpers import DIM, check_topk, queries, random_docs

from aftershock import Collection, CollectionConfig, SeismicConfig
from aftershock.errors import ConfigError, FormatError

SCHEMA = {"src": "keyword", "year": "integer", "score": "float", "flag": "bool", "tags": "keyword[]"}
SRCS = ["gcide", "wordnet", "kjv"]
TAGS = ["a", "b", "c", "d"]


def random_metadata(rng, n):
    out = []
    for _ in range(n):
        md = {"src": SRCS[int(rng.integers(3))], "year": int(rng.integers(1900, 2000)),
              "score": float(rng.random()), "flag": bool(rng.random() < 0.3),
              "tags": [t for t in TAGS if rng.random() < 0.3]}
        for key in list(md):
            if rng.random() < 0.1:
                del md[key]  # missing = null
        out.append(md)
    return out


def py_cond(c, i, md):
    if any(k in c for k in ("must", "should", "must_not")):
        return py_filter(c, i, md)
    if "has_id" in c:
        return i in c["has_id"]
    if "is_null" in c:
        return c["is_null"]["key"] not in md
    if "is_empty" in c:
        return not md.get(c["is_empty"]["key"])
    v = md.get(c["key"])
    if v is None:
        return False
    if "range" in c:
        ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
               "lte": lambda a, b: a <= b}
        return all(ops[o](v, x) for o, x in c["range"].items())
    m = c["match"]
    vs = v if isinstance(v, list) else [v]
    if "value" in m:
        return m["value"] in vs
    if "any" in m:
        return any(x in m["any"] for x in vs)
    return any(x not in m["except"] for x in vs)


def py_filter(f, i, md):
    as_list = (lambda x: [] if x is None else ([x] if isinstance(x, dict) else x))
    ok = all(py_cond(c, i, md) for c in as_list(f.get("must")))
    should = as_list(f.get("should"))
    ok = ok and (not should or any(py_cond(c, i, md) for c in should))
    return ok and not any(py_cond(c, i, md) for c in as_list(f.get("must_not")))


FILTERS = [
    {"must": [{"key": "src", "match": {"value": "kjv"}}]},
    {"must": [{"key": "year", "range": {"gte": 1950, "lt": 1960}}]},
    {"should": [{"key": "tags", "match": {"any": ["a", "d"]}}, {"key": "flag", "match": {"value": True}}]},
    {"must_not": [{"key": "src", "match": {"any": ["gcide", "wordnet"]}}]},
    {"must": [{"key": "score", "range": {"gt": 0.5}}, {"must_not": [{"key": "tags", "match": {"value": "b"}}]}]},
    {"must": {"has_id": ["d3", "d17", "d150", "nope"]}},
    {"must": [{"is_null": {"key": "year"}}]},
    {"must": [{"is_empty": {"key": "tags"}}, {"key": "src", "match": {"except": ["kjv"]}}]},
    {"must": [{"key": "year", "range": {"lt": 1901}}]},  # tiny: fewer than k allowed
]


@pytest.fixture(scope="module", params=["buffer", "exact", "seismic-exact-path", "seismic-overfetch"])
def loaded(request, tmp_path_factory):
    rng = np.random.default_rng(11)
    seismic = SeismicConfig(pruning="none", summary_energy=1.0, value_dtype="float32")
    cfg = {"buffer": CollectionConfig(buffer_docs=10**6),
           "exact": CollectionConfig(exact_threshold=10**9, buffer_docs=70),
           "seismic-exact-path": CollectionConfig(exact_threshold=60, buffer_docs=90, seismic=seismic),
           "seismic-overfetch": CollectionConfig(exact_threshold=60, buffer_docs=90, seismic=seismic,
                                                 filter_exact_rows=0, filter_exact_fraction=0.0, max_fetch=64),
           }[request.param]
    c = Collection.create(tmp_path_factory.mktemp("f") / "c", dim=DIM, config=cfg, schema=SCHEMA)
    ids = [f"d{i}" for i in range(300)]
    docs, md = random_docs(rng, ids), random_metadata(rng, 300)
    c.upsert(docs, metadata=md)
    c.delete([f"d{i}" for i in range(0, 300, 7)])
    model = {str(docs.ids[i]): docs.row(i) for i in range(300) if i % 7}
    meta = {ids[i]: md[i] for i in range(300) if i % 7}
    return c, model, meta


@pytest.mark.parametrize("filt", FILTERS, ids=range(len(FILTERS)))
def test_filtered_search_equals_brute_force(loaded, filt):
    c, model, meta = loaded
    allowed = {i for i in model if py_filter(filt, i, meta[i])}
    qs = queries(n=8)
    res = c.search(qs, k=10, filter=filt, heap_factor=1.0, query_cut=100)
    check_topk(res, model, qs, 10, allowed=allowed)


def test_random_filters(loaded):
    c, model, meta = loaded
    rng = np.random.default_rng(3)
    qs = queries(n=4)
    for _ in range(15):
        lo = int(rng.integers(1900, 2000))
        filt = {"must": [{"key": "year", "range": {"gte": lo, "lte": lo + int(rng.integers(0, 40))}}],
                "should": [{"key": "src", "match": {"any": list(rng.choice(SRCS, 2, replace=False))}}]}
        allowed = {i for i in model if py_filter(filt, i, meta[i])}
        check_topk(c.search(qs, k=5, filter=filt, heap_factor=1.0, query_cut=100), model, qs, 5, allowed=allowed)


def test_metadata_survives_flush_merge_and_get(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, config=CollectionConfig(buffer_docs=4, max_segments=2),
                          schema=SCHEMA)
    rng = np.random.default_rng(1)
    md = random_metadata(rng, 10)
    c.upsert(random_docs(rng, [f"x{i}" for i in range(10)]), metadata=md)
    c.optimize()
    c.close()
    c = Collection.open(tmp_path / "c")
    _, got = c.get(["x2", "x7"])
    assert got == [md[2], md[7]]


def test_schema_and_filter_errors(tmp_path):
    c = Collection.create(tmp_path / "c", dim=DIM, schema=SCHEMA)
    docs = random_docs(np.random.default_rng(0), ["a"])
    with pytest.raises(FormatError, match="does not declare"):
        c.upsert(docs, metadata=[{"color": "red"}])
    with pytest.raises(FormatError, match="not a integer"):
        c.upsert(docs, metadata=[{"year": "1990"}])
    for bad in ({"must": [{"key": "color", "match": {"value": "x"}}]}, {"must": [{"key": "src", "range": {"gt": 1}}]},
                {"filter": []}, {"must": [{"key": "year", "match": {"value": "x"}}]}):
        with pytest.raises(ConfigError):
            c.search(queries(), k=3, filter=bad)
    with pytest.raises(ConfigError):
        Collection.create(tmp_path / "d", dim=DIM, schema={"x": "date"})
