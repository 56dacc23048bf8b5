"""Model-based test: random upsert / delete / flush / optimize / reopen sequences against a plain dict
id -> vector; after every step exact search over the collection equals brute force over the dict, the
count matches and `get` returns the stored vectors. Two flavours: exact segments only, and Seismic
segments built so that they search exactly (no pruning, full summaries, heap_factor 1)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from collection_helpers import DIM, check_topk, queries, random_docs
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aftershock import Collection, CollectionConfig, SeismicConfig

IDS = [f"d{i}" for i in range(24)]
QS = queries(n=5)


class CollectionMachine(RuleBasedStateMachine):
    config = CollectionConfig(exact_threshold=10**9, buffer_docs=6, max_segments=3, durability="none")

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="aftershock-stateful-"))
        self.coll = Collection.create(self.dir / "c", dim=DIM, config=self.config)
        self.model: dict = {}

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=8, unique=True), seed=st.integers(0, 2**16))
    def upsert(self, ids, seed):
        docs = random_docs(np.random.default_rng(seed), ids)
        self.coll.upsert(docs)
        for j, i in enumerate(ids):
            t, v = docs.row(j)
            self.model[i] = (t.copy(), v.copy())

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=6, unique=True))
    def delete(self, ids):
        n = self.coll.delete(ids)
        assert n == sum(i in self.model for i in ids)
        for i in ids:
            self.model.pop(i, None)

    @rule()
    def flush(self):
        self.coll.flush()

    @rule()
    def optimize(self):
        self.coll.optimize()
        assert len(self.coll.info()["segments"]) <= 1

    @rule()
    def reopen(self):
        self.coll.close()
        self.coll = Collection.open(self.dir / "c")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get(self, data):
        i = data.draw(st.sampled_from(sorted(self.model)))
        batch, _ = self.coll.get([i, "missing"])
        assert list(batch.ids) == [i]
        t, v = batch.row(0)
        np.testing.assert_array_equal(t, self.model[i][0])
        np.testing.assert_allclose(v, self.model[i][1])

    @invariant()
    def search_equals_brute_force(self):
        assert self.coll.count() == len(self.model)
        for k in (3, 30):
            check_topk(self.coll.search(QS, k=k, heap_factor=1.0, query_cut=100), self.model, QS, k)

    def teardown(self):
        self.coll.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class SeismicMachine(CollectionMachine):
    config = CollectionConfig(exact_threshold=4, buffer_docs=6, max_segments=3, durability="none",
                              seismic=SeismicConfig(pruning="none", summary_energy=1.0, value_dtype="float32"))


TestCollectionStateful = CollectionMachine.TestCase
TestCollectionStateful.settings = settings(max_examples=20, stateful_step_count=25, deadline=None)
TestSeismicStateful = SeismicMachine.TestCase
TestSeismicStateful.settings = settings(max_examples=10, stateful_step_count=20, deadline=None)
