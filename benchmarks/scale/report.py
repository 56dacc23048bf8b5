"""Tables, log-log slopes and the cost-vs-N plot of the scale benchmark."""

from __future__ import annotations

import math

import numpy as np

NAMES = {"aftershock": "Aftershock", "seismic": "pyseismic-lsr"}
METRICS = (("build_s", "build s"), ("peak_rss_mb", "peak RSS MB"), ("index_mb", "index MB"),
           ("us_0.95", "µs/query @ recall 0.95 (1 thr)"))


def loglog_slope(ns, ys) -> float | None:
    """Least-squares slope of log(y) on log(N) (1 = linear growth); None with < 2 usable points."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys) if y is not None and y > 0 and n > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def slopes(rows: list[dict]) -> dict:
    """{system: {metric: slope}} over the sizes measured."""
    out: dict[str, dict] = {}
    for sys_ in sorted({r["system"] for r in rows}):
        rs = sorted((r for r in rows if r["system"] == sys_ and "error" not in r), key=lambda r: r["n_docs"])
        out[sys_] = {m: loglog_slope([r["n_docs"] for r in rs], [r.get(m) for r in rs])
                     for m, _ in METRICS + (("batch_qps_0.95", ""),)}
    return out


def _f(v, fmt="{:,.1f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def table(rows: list[dict]) -> str:
    head = ("| N docs | system | version | build s | peak RSS MB | index MB | bytes/doc | µs @ 0.90 | µs @ 0.95 "
            "| batch QPS @ 0.95 | best recall |")
    out = [head, "|" + "---|" * 2 + "---|" + "---:|" * 8]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['n_docs']:,} | {NAMES.get(r['system'], r['system'])} | | failed: {r['error'][:80]} "
                       "| | | | | | | |")
            continue
        ub = {t: "≤" if r.get(f"us_{t}_upper_bound") else "" for t in ("0.90", "0.95")}
        out.append(f"| {r['n_docs']:,} | {NAMES.get(r['system'], r['system'])} | {r.get('version') or '?'} "
                   f"| {_f(r['build_s'])} | {_f(r['peak_rss_mb'], '{:,.0f}')} | {_f(r['index_mb'], '{:,.0f}')} "
                   f"| {_f(r['bytes_per_doc'], '{:,.0f}')} | {ub['0.90']}{_f(r.get('us_0.90'), '{:,.0f}')} "
                   f"| {ub['0.95']}{_f(r.get('us_0.95'), '{:,.0f}')} | {_f(r.get('batch_qps_0.95'), '{:,.0f}')} "
                   f"| {_f(r['best_recall'], '{:.4f}')} |")
    return "\n".join(out)


def ratio_table(rows: list[dict]) -> str:
    """Aftershock / pyseismic-lsr per N (< 1: Aftershock cheaper)."""
    by = {(r["n_docs"], r["system"]): r for r in rows if "error" not in r}
    ns = sorted({n for n, _ in by})
    out = ["| N docs | build s | peak RSS | index bytes | µs @ 0.90 | µs @ 0.95 | batch QPS @ 0.95 |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for n in ns:
        a, s = by.get((n, "aftershock")), by.get((n, "seismic"))
        if not a or not s:
            continue

        def rat(key):
            x, y = a.get(key), s.get(key)
            return f"{x / y:.2f}x" if x and y else "-"

        out.append(f"| {n:,} | {rat('build_s')} | {rat('peak_rss_mb')} | {rat('index_mb')} | {rat('us_0.90')} "
                   f"| {rat('us_0.95')} | {rat('batch_qps_0.95')} |")
    return "\n".join(out)


def slope_table(sl: dict) -> str:
    out = ["| system | build s | peak RSS | index bytes | µs @ 0.95 | batch QPS @ 0.95 |", "|---|---:|---:|---:|---:|---:|"]
    for s, d in sl.items():
        out.append(f"| {NAMES.get(s, s)} | " + " | ".join(_f(d.get(m), "{:.2f}") for m in
                                                             ("build_s", "peak_rss_mb", "index_mb", "us_0.95",
                                                              "batch_qps_0.95")) + " |")
    return "\n".join(out)


def plot(rows: list[dict], path, title: str) -> str | None:
    """Cost against N, log-log, both systems; None on success, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except Exception as e:  # noqa: BLE001
        return f"no plot: matplotlib unavailable ({e})"
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, (m, label) in zip(axes, METRICS):
        for s in sorted({r["system"] for r in rows}):
            rs = sorted((r for r in rows if r["system"] == s and "error" not in r and r.get(m)),
                        key=lambda r: r["n_docs"])
            if rs:
                ax.plot([r["n_docs"] for r in rs], [r[m] for r in rs], "o-", label=NAMES.get(s, s))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ns = sorted({r["n_docs"] for r in rows})
        ax.set_xticks(ns)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:.3g}M"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("documents (N)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
