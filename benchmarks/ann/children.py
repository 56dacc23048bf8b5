"""One child process per system: fork (or spawn) it, run the system, send back its result and peak RSS."""

from __future__ import annotations

import os
import sys
import traceback

from .common import _peak_rss_kb, _rss_now_kb, load_data
from .peers import _child_bmp, _child_seismic
from .systems import _child_aftershock, _child_exact

_CHILDREN = {"exact": _child_exact, "aftershock": _child_aftershock, "seismic": _child_seismic, "bmp": _child_bmp}


def _child_entry(conn, job, data) -> None:
    """Runs in the child: (re)load the data if it was not inherited, run the system, send the result."""
    try:
        rss_start = _rss_now_kb()
        if data is None:
            data = load_data(job["load"])
            rss_start = _rss_now_kb()
        docs, queries = data
        out = _CHILDREN[job["kind"]](job, docs, queries)
        out["rss_start_kb"] = rss_start
        out["peak_rss_kb"] = _peak_rss_kb()
        conn.send(out)
    except BaseException as e:  # noqa: BLE001 - report anything (a Rust panic is a BaseException)
        try:
            conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def _numba_threads_running() -> bool:
    try:
        from numba.np.ufunc import parallel

        return bool(getattr(parallel, "_is_initialized", False))
    except Exception:  # noqa: BLE001
        return False


def _run_child(ctx, job, data) -> dict:
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(child_conn, job, data if ctx.get_start_method() == "fork" else None),
                       name=f"bench-{job['name']}")
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
    if out is None:
        out = {"error": f"the child process died without a result (exit code {proc.exitcode})"}
    return out
