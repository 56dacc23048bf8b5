"""One child process per system: fork (or spawn) it, run the system, send back its result and peak RSS."""

from __future__ import annotations

import os
import sys
import traceback

from .common import _peak_rss_kb, _rss_now_kb, load_data
from .peers import _child_bmp, _child_seismic
from .systems import _child_aftershock, _child_exact

_CHILDREN = {"exact": _child_exact, "aftershock": _child_aftershock, "seismic": _child_seismic, "bmp": _child_bmp}


def send_result(conn, work) -> None:
    """Send ``work()``'s result through ``conn``, or the error and its traceback if it raised; close ``conn``."""
    try:
        conn.send(work())
    except BaseException as e:  # noqa: BLE001 - report anything (a Rust panic is a BaseException)
        try:
            conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def _child_entry(conn, job, data) -> None:
    """Runs in the child: (re)load the data if it was not inherited, run the system, send the result."""

    def work() -> dict:
        rss_start = _rss_now_kb()
        loaded = data
        if loaded is None:
            loaded = load_data(job["load"])
            rss_start = _rss_now_kb()
        docs, queries = loaded
        out = _CHILDREN[job["kind"]](job, docs, queries)
        out["rss_start_kb"] = rss_start
        out["peak_rss_kb"] = _peak_rss_kb()
        return out

    send_result(conn, work)


def _numba_threads_running() -> bool:
    try:
        from numba.np.ufunc import parallel

        return bool(getattr(parallel, "_is_initialized", False))
    except Exception:  # noqa: BLE001
        return False


def run_process(ctx, target, args: tuple, name: str) -> tuple[dict | None, int | None]:
    """Start ``target(conn, *args)`` in a child of ``ctx``; (what it sent through ``conn``, or None if it died
    first; its exit code)."""
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(child_conn, *args), name=name)
    main_mod = sys.modules.get("__main__")
    main_file = getattr(main_mod, "__file__", None)
    hide = ctx.get_start_method() != "fork" and main_file is not None and not os.path.isfile(main_file)
    if hide:  # e.g. `python - < script`: spawn would try to re-run "<stdin>" in the child
        del main_mod.__file__
    try:
        proc.start()
    finally:
        if hide:
            main_mod.__file__ = main_file
    child_conn.close()
    try:
        out = parent_conn.recv()
    except EOFError:
        out = None
    finally:
        parent_conn.close()
    proc.join()
    return out, proc.exitcode


def _run_child(ctx, job, data) -> dict:
    out, code = run_process(ctx, _child_entry, (job, data if ctx.get_start_method() == "fork" else None),
                            f"bench-{job['name']}")
    if out is None:
        out = {"error": f"the child process died without a result (exit code {code})"}
    return out
