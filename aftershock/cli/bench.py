"""``aftershock bench SUITE [ARGS...]``: run a benchmark driver of the source checkout.

The drivers live outside the package, in ``benchmarks/<suite>/`` beside ``aftershock/`` (or in the folder
named by the environment variable ``AFTERSHOCK_BENCHMARKS``); a pip-installed Aftershock without the
repository has none, and the command says so (exit status 2). Everything after the suite name goes to the
suite's ``main(argv)`` untouched.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from aftershock.cli.common import PROG, error
from aftershock.errors import ConfigError

SUITES = {"ann": "recall / latency / memory of ANN indexes (Aftershock, pyseismic-lsr, BMP) against exact search",
          "scale": "lexicon grown to N docs: build time, memory, latency vs N (Aftershock and pyseismic-lsr)"}
ENV = "AFTERSHOCK_BENCHMARKS"


def add_parsers(sub) -> None:
    be = sub.add_parser("bench", help="benchmarks of the source checkout: `aftershock bench ann --help`",
                        description="Run a benchmark suite of the source checkout; the remaining arguments go to "
                                    "the suite.")
    be.add_argument("suite", choices=list(SUITES), help="; ".join(f"{k}: {v}" for k, v in SUITES.items()))
    be.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the suite")
    be.set_defaults(func=lambda a: dispatch([a.suite, *a.args]))


def benchmarks_dir() -> Path:
    """``$AFTERSHOCK_BENCHMARKS`` or ``benchmarks/`` beside the ``aftershock`` package (a source checkout)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).resolve()
    import aftershock

    return Path(aftershock.__file__).resolve().parents[1] / "benchmarks"


def load_suite(suite: str):
    """The driver module ``benchmarks.<suite>`` of the checkout (imported with the checkout on sys.path)."""
    folder = benchmarks_dir()
    if not (folder / suite / "__init__.py").is_file():
        raise ConfigError(f"the '{suite}' benchmark driver is not installed with the package: it lives in the "
                          f"source checkout (benchmarks/{suite}/ beside aftershock/), and {folder / suite} does not "
                          f"exist. Clone the repository and run it there (pip install -e '.[bench]'), or set "
                          f"{ENV}=/path/to/checkout/benchmarks")
    root = str(folder.parent)
    name = f"{folder.name}.{suite}"
    mod = sys.modules.get(name)
    if mod is None:
        if root not in sys.path:
            sys.path.insert(0, root)
        mod = importlib.import_module(name)
    return mod


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        lines = "\n".join(f"  {k:<5} {v}" for k, v in SUITES.items())
        print(f"usage: {PROG} bench {{{','.join(SUITES)}}} [ARGS...]\n\n{lines}\n\n"
              f"`{PROG} bench ann --help` lists the options of a suite. The drivers live in the source checkout "
              "(benchmarks/).", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    suite, rest = argv[0], argv[1:]
    if suite not in SUITES:
        raise ConfigError(f"unknown benchmark suite {suite!r}; available: {', '.join(SUITES)}")
    try:
        module = load_suite(suite)
    except ImportError as e:
        return error(f"the '{suite}' benchmark cannot start: {e}. Install the benchmark extras "
                     "(pip install -e '.[bench]') in the source checkout.")
    if not hasattr(module, "main"):
        return error(f"{module.__name__} has no main(argv) function")
    rc = module.main(rest)
    return rc if isinstance(rc, int) else 0
