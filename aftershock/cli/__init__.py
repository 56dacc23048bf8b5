"""The ``aftershock`` console script: ``build``, ``search``, ``demo``, ``bench``, ``encode``, ``eval``,
``serve``, ``train-data`` and ``train`` subcommands, one module per command group:

* `aftershock.cli.index`: build, search (flags generated from SeismicConfig / SearchParams)
* `aftershock.cli.demo`: demo;  `aftershock.cli.encode`: encode;  `aftershock.cli.eval`: eval
* `aftershock.cli.train`: train-data, train;  `aftershock.cli.serve`: serve;  `aftershock.cli.bench`: bench
* `aftershock.cli.common`: error handling, argument types, config-driven flags
* `aftershock.cli.extras`: which pip extra each command needs (missing -> exit 2 with the install hint)
* `aftershock.cli.output`: output files written to a temporary name and renamed on success; compile notices

`main(argv)` returns an exit status and never raises for user errors: an `AftershockError` (or a
missing file) is printed as ``aftershock: error: <message>`` on stderr, with exit status 2.
Command modules import heavy dependencies (torch, FastAPI, ir-measures) only when their command runs.
"""

from __future__ import annotations

import argparse
import sys

from aftershock import __version__
from aftershock.cli import bench, demo, encode, eval as eval_cmd, index, serve, train
from aftershock.cli import collection  # aftershock collection create / upsert / delete / optimize / info / search
from aftershock.cli import extras
from aftershock.cli.common import PROG, error, guarded

GROUPS = (index, demo, encode, eval_cmd, serve, train, bench, collection)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Aftershock: learned sparse retrieval with a "
                                "Seismic-style approximate index (Numba CPU kernels).")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def call():
        if argv and argv[0] == "bench":  # everything after the suite name belongs to the suite
            return bench.dispatch(argv[1:])
        args = build_parser().parse_args(argv)
        problem = extras.check(args)  # a missing extra: say which to install before any work is done
        if problem:
            return error(problem)
        try:
            return args.func(args)
        except ImportError as e:
            msg = extras.from_import_error(args.command, e)
            if msg is None:
                raise
            return error(msg)

    return guarded(call)


def run() -> None:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())


__all__ = ["main", "run", "build_parser"]
