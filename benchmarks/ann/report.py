"""Markdown tables, the recall-latency plot, the JSON encoder and the RESULTS.md writer of the ANN benchmark."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from aftershock.eval.metrics import pareto_frontier

from .common import TARGETS

# ---------------------------------------------------------------------------------------------- reporting
def _f(x, fmt: str, na: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return na
    return format(x, fmt)


# pyseismic's "1-thread" batch that kept more cores busy did not run on one thread (num_threads ignored).
# Not applied to Numba: set_num_threads(1) is reliable there, and OpenMP workers left spinning by the
# previous T-thread call add CPU time to a short 1-thread call.
ONE_THREAD_MAX_CORES = 1.3


def _speedup(points, check_cores: bool = False) -> tuple[float | None, float | None, float | None]:
    """Median (min, max) over sweep points of batch QPS on T threads / on 1 thread; with ``check_cores``
    points whose 1-thread batch was not single-threaded (CPU/wall > ONE_THREAD_MAX_CORES) are left out."""
    r = [p["batch_qps"] / p["batch_qps_1t"] for p in points
         if p.get("batch_qps_1t") and (not check_cores or (p.get("batch_cores_1t") or 0) <= ONE_THREAD_MAX_CORES)]
    if not r:
        return None, None, None
    return float(np.median(r)), float(min(r)), float(max(r))


def _not_single_threaded(points) -> float | None:
    c = [p["batch_cores_1t"] for p in points if p.get("batch_qps_1t") and p.get("batch_cores_1t") is not None]
    return float(np.median(c)) if c and all(x > ONE_THREAD_MAX_CORES for x in c) else None


def _tables(report: dict) -> str:
    k, T = report["k"], report["threads"]
    lines = [f"| system | knobs | recall@{k} | mean µs (1 thr) | p99 µs (1 thr) | batch QPS ({T} thr) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in report["systems"].items():
        if "error" in s:
            continue
        for p in s["points"]:
            lines.append(f"| {name} | {p['knobs']} | {p['recall']:.4f} | {_f(p['mean_us'], '.1f')} | "
                         f"{_f(p['p99_us'], '.1f')} | {_f(p['batch_qps'], ',.0f')} |")
    lines += ["", f"| system | build s | index MB | peak RSS MB (process, incl. loaded vectors) | start RSS MB | "
                  f"batch speed-up ({T} vs 1 thr) | notes |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, s in report["systems"].items():
        if "error" in s:
            lines.append(f"| {name} | failed | | | | | {s['error'].splitlines()[0][:200]} |")
            continue
        check = name == "seismic"
        med, lo, hi = _speedup(s["points"], check_cores=check)
        busy = _not_single_threaded(s["points"]) if check else None
        if med is not None:
            sp = f"{med:.2f}x" if lo == hi else f"{med:.2f}x ({lo:.2f}-{hi:.2f})"
        elif busy is not None:
            sp = f"n/a: its 1-thread batch kept {busy:.1f} cores busy"
        else:
            sp = "n/a (1 thread)"
        notes = [f"bytes: {s['index_bytes_source']}"]
        if s.get("clustering"):
            notes.append(f"clustering={s['clustering']}")
        if s.get("query_terms_dropped"):
            notes.append(f"{s['query_terms_dropped']} query terms no document of it holds dropped (no score changes)")
        if name.startswith("bmp"):
            notes.append(f"bsize {s['config']['bsize']}, impacts {s['config']['impacts']}")
        if s.get("batch_note"):
            notes.append(s["batch_note"])
        if s.get("batch_order_note"):
            notes.append(s["batch_order_note"])
        cores = [p["batch_cores"] for p in s["points"] if p.get("batch_cores") is not None]
        if cores and T > 1:
            notes.append(f"batch kept {np.median(cores):.1f} of {T} cores busy (CPU/wall)")
        sc = [p["single_cores"] for p in s["points"] if p.get("single_cores") is not None]
        if sc and np.median(sc) > ONE_THREAD_MAX_CORES:
            notes.append(f"WARNING: its one-query-per-call loop kept {np.median(sc):.1f} cores busy")
        if s.get("call_overhead_us") is not None:
            notes.append(f"empty-query call {s['call_overhead_us']:.1f} µs")
        rss, rss0 = s.get("peak_rss_kb"), s.get("rss_start_kb")
        lines.append(f"| {name} | {_f(s['build_s'], '.2f')} | "
                     f"{_f(s['index_bytes'] / 1e6 if s.get('index_bytes') else None, '.1f')} | "
                     f"{_f(rss * 1024 / 1e6 if rss else None, '.0f')} | "
                     f"{_f(rss0 * 1024 / 1e6 if rss0 else None, '.0f')} | "
                     f"{sp} | {'; '.join(notes)} |")
    lines += ["", "| system | " + " | ".join(f"mean µs @ recall {t:.2f}" for t in TARGETS) + " |",
              "|---|" + "---:|" * len(TARGETS)]
    for name, pr in report["pareto"].items():
        cells = []
        for t in TARGETS:
            v = pr[f"{t:.2f}"]
            cells.append("n/a" if v["us"] is None else ("≤" if v["upper_bound"] else "") + f"{v['us']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["ratios"]:
        lines.append("")
        for name, r in report["ratios"].items():
            parts = [f"recall {t}: {'n/a' if v is None else f'{v:.2f}x'}" for t, v in r.items()]
            lines.append(f"- µs ratio {name} (< 1: Aftershock faster): " + ", ".join(parts))
    return "\n".join(lines)


def _header(report: dict) -> str:
    d = report["data"]
    ref = report.get("exact_ref") or {}
    lines = [f"- data: {d['n_docs']:,} docs ({d['nnz_per_doc']:.1f} nnz/doc), {d['n_queries']:,} queries "
             f"({d['nnz_per_query']:.1f} nnz/query), dim {d['dim']}; k={report['k']}; threads={report['threads']}",
             "- build: " + ", ".join(f"{a}={b}" for a, b in report["build_params"].items()),
             f"- each system runs in its own child process ({report['start_method']}); its RSS at start "
             "(the loaded vectors, inherited) and its peak RSS are in the second table"]
    if ref:
        lines.append(f"- exact, Aftershock (1 thread, one query per call): {ref['aftershock_exact_us']:.1f} µs/query "
                     f"(p99 {ref['aftershock_exact_p99_us']:.1f}) over {ref['aftershock_exact_n']} queries")
        lines.append("- exact, scipy (1 query @ D^T as CSR + argpartition top-k): "
                     f"{ref['scipy_exact_us']:.1f} µs/query "
                     f"over the first {ref['scipy_exact_n']} queries (recall {ref['scipy_recall']:.4f})")
    for n in report["notes"]:
        lines.append(f"- note: {n}")
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return f"no plot: matplotlib unavailable ({e})"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = iter("os^Dvx<>P*")
    for name, s in report["systems"].items():
        if "error" in s or name == "exact":
            continue
        pts = [(p["mean_us"], p["recall"]) for p in s["points"]]
        m = next(markers, "o")
        xs, ys = zip(*pts)
        line, = ax.plot(*zip(*pareto_frontier(pts)), "-", label=f"{name} (frontier)", lw=1.5)
        ax.plot(xs, ys, m, color=line.get_color(), ms=5, alpha=0.8)
        for p in s["points"]:
            ax.annotate(p["knobs"], (p["mean_us"], p["recall"]), fontsize=6,
                        color=line.get_color(), xytext=(3, -8), textcoords="offset points")
    ref = report.get("exact_ref") or {}
    if ref:
        ax.axvline(ref["aftershock_exact_us"], color="k", ls="-", lw=1, label=f"exact (Aftershock) "
                   f"{ref['aftershock_exact_us']:.0f} µs")
        ax.axvline(ref["scipy_exact_us"], color="grey", ls="--", lw=1,
                   label=f"exact (scipy) {ref['scipy_exact_us']:.0f} µs")
    for t in TARGETS:
        ax.axhline(t, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if str(f"{x:g}")[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("mean µs per query (1 thread, one query per call; log scale)")
    ax.set_ylabel(f"recall@{report['k']} vs exact")
    ax.set_title(f"{report['dataset']}: {report['data']['n_docs']:,} docs, {report['data']['n_queries']:,} queries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _append_results(path: Path, report: dict, body: str, png: Path | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    m = report["machine"]
    sec = [f"## ANN: {report['dataset']} ({report['date']})", "",
           f"- machine: nproc {m['nproc']} (os.cpu_count {m['cpu_count']}), CPU {m['cpu_model']}, "
           f"Python {m['python']}, pyseismic-lsr {m.get('pyseismic_lsr') or 'n/a'}, bmp {m.get('bmp') or 'n/a'}",
           f"- command: `{report['command']}`"]
    if report["invoked"] != report["command"]:
        sec.append(f"- invoked as: `{report['invoked']}`")
    sec += [_header(report), "", body, ""]
    if png is not None:
        try:
            rel = os.path.relpath(png.resolve(), path.resolve().parent)
        except ValueError:
            rel = str(png.resolve())
        sec += [f"plot: `{png}`", "", f"![recall vs latency, {report['dataset']}]({rel})", ""]
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("# Benchmark results\n\n")
        elif not path.read_text(encoding="utf-8").endswith("\n\n"):
            f.write("\n")
        f.write("\n".join(sec) + "\n")
