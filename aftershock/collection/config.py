"""`CollectionConfig`: how a collection stores, flushes, merges and searches (validated like every config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from aftershock.index.config import Config, check, is_int
from aftershock.seismic import SeismicConfig

DURABILITY = ("fsync", "batch", "none")
MERGE_MODES = ("background", "inline")


@dataclass(frozen=True)
class CollectionConfig(Config):
    """Collection settings.

    * ``exact_threshold``: a segment of fewer live rows is written as an `ExactIndex` (scored exhaustively),
      one of at least that many as a `SeismicIndex` built with ``seismic``.
    * ``buffer_docs``: the in-memory buffer (searched exactly) is flushed to a segment when it holds this many
      documents (and on `flush()` / `close()`).
    * ``flush_interval_s``: also flush the buffer once its oldest document is this many seconds old
      (0 = only by size and on `flush()`); checked on every upsert and by the background thread.
    * ``merge_factor``: the tiered merge policy (`aftershock.collection.merge`): when this many segments
      share a size tier (tier t: fewer than ``merge_factor**(t+1) x buffer_docs`` live rows), they are merged
      into one; every document is rewritten about log_f(N / buffer_docs) times.
    * ``max_segments``: a hard cap: beyond it the smallest segments are merged whatever their tiers;
      `optimize()` merges everything.
    * ``max_merge_docs``: the policy never merges into a segment of more than this many live rows (0 = no
      limit; it wins over ``max_segments``); `optimize()` still merges everything. Bounds background merges.
    * ``merge_deletes``: a segment with a larger deleted fraction is rewritten alone (its deleted rows
      dropped).
    * ``merge_mode``: ``"background"`` (merges run in a thread: `flush()` returns once the buffer is a
      segment; searches and writes go on during a merge) or ``"inline"`` (in the flushing call).
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
    flush_interval_s: float = 0.0
    merge_factor: int = 4
    max_merge_docs: int = 0
    merge_deletes: float = 0.5
    merge_mode: str = "background"
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
        check(isinstance(self.flush_interval_s, (int, float)) and not isinstance(self.flush_interval_s, bool)
              and 0 <= self.flush_interval_s < float("inf"), f"flush_interval_s={self.flush_interval_s!r} must be "
              "a number of seconds >= 0 (0 = flush by size only; try 60)")
        check(is_int(self.merge_factor, 2), f"merge_factor={self.merge_factor!r} must be an integer >= 2 (try 4)")
        check(is_int(self.max_merge_docs, 0), f"max_merge_docs={self.max_merge_docs!r} must be an integer >= 0 "
              "(0 = no limit; try 100000)")
        check(isinstance(self.merge_deletes, (int, float)) and 0 < self.merge_deletes <= 1,
              f"merge_deletes={self.merge_deletes!r} must be in (0, 1] (1 = never rewrite for deletions; try 0.5)")
        check(self.merge_mode in MERGE_MODES, f"merge_mode={self.merge_mode!r}; use one of {list(MERGE_MODES)}")
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
    "flush_interval_s": "also flush the buffer when its oldest document is this old (0 = off)",
    "merge_factor": "tiered merging: merge this many segments of one size tier",
    "max_merge_docs": "merges never make a segment of more live rows than this (0 = no limit)",
    "merge_deletes": "rewrite a segment alone when this fraction of it is deleted",
    "merge_mode": "merge in a background thread or inline in flush",
    "durability": "fsync each call, batch (group commit) or none",
    "filter_exact_rows": "score a filter's allowed rows exactly below this many",
    "filter_exact_fraction": "... or below this fraction of a segment's rows",
    "max_fetch": "most candidates a Seismic segment fetches when over-fetching",
}
FIELD_CHOICES = {"durability": DURABILITY, "merge_mode": MERGE_MODES}
