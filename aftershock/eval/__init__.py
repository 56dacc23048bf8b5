"""Evaluation and benchmarks.

``aftershock.eval.ann``: recall / latency / memory of Aftershock's Seismic index side by side with
pyseismic-lsr and exact search (``aftershock bench ann --help``).
"""
