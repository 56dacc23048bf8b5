"""Evaluation: reusable metrics and effectiveness runs (the benchmark drivers live in ``benchmarks/``).

``aftershock.eval.metrics``: the one recall@k-vs-exact definition (tie-aware, mean over queries) and the
Pareto read-off of recall/latency points.
``aftershock.eval.beir``: BEIR-folder (and cached ir_datasets) loaders.
``aftershock.eval.effectiveness``: encode / index / search / score several systems with ir-measures
(``aftershock eval --help``).
"""
