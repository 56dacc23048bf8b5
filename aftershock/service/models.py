"""Request and response models (pydantic v2). They are the OpenAPI schema at ``/openapi.json``.

Request models are strict (no silent coercion of ``"10"`` to 10) and forbid unknown fields, so a typo
such as ``"limt"`` is a 422 naming the field instead of being ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aftershock.seismic.config import INT32_MAX

TermId = Annotated[int, Field(ge=0, le=2**31 - 1)]
MAX_WEIGHT = 1e6  # keeps query x document products far from float32 overflow
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class SparseVector(BaseModel):
    """A sparse vector: term ids (ascending) and their weights."""

    indices: list[int]
    values: list[float]


class SparseQuery(_Request):
    """One query, in exactly one of three forms: ``text`` (encoded by the server's query encoder),
    ``tokens`` (``{token: weight}`` in the index's vocabulary) or ``indices`` + ``values`` (term ids
    and weights, Qdrant's sparse-vector shape)."""

    text: str | None = Field(None, min_length=1, description="free text, encoded server-side (needs --model)")
    tokens: dict[str, Weight] | None = Field(None, description="{token: weight} in the index's vocabulary")
    indices: list[TermId] | None = Field(None, description="term ids, each < the index's dim, no repeats")
    values: list[Weight] | None = Field(None, description="one finite weight >= 0 per term id")

    @model_validator(mode="after")
    def _one_form(self):
        given = [name for name in ("text", "tokens", "indices") if getattr(self, name) is not None]
        if (self.indices is None) != (self.values is None):
            missing = "values" if self.values is None else "indices"
            raise ValueError(f"'indices' and 'values' go together; add '{missing}' (one weight per term id)")
        if len(given) != 1:
            raise ValueError("give exactly one query form: 'text', 'tokens' or 'indices'+'values'"
                             + (f" (got {given})" if given else ""))
        return self


QueryIn = Annotated[Union[str, SparseQuery], Field(description="a text string (shorthand for {'text': ...}) or "
                                                                "a SparseQuery object")]


FILTER_HELP = ("Qdrant-shaped metadata filter (must / should / must_not; match, range, has_id, ...); only a "
               "collection (serve --collection) has metadata")


class HybridOptions(_Request):
    """Fuse the learned index with the server's BM25 index (needs ``serve --hybrid``; text queries only)."""

    method: Literal["convex", "rrf"] = Field("convex", description="convex: min-max normalised weighted sum; "
                                                                   "rrf: reciprocal-rank fusion")
    weight: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                 description="convex: the learned side's weight (BM25 gets 1 - weight); default "
                                             "chosen on training dev data (/info hybrid.defaults)")
    depth: int | None = Field(None, ge=1, le=INT32_MAX, description="hits per side that enter the fusion "
                                                                    "(default 100, at least k)")
    rrf_k: float | None = Field(None, ge=0, le=1e6, allow_inf_nan=False, description="rrf: rank offset (default 60)")


class SearchOptions(_Request):
    k: int = Field(10, ge=1, description="results per query (at most the server's max_k, /info)")
    query_cut: int | None = Field(None, ge=1, le=INT32_MAX,
                                  description="the query's heaviest terms that pick posting lists")
    heap_factor: float | None = Field(None, gt=0, le=1, description="block skip threshold (lower = more recall)")
    n_knn: int | None = Field(None, ge=0, le=INT32_MAX,
                              description="k-NN graph neighbours rescored (index built with knn>0)")
    return_documents: bool = Field(False, description="attach each hit's stored vector (and text, when the "
                                                      "server was started with --documents)")
    filter: dict | None = Field(None, description=FILTER_HELP)
    hybrid: HybridOptions | None = Field(None, description="fuse with BM25 (server started with --hybrid)")


_VECTOR = {"indices": [2129, 3358, 4834], "values": [1.2, 0.8, 1.5]}  # "how", "wing", "flow" (BERT ids)


def _examples(*examples) -> ConfigDict:
    return ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": list(examples)})


class SearchRequest(SearchOptions):
    model_config = _examples({"query": _VECTOR, "k": 5}, {"query": {"tokens": {"wing": 1.0, "flow": 0.5}}, "k": 3},
                             {"query": "supersonic flow over a wing", "k": 10, "return_documents": True})

    query: QueryIn


class BatchSearchRequest(SearchOptions):
    model_config = _examples({"queries": [_VECTOR, {"tokens": {"wing": 1.0}}], "k": 3, "heap_factor": 0.9})

    queries: list[QueryIn] = Field(min_length=1, description="queries, answered in order (at most max_batch)")


class Document(BaseModel):
    """A stored document: its sparse vector as kept in the index and, when the server has a corpus, its text."""

    id: str
    vector: SparseVector
    tokens: dict[str, float] | None = Field(None, description="the vector as {token: weight} when the index "
                                                               "has a vocabulary")
    title: str | None = None
    text: str | None = None


class Hit(BaseModel):
    id: str
    score: float
    document: Document | None = None


class Timing(BaseModel):
    encode_ms: float
    search_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    hits: list[Hit]
    timing: Timing


class QueryHits(BaseModel):
    hits: list[Hit]


class BatchSearchResponse(BaseModel):
    results: list[QueryHits]
    timing: Timing


class InfoResponse(BaseModel):
    kind: str
    backend: str | None = Field(None, description="compute backend of the index: 'numba' (CPU) or 'cuda'")
    n_docs: int
    dim: int
    index_bytes: int = Field(description="bytes of the index's arrays (memory-mapped from its directory)")
    vocab_size: int | None
    format_version: int | None
    collection: str
    config: dict
    build_stats: dict
    defaults: dict
    limits: dict
    encoder: str | None
    documents: int = Field(description="document texts loaded (--documents), 0 if none")
    hybrid: dict | None = Field(None, description="the BM25 side of hybrid search (serve --hybrid), None if off")


class HealthResponse(BaseModel):
    status: Literal["ok", "starting"]
    live: bool
    ready: bool
    checks: dict[str, bool]


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx: ``error`` is a short code, ``message`` names the value, the limit and the fix,
    ``field`` the request field at fault (dotted path, ``query.values[3]``) when there is one."""

    error: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] = []


# ---------------------------------------------------------------------------------------------- Qdrant-like
class QdrantParams(_Request):
    query_cut: int | None = Field(None, ge=1, le=INT32_MAX)
    heap_factor: float | None = Field(None, gt=0, le=1)
    n_knn: int | None = Field(None, ge=0, le=INT32_MAX)


class QdrantQueryRequest(_Request):
    """The subset of Qdrant's ``POST /collections/{c}/points/query`` that a sparse index answers."""

    model_config = _examples({"query": _VECTOR, "limit": 3, "with_payload": True})

    query: SparseQuery
    limit: int = Field(10, ge=1)
    using: str | None = Field(None, description="named vector; accepted and ignored (one vector per point)")
    with_payload: bool = Field(False, description="attach title/text (when the server has --documents)")
    with_vector: bool = Field(False, description="attach the stored sparse vector")
    params: QdrantParams | None = None
    filter: dict | None = Field(None, description=FILTER_HELP)


class QdrantPoint(BaseModel):
    id: str
    score: float
    payload: dict | None = None
    vector: SparseVector | None = None


class QdrantPoints(BaseModel):
    points: list[QdrantPoint]


class QdrantQueryResponse(BaseModel):
    result: QdrantPoints
    status: Literal["ok"]
    time: float = Field(description="seconds")


# ---------------------------------------------------------------------------------------------- OpenSearch-like
class NeuralSparseClause(_Request):
    query_text: str | None = Field(None, min_length=1)
    query_tokens: dict[str, Weight] | None = None
    model_id: str | None = Field(None, description="accepted and ignored: the server's --model encodes text")

    @model_validator(mode="after")
    def _one_form(self):
        if (self.query_text is None) == (self.query_tokens is None):
            raise ValueError("give exactly one of 'query_text' or 'query_tokens'")
        return self


class NeuralSparseQuery(_Request):
    neural_sparse: dict[str, NeuralSparseClause] = Field(description="{field_name: clause}, exactly one field")

    @model_validator(mode="after")
    def _one_field(self):
        if len(self.neural_sparse) != 1:
            raise ValueError(f"neural_sparse needs exactly one field, got {len(self.neural_sparse)}")
        return self


class OpenSearchRequest(_Request):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"query": {"neural_sparse": {"passage_embedding": {"query_tokens": {"wing": 1.0, "flow": 0.5}}}}, "size": 3}]})

    query: NeuralSparseQuery
    size: int = Field(10, ge=1)
    source: bool = Field(False, alias="_source", description="attach title/text (when the server has --documents)")
    filter: dict | None = Field(None, description=FILTER_HELP + "; given beside the neural_sparse query")


class OpenSearchHit(BaseModel):
    index: str = Field(alias="_index")
    id: str = Field(alias="_id")
    score: float = Field(alias="_score")
    source: dict | None = Field(None, alias="_source")


class OpenSearchTotal(BaseModel):
    value: int
    relation: Literal["eq"]


class OpenSearchHits(BaseModel):
    total: OpenSearchTotal
    max_score: float | None
    hits: list[OpenSearchHit]


class OpenSearchResponse(BaseModel):
    took: int = Field(description="milliseconds")
    timed_out: bool
    hits: OpenSearchHits
