"""Evaluation and benchmarks.

``aftershock.eval.ann``: recall / latency / memory of Aftershock's Seismic index side by side with
pyseismic-lsr and exact search (``aftershock bench ann --help``).
``aftershock.eval.beir``: BEIR-folder (and cached ir_datasets) loaders.
``aftershock.eval.effectiveness``: encode / index / search / score several systems with ir-measures
(``aftershock eval --help``).
"""
