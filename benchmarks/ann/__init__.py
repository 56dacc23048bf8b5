"""Side-by-side ANN benchmark: Aftershock's Seismic index vs pyseismic-lsr (and exact search), same run,
same vectors, same queries.

``aftershock bench ann --docs D --queries Q [...]`` (or ``python -m benchmarks.ann ...`` in the checkout):

* ground truth: Aftershock's exact (Numba) search; recall@k of every sweep point is measured against it;
* per system and (query_cut, heap_factor) sweep point: recall@k, 1-thread latency (one query per call:
  mean and p99 µs), batch QPS on ``--threads`` threads;
* per system: build seconds, index bytes, peak RSS of the process that built and searched it, batch
  speed-up (``--threads`` threads vs 1);
* a Pareto read-off: 1-thread mean µs needed to reach recall 0.90 and 0.95, and the ratio
  Aftershock / pyseismic-lsr at both;
* reference lines: exact search µs/query (Aftershock, 1 thread) and scipy (CSR product + argpartition).

Each system is built and searched in a child process (``fork`` after the parent loaded the vectors, so
its peak RSS includes the vectors, as they would be in any process that builds an index from them).
Output: Markdown tables on stdout, ``<out>/ann_<dataset>.json``, ``<out>/ann_<dataset>.png`` and a
section appended to ``--results`` (``benchmarks/RESULTS.md``).
"""

from .args import build_parser, parse_sweep
from .driver import main

__all__ = ["main", "build_parser", "parse_sweep"]
