"""The tiered merge policy and the background merger thread of a `Collection`.

Policy (`pick_merge`, as Lucene's log-merge policy): a segment's *tier* is floor(log_f(live rows /
buffer_docs)) with f = ``merge_factor`` (tier 0: fewer than f x buffer_docs live rows, tier 1: fewer than
f**2 x buffer_docs, ...). When one tier holds ``merge_factor``
segments, its ``merge_factor`` smallest are merged into one segment of the next tier, so every document is
rewritten about log_f(N / buffer_docs) times and the number of segments stays below
``(merge_factor - 1) x tiers``. ``max_segments`` caps the count: beyond it the smallest segments are
merged. No merge makes a segment of more than ``max_merge_docs`` live rows (when > 0; as Lucene's maximum
merged segment size, it wins over ``max_segments``): only `optimize()` builds larger ones, so the policy runs
no large rebuild that the final optimize would repeat. A segment whose deleted fraction is above ``merge_deletes`` is rewritten alone
(expunging its deleted rows).

The merger (`Merger`): one daemon thread per writer. It wakes on every flush (and every
``flush_interval_s / 2`` seconds for the time-based flush), asks the collection for a plan under the write
lock (sources + their deletion masks at that moment + a reserved segment name), builds the merged segment
*without* the lock (writes and searches go on), then commits under the lock: deletions that arrived
meanwhile are carried onto the merged rows, the manifest switches atomically, the log is kept. ``pause()``
(optimize) and ``stop()`` (close) wait for a merge in flight to commit.
"""

from __future__ import annotations

import math
import threading
import time
import warnings


def tier(live: int, config) -> int:
    """floor(log_f(live / buffer_docs)), at least 0: a merge of f segments of tier t lands in tier t + 1."""
    base = max(1, config.buffer_docs)
    if live < base * config.merge_factor:
        return 0
    return math.floor(math.log(live / base, config.merge_factor) + 1e-9)


def pick_merge(live: list[int], total: list[int], config) -> list[int]:
    """Positions of the segments to merge next (sorted), or [] when the policy is satisfied. ``live``: live
    rows per segment, ``total``: rows including deleted ones."""
    n = len(live)
    if n == 0:
        return []
    for i in range(n):  # deletion-heavy segments are rewritten alone
        if total[i] and live[i] < total[i] and (total[i] - live[i]) / total[i] > config.merge_deletes:
            return [i]
    cap = config.max_merge_docs or float("inf")

    def fits(pos):  # a merge never makes a segment of more than max_merge_docs live rows
        return len(pos) >= 2 and sum(live[i] for i in pos) <= cap

    by_size = sorted(range(n), key=lambda i: (live[i], i))
    if n > config.max_segments:
        take = by_size[: max(2, min(config.merge_factor, n - config.max_segments + 1))]
        if fits(take):
            return sorted(take)
    tiers: dict = {}
    for i in by_size:
        tiers.setdefault(tier(live[i], config), []).append(i)
    for t in sorted(tiers):
        if len(tiers[t]) >= config.merge_factor and fits(tiers[t][: config.merge_factor]):
            return sorted(tiers[t][: config.merge_factor])
    return []


class Merger(threading.Thread):
    """Runs ``coll._merge_step()`` whenever woken until it returns False, and ``coll._maybe_time_flush()``
    every ``tick`` seconds. Errors are kept in ``error`` (reported by ``info()`` and raised by ``close()``)."""

    def __init__(self, coll, tick: float | None):
        super().__init__(name=f"aftershock-merge:{coll.path.name}", daemon=True)
        self.coll = coll
        self.tick = tick
        self.cond = threading.Condition()
        self.wanted = False
        self.stopping = False
        self.paused = 0
        self.busy = False
        self.error: BaseException | None = None
        self.merges = 0
        self.merge_s = 0.0

    def wake(self) -> None:
        with self.cond:
            self.wanted = True
            self.cond.notify_all()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (self.paused or not self.wanted):
                    if not self.cond.wait(self.tick) and not self.paused and self.tick:
                        break  # a tick: check the time-based flush
                if self.stopping:
                    return
                run_merges = self.wanted and not self.paused
                self.wanted = False
                self.busy = True
            try:
                self.coll._maybe_time_flush()
                while run_merges and self.error is None:
                    with self.cond:
                        if self.paused or self.stopping:
                            break
                    t0 = time.perf_counter()
                    if not self.coll._merge_step():
                        break
                    self.merges += 1
                    self.merge_s += time.perf_counter() - t0
            except BaseException as e:  # noqa: BLE001 - kept, reported, merging stops (writes go on)
                self.error = e
                warnings.warn(f"background merge of {self.coll.path} failed: {e!r}; merging stopped (writes and "
                              "searches go on; close() raises it)", RuntimeWarning, stacklevel=1)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until no merge is running and none is wanted (True), or ``timeout`` passed (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while (self.busy or (self.wanted and not self.paused)) and self.error is None and self.is_alive():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def pause(self) -> None:
        """Start no new merge and wait for the one in flight (it commits)."""
        with self.cond:
            self.paused += 1
            while self.busy:
                self.cond.wait()

    def resume(self) -> None:
        with self.cond:
            self.paused -= 1
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
