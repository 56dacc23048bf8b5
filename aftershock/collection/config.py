"""`CollectionConfig`: how a collection stores, flushes, merges and searches (validated like every config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from aftershock.index.config import Config, check, is_int
from aftershock.seismic import SeismicConfig

DURABILITY = ("fsync", "batch", "none")


@dataclass(frozen=True)
class CollectionConfig(Config):
    """Collection settings.

    * ``exact_threshold``: a segment of fewer live rows is written as an `ExactIndex` (scored exhaustively),
      one of at least that many as a `SeismicIndex` built with ``seismic``.
    * ``buffer_docs``: the in-memory buffer (searched exactly) is flushed to a segment when it holds this many
      documents (and on `flush()` / `close()`).
    * ``max_segments``: after a flush, when there are more segments than this, the smallest are merged into
      one (a tiered policy: merging keeps the number of segments logarithmic in the data); `optimize()`
      merges everything.
    * ``durability``: ``"fsync"`` every acknowledged call fsyncs the write-ahead log before it returns;
      ``"batch"`` group commit: concurrent writers share one fsync (still durable on return);
      ``"none"``: the log is written to the OS but fsynced only at flush / close (a process crash loses
      nothing, a power loss may lose the calls since the last flush).
    * ``filter_exact_rows`` / ``filter_exact_fraction``: a filter that allows at most
      ``max(filter_exact_rows, filter_exact_fraction x segment rows)`` rows of a Seismic segment (12x that for
      a batch of 8+ queries) is scored exactly over those rows; a larger allowed set runs the Seismic search
      with the filter inside its heap. Measured on lexicon (benchmarks/collection/filters.py): exact scoring
      costs a fixed amount per allowed row, the filtered blocked search about one unfiltered search whatever
      the segment size, so they cross at a number of rows, ~3,200 for one query (the default 3,000); the
      fraction (default 0, off) is for segments whose blocked search costs more.
    * ``max_fetch``: the most candidates one Seismic segment search fetches while over-fetching past deleted
      or filtered rows (beyond it the allowed rows are scored exactly).
    """

    exact_threshold: int = 20_000
    buffer_docs: int = 10_000
    max_segments: int = 8
    durability: str = "fsync"
    filter_exact_rows: int = 3_000
    filter_exact_fraction: float = 0.0
    max_fetch: int = 10_000
    seismic: SeismicConfig = field(default_factory=SeismicConfig)

    def __post_init__(self):
        check(is_int(self.exact_threshold, 0), f"exact_threshold={self.exact_threshold!r} must be an integer >= 0 "
              "(segments with fewer rows are exact; try 20000)")
        check(is_int(self.buffer_docs, 1), f"buffer_docs={self.buffer_docs!r} must be an integer >= 1 (try 10000)")
        check(is_int(self.max_segments, 1), f"max_segments={self.max_segments!r} must be an integer >= 1 (try 8)")
        check(self.durability in DURABILITY, f"durability={self.durability!r}; use one of {list(DURABILITY)}")
        check(is_int(self.filter_exact_rows, 0), f"filter_exact_rows={self.filter_exact_rows!r} must be an "
              "integer >= 0 (try 3000)")
        check(isinstance(self.filter_exact_fraction, (int, float)) and 0 <= self.filter_exact_fraction <= 1,
              f"filter_exact_fraction={self.filter_exact_fraction!r} must be in [0, 1] (try 0)")
        check(is_int(self.max_fetch, 1), f"max_fetch={self.max_fetch!r} must be an integer >= 1 (try 10000)")
        check(isinstance(self.seismic, SeismicConfig), f"seismic must be a SeismicConfig, got "
              f"{type(self.seismic).__name__}; pass SeismicConfig(n_postings=...)")

    def to_dict(self) -> dict:
        return {**asdict(self), "seismic": self.seismic.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "CollectionConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("seismic"), dict):
            kw["seismic"] = SeismicConfig.from_dict(kw["seismic"])
        return cls(**kw)


FIELD_HELP = {
    "exact_threshold": "segments with fewer rows are exact, larger ones Seismic",
    "buffer_docs": "flush the in-memory buffer to a segment at this many documents",
    "max_segments": "merge the smallest segments when a flush leaves more than this",
    "durability": "fsync each call, batch (group commit) or none",
    "filter_exact_rows": "score a filter's allowed rows exactly below this many",
    "filter_exact_fraction": "... or below this fraction of a segment's rows",
    "max_fetch": "most candidates a Seismic segment fetches when over-fetching",
}
FIELD_CHOICES = {"durability": DURABILITY}
