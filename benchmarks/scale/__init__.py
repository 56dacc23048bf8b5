"""Scale benchmark: real learned-sparse vectors grown to N documents, Aftershock and pyseismic-lsr side by side.

``aftershock bench scale --docs D --queries Q --sizes 268640,1M,3M`` (or ``--seed-file SEED.npz`` on a machine
that cannot receive the vectors; ``python -m benchmarks.scale ...`` in the checkout):

* generator (`benchmarks.scale.generate`): copies of the source whose term ids are permuted within bands of
  similar document frequency (copy 0 = the source), queries remapped with the permutation of a copy;
  statistics (nnz/doc, weights, posting lengths per copy) checked against the source for every N;
* per N, each system in a fresh child process: build seconds from the input file, peak RSS, index bytes,
  a query_cut:heap_factor sweep (1-thread µs/query, batch QPS on all cores, recall@k against Aftershock's
  exact search via ``aftershock.eval.metrics.recall_at_k``), µs at recall 0.90 / 0.95 off the Pareto frontier;
* across N: log-log slopes of build time, memory, index bytes and µs (1.0 = linear), a plot of cost vs N,
  ``<out>/<tag>.json`` (rewritten after every system, so a run cut short keeps what it measured).
"""



def main(argv: list[str] | None = None) -> int:
    """``aftershock bench scale ...`` (imported on call, so ``python -m benchmarks.scale.generate`` runs clean)."""
    from .driver import main as run

    return run(argv)


__all__ = ["main"]
