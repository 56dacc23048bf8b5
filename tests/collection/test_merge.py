"""Background merges and the tiered policy: the policy's picks, deletes that arrive during a merge carried
onto the merged segment (never resurrected, also after reopen), searches during a merge, close() waiting
for a merge in flight, the time-based flush, and a stateful test that interleaves background merges."""

from __future__ import annotations

import threading
import time

import hypothesis.strategies as st
import numpy as np
import pytest
from collection_helpers import DIM, check_topk, model_of, queries, random_docs
from hypothesis import settings
from hypothesis.stateful import rule
from test_stateful import IDS, CollectionMachine

from aftershock import Collection, CollectionConfig, SeismicConfig
from aftershock.collection import commits
from aftershock.collection.merge import pick_merge, tier
from aftershock.errors import ConfigError

EXACT_SEISMIC = SeismicConfig(pruning="none", summary_energy=1.0, value_dtype="float32")


@pytest.fixture
def hook():
    """Set ``commits.merge_hook`` for one test (restored after)."""
    yield lambda f: setattr(commits, "merge_hook", f)
    commits.merge_hook = None


def test_tiered_policy_picks():
    cfg = CollectionConfig(buffer_docs=10, merge_factor=4, max_segments=20)
    assert tier(10, cfg) == 0 and tier(39, cfg) == 0 and tier(40, cfg) == 1 and tier(161, cfg) == 2
    assert pick_merge([10, 10, 10], [10, 10, 10], cfg) == []
    assert pick_merge([10, 40, 10, 10, 9], [10, 40, 10, 10, 9], cfg) == [0, 2, 3, 4]  # four in tier 0
    assert pick_merge([160, 5, 100, 100, 100, 100], [160, 5, 100, 100, 100, 100], cfg) == [2, 3, 4, 5]
    assert pick_merge([100, 100], [100, 300], cfg) == [1]  # two thirds deleted: rewritten alone
    capped = CollectionConfig(buffer_docs=10, merge_factor=4, max_segments=3)
    assert pick_merge([500, 30, 2000, 8], [500, 30, 2000, 8], capped) == [1, 3]
    big = CollectionConfig(buffer_docs=10, merge_factor=2, max_merge_docs=100, max_segments=3)
    assert pick_merge([150, 120, 5, 300], [150, 120, 5, 300], big) == []  # no merge of more than 100 rows
    assert pick_merge([150, 60, 50], [150, 60, 50], big) == []
    assert pick_merge([150, 60, 40], [150, 60, 40], big) == [1, 2]
    with pytest.raises(ConfigError):
        CollectionConfig(merge_factor=1)
    with pytest.raises(ConfigError):
        CollectionConfig(merge_mode="later")
    with pytest.raises(ConfigError):
        CollectionConfig(flush_interval_s=-1)


@pytest.mark.parametrize("kind", ["exact", "seismic"])
def test_deletes_during_a_merge_are_carried(tmp_path, hook, kind):
    """A merge is held between building and committing; meanwhile documents of its source segments are
    deleted and replaced. After the commit none of them comes back (search, count, get, reopen)."""
    cfg = CollectionConfig(buffer_docs=10, merge_factor=2, max_segments=50, max_merge_docs=20,
                           exact_threshold=10**9 if kind == "exact" else 5, seismic=EXACT_SEISMIC)
    built, release = threading.Event(), threading.Event()

    def hold(coll):
        built.set()
        assert release.wait(30)

    hook(hold)
    c = Collection.create(tmp_path / "c", dim=DIM, config=cfg)
    rng = np.random.default_rng(3)
    docs = random_docs(rng, [f"d{i}" for i in range(20)])
    c.upsert(docs[:10])
    c.upsert(docs[10:])  # two flushes of 10: two tier-0 segments, a merge starts in the background
    model = model_of(docs)
    assert built.wait(30), "no merge started"
    assert len(c.info()["segments"]) == 2 and c.info()["merges"]["running"]
    dead = ["d1", "d4", "d12", "d19"]
    assert c.delete(dead) == 4
    again = random_docs(rng, ["d2", "d15"])  # replaced while merging: the old rows must stay dead
    c.upsert(again)
    for i in dead:
        del model[i]
    model_of(again, model)
    qs = queries()
    check_topk(c.search(qs, k=30, heap_factor=1.0, query_cut=100), model, qs, 30)  # during the merge
    extra = random_docs(rng, [f"e{i}" for i in range(5)])
    c.upsert(extra)
    model_of(extra, model)
    c.flush()  # a commit during the merge: its garbage collection keeps the merge's files
    assert len(c.info()["segments"]) == 3
    release.set()
    assert c.wait_for_merges(30)
    info = c.info()
    # 7 + 14 live rows > max_merge_docs: no second merge, the carried deletions stay visible
    assert [s["n_docs"] for s in info["segments"]] == [7, 20] and info["segments"][1]["n_deleted"] == 6
    assert info["merges"]["done"] == 1
    assert c.count() == len(model)
    check_topk(c.search(qs, k=30, heap_factor=1.0, query_cut=100), model, qs, 30)
    assert sorted(c.get(dead + ["d2", "d15"])[0].ids) == ["d15", "d2"]
    c.close()
    c = Collection.open(tmp_path / "c")
    assert c.count() == len(model)
    check_topk(c.search(qs, k=30, heap_factor=1.0, query_cut=100), model, qs, 30)
    c.optimize()
    assert c.info()["segments"][0]["n_deleted"] == 0
    check_topk(c.search(qs, k=30, heap_factor=1.0, query_cut=100), model, qs, 30)
    c.close()


def test_close_and_optimize_wait_for_a_merge_in_flight(tmp_path, hook):
    hook(lambda coll: time.sleep(0.3))
    cfg = CollectionConfig(buffer_docs=5, merge_factor=2, exact_threshold=10**9)
    c = Collection.create(tmp_path / "c", dim=DIM, config=cfg)
    docs = random_docs(np.random.default_rng(4), [f"d{i}" for i in range(10)])
    c.upsert(docs[:5])
    c.upsert(docs[5:])
    time.sleep(0.05)
    c.close()  # waits for the merge, which commits
    c = Collection.open(tmp_path / "c")
    assert len(c.info()["segments"]) == 1 and c.count() == 10
    c.upsert(random_docs(np.random.default_rng(5), [f"e{i}" for i in range(5)]))
    c.upsert(random_docs(np.random.default_rng(6), [f"f{i}" for i in range(5)]))
    c.optimize()  # waits for the background merge, then merges everything
    assert len(c.info()["segments"]) == 1 and c.count() == 20
    c.close()


def test_inline_merges(tmp_path):
    cfg = CollectionConfig(buffer_docs=5, merge_factor=2, exact_threshold=10**9, merge_mode="inline")
    c = Collection.create(tmp_path / "c", dim=DIM, config=cfg)
    docs = random_docs(np.random.default_rng(7), [f"d{i}" for i in range(20)])
    for a in range(0, 20, 5):
        c.upsert(docs[a:a + 5])
    assert [s["n_docs"] for s in c.info()["segments"]] == [20] and c._merger is None
    check_topk(c.search(queries(), k=8), model_of(docs), queries(), 8)
    c.close()


def test_time_based_flush(tmp_path):
    cfg = CollectionConfig(buffer_docs=1000, flush_interval_s=0.2, exact_threshold=10**9)
    c = Collection.create(tmp_path / "c", dim=DIM, config=cfg)
    c.upsert(random_docs(np.random.default_rng(8), ["a", "b"]))
    assert c.info()["buffer_docs"] == 2
    end = time.time() + 10
    while c.info()["buffer_docs"] and time.time() < end:
        time.sleep(0.05)
    info = c.info()
    assert info["buffer_docs"] == 0 and len(info["segments"]) == 1 and c.count() == 2
    c.close()
    assert Collection.open(tmp_path / "c", read_only=True).count() == 2


class BackgroundMergeMachine(CollectionMachine):
    """The model-based test with merges in a background thread, each held a few milliseconds before its
    commit so upserts, deletes, flushes and searches run while merges are in flight."""

    config = CollectionConfig(exact_threshold=4, buffer_docs=4, max_segments=6, merge_factor=2, durability="none",
                              seismic=EXACT_SEISMIC)

    def __init__(self):
        commits.merge_hook = lambda coll: time.sleep(0.004)
        super().__init__()

    @rule()
    def wait_merges(self):
        assert self.coll.wait_for_merges(30)
        assert self.coll.info()["merges"]["error"] is None

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=6, unique=True))
    def delete_during_merge(self, ids):
        self.delete(ids)

    def teardown(self):
        super().teardown()
        commits.merge_hook = None


TestBackgroundMergeStateful = BackgroundMergeMachine.TestCase
TestBackgroundMergeStateful.settings = settings(max_examples=12, stateful_step_count=25, deadline=None)
