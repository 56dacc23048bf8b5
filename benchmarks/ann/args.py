"""Command line of the ANN benchmark: options, sweep parsing, the full command for the record."""

from __future__ import annotations

import argparse
import shlex

from aftershock.cli.common import add_config_flags
from aftershock.seismic.config import SeismicConfig

from .common import BMP_LEVELS, CLUSTERINGS, DEFAULT_BMP_BSIZE, DEFAULT_BMP_SWEEP, DEFAULT_SWEEP, PROG, SYSTEMS

# the build parameters both Seismic implementations take (flags, defaults and help from SeismicConfig)
BUILD_FIELDS = ("n_postings", "max_fraction", "centroid_fraction", "min_cluster_size", "summary_energy", "doc_cut",
                "knn")


def _clustering_config(spec: str) -> dict | None:
    """'random' | 'kmeans', optionally ':N' = max_block_size N; None when the spec is not one of those."""
    name, _, size = spec.partition(":")
    if name not in CLUSTERINGS or (size and not size.isdigit()):
        return None
    return {"clustering": name, "max_block_size": int(size or 0)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Recall / latency / memory of Aftershock's Seismic index side by side with pyseismic-lsr, "
                    "BMP and exact search, on the same vectors in the same run. Recall: "
                    "aftershock.eval.metrics.recall_at_k against exact float search.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--docs", required=True, help="document vectors (.npz, .bin, .bin.gz, .parquet, .jsonl)")
    d.add_argument("--queries", required=True, help="query vectors (same formats)")
    d.add_argument("--dim", type=int, default=30522, help="vocabulary size (ignored for .jsonl: its tokens define it)")
    d.add_argument("--n-queries", type=int, default=2000, help="use the first N queries")
    d.add_argument("--n-docs", type=int, default=0, help="use the first N documents (0 = all)")
    d.add_argument("--k", type=int, default=10, help="top-k (recall@k)")
    d.add_argument("--dataset", default=None, help="label for tables and file names (default: docs file stem)")
    b = p.add_argument_group("build (Seismic's names; Aftershock and pyseismic-lsr get the same values)")
    add_config_flags(b, SeismicConfig, BUILD_FIELDS, defaults=True)
    b.add_argument("--clustering", default="random",
                   help="Aftershock clustering; a comma list (random,kmeans,random:24) builds one Aftershock index "
                        "each; ':N' splits clusters larger than N docs (max_block_size)")
    s = p.add_argument_group("search")
    s.add_argument("--sweep", default=DEFAULT_SWEEP, help="comma list of query_cut:heap_factor points")
    s.add_argument("--n-knn", type=int, default=0, help="k-NN graph neighbours rescored per result")
    s.add_argument("--threads", type=int, default=None, help="threads for builds and batch QPS (default: all cores)")
    s.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)} (a peer that "
                   "is not installed is skipped with a note)")
    m = p.add_argument_group(f"BMP (its index holds 8-bit impacts: round(w x {BMP_LEVELS} / max document weight))")
    m.add_argument("--bmp-sweep", default=DEFAULT_BMP_SWEEP, help="comma list of alpha:beta points (alpha: block "
                   "termination threshold, beta: query-term pruning; 1:1 = exact on the quantized impacts)")
    m.add_argument("--bmp-bsize", default=DEFAULT_BMP_BSIZE, help="comma list of block sizes (one index each)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="aftershock-bench-out", help="directory for ann_<dataset>.json / .png (default: ./aftershock-bench-out in the current directory)")
    o.add_argument("--results", default=None, help="Markdown file to append a section to (e.g. benchmarks/RESULTS.md; "
                   "default: none, nothing is appended anywhere)")
    o.add_argument("--start-method", choices=("auto", "fork", "spawn"), default="auto",
                   help="how the per-system child processes start (auto: fork unless this process already "
                        "runs Numba's threading layer, which cannot survive a fork)")
    return p


def parse_sweep(text: str) -> list[tuple[int, float]]:
    """``"10:0.9,20:0.7"`` -> ``[(10, 0.9), (20, 0.7)]`` (validated, duplicates dropped, order kept)."""
    out: list[tuple[int, float]] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            qc_s, hf_s = part.split(":")
            qc, hf = int(qc_s), float(hf_s)
        except ValueError:
            raise ValueError(f"sweep point {part!r} is not query_cut:heap_factor (e.g. 10:0.8)") from None
        if qc < 1 or not (0 < hf <= 1):
            raise ValueError(f"sweep point {part!r}: query_cut must be >= 1 and heap_factor in (0, 1]")
        if (qc, hf) not in out:
            out.append((qc, hf))
    if not out:
        raise ValueError("--sweep has no points")
    return out


def parse_bmp_sweep(text: str) -> list[tuple[float, float]]:
    """``"1:1,0.8:0.9"`` -> ``[(1.0, 1.0), (0.8, 0.9)]``: alpha and beta in (0, 1]."""
    out: list[tuple[float, float]] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            a_s, b_s = part.split(":")
            a, b = float(a_s), float(b_s)
        except ValueError:
            raise ValueError(f"BMP sweep point {part!r} is not alpha:beta (e.g. 0.9:1)") from None
        if not (0 < a <= 1 and 0 < b <= 1):
            raise ValueError(f"BMP sweep point {part!r}: alpha and beta must be in (0, 1]")
        if (a, b) not in out:
            out.append((a, b))
    if not out:
        raise ValueError("--bmp-sweep has no points")
    return out


def parse_sizes(text: str) -> list[int]:
    """``"16,32"`` -> ``[16, 32]`` (each >= 1)."""
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--bmp-bsize {text!r} is not a comma list of integers") from None
    if not out or out[0] < 1:
        raise ValueError(f"--bmp-bsize {text!r}: give block sizes >= 1")
    return out


def _split(text: str) -> list[str]:
    out: list[str] = []
    for x in text.split(","):
        x = x.strip().lower()
        if x and x not in out:
            out.append(x)
    return out


def _full_command(parser: argparse.ArgumentParser, args) -> str:
    """The command with every option spelled out (defaults included), so the run can be repeated."""
    parts = PROG.split()
    for act in parser._actions:
        if not act.option_strings or act.dest == "help":
            continue
        opt = next((o for o in act.option_strings if o.startswith("--")), act.option_strings[0])
        v = getattr(args, act.dest)
        if isinstance(act, argparse._StoreTrueAction):
            if v:
                parts.append(opt)
        elif v is not None:
            parts += [opt, str(v)]
    return shlex.join(parts)

