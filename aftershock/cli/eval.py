"""``aftershock eval``: effectiveness of encoders on BEIR-layout datasets (`aftershock.eval.effectiveness`)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from aftershock.eval.effectiveness import build_parser as _eval_parser

    ev = sub.add_parser("eval", help="evaluate encoders on BEIR-layout datasets (nDCG@10, MRR@10, R@100, R@1000)",
                        description="Encode, index (exact, optionally Seismic), search and score several systems "
                                    "on BEIR folders; one line per system.")
    _eval_parser(ev)
    ev.set_defaults(func=cmd_eval)


def check_systems(text: str) -> None:
    """Refuse an unknown system before any system runs (a typo in the last one must not cost the first ones'
    minutes)."""
    from pathlib import Path

    from aftershock.errors import ConfigError
    from aftershock.eval.hybrid import parse_hybrid

    names = []
    for s in (x.strip() for x in str(text).split(",")):
        parts = parse_hybrid(s) if s else None  # A+B[:method]: check both components
        names += list(parts[:2]) if parts else [s]
    for s in names:
        if not s or s.lower() in ("bm25", "bm25s", "default"):
            continue
        path = s.split(":", 1)[1] if s.lower().startswith(("idf:", "binary:")) else s
        hub_like = path.count("/") == 1 and not path.startswith((".", "/", "~"))  # may be in the local HF cache
        if not Path(path).is_dir() and not hub_like:
            raise ConfigError(f"--systems: {s!r} is neither a built-in system (bm25, bm25s, default) nor a model "
                              f"directory ({path} does not exist); idf:DIR and binary:DIR take a tokenizer directory")


def cmd_eval(args) -> int:
    from aftershock.eval.effectiveness import main as eval_main

    check_systems(args.systems)
    return eval_main(args=args)

