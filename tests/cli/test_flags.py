"""Build/search flags are generated from the config dataclasses: one flag per field, the dataclass default in
the help, the help text from seismic.config.FIELD_HELP, choices from FIELD_CHOICES; values reach the config."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

import pytest

from aftershock.cli import build_parser
from aftershock.cli.common import add_config_flags, given
from aftershock.seismic import SearchParams, SeismicConfig
from aftershock.seismic.config import FIELD_CHOICES, FIELD_HELP


def _sub(name: str) -> argparse.ArgumentParser:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command, cls", [("build", SeismicConfig), ("search", SearchParams)])
def test_one_flag_per_config_field(command, cls):
    parser = _sub(command)
    by_dest = {a.dest: a for a in parser._actions}
    for f in fields(cls):
        assert f.name in FIELD_HELP, f"{cls.__name__}.{f.name} has no help text in seismic.config.FIELD_HELP"
        act = by_dest[f.name]
        assert act.option_strings == ["--" + f.name.replace("_", "-")]
        assert act.default is None  # not given = the dataclass default
        assert act.help.startswith(FIELD_HELP[f.name])
        if f.default is not None and f.default is not MISSING:
            assert f"(default {f.default})" in act.help
        assert (tuple(act.choices) if act.choices else None) == FIELD_CHOICES.get(f.name)


def test_given_values_reach_the_config():
    args = _sub("build").parse_args(["--input", "x", "--output", "y", "--n-postings", "50", "--clustering", "kmeans",
                                    "--summary-energy", "0.5"])
    cfg = SeismicConfig().with_(**given(args, [f.name for f in fields(SeismicConfig)]))
    assert (cfg.n_postings, cfg.clustering, cfg.summary_energy) == (50, "kmeans", 0.5)
    assert cfg.doc_cut == SeismicConfig().doc_cut
    args = _sub("search").parse_args(["--index", "i", "--queries", "q", "--output", "o", "--heap-factor", "0.5"])
    p = SearchParams().with_(**given(args, [f.name for f in fields(SearchParams)]))
    assert (p.heap_factor, p.query_cut, p.threads) == (0.5, SearchParams().query_cut, None)


def test_bad_choice_and_type_exit_2(capsys):
    from aftershock.cli import main

    assert main(["build", "--input", "x", "--output", "y", "--pruning", "sometimes"]) == 2
    assert main(["build", "--input", "x", "--output", "y", "--n-postings", "many"]) == 2
    assert "invalid" in capsys.readouterr().err


def test_defaults_mode_for_benchmarks():
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    names = add_config_flags(p, SeismicConfig, ("n_postings", "doc_cut"), defaults=True)
    assert names == ["n_postings", "doc_cut"]
    a = p.parse_args([])
    assert (a.n_postings, a.doc_cut) == (SeismicConfig().n_postings, SeismicConfig().doc_cut)
    assert "(default 3500)" in " ".join(p.format_help().split())
