"""``aftershock eval``: effectiveness of encoders on BEIR-layout datasets (`aftershock.eval.effectiveness`)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from aftershock.eval.effectiveness import build_parser as _eval_parser

    ev = sub.add_parser("eval", help="evaluate encoders on BEIR-layout datasets (nDCG@10, MRR@10, R@100, R@1000)",
                        description="Encode, index (exact, optionally Seismic), search and score several systems "
                                    "on BEIR folders; one line per system.")
    _eval_parser(ev)
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from aftershock.eval.effectiveness import main as eval_main

    return eval_main(args=args)

