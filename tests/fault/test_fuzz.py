"""The fast part of the corruption fuzzer (the long one: ``python -m benchmarks.fault --cases 1000``): every
file of a saved exact and Seismic index, corrupted in every way `benchmarks.fault.fuzz` knows, must load
into a named error or into an index that answers right for its data; never a crash, a hang, an unnamed
exception or a wrong answer. Cases run in a worker subprocess, so a segfault fails the test instead of
killing pytest."""

from __future__ import annotations

from benchmarks.fault.fuzz import FAIL, MUTATIONS, failures, fuzz, table


def test_corrupted_indexes_fail_cleanly():
    n = 2 * len(MUTATIONS) * 16  # 288 cases, 16 per (index kind, mutation)
    results = fuzz(n, seed=1, timeout=60.0)
    print(table(results))
    assert len(results) == n
    bad = failures(results)
    assert not bad, "\n".join(str(r) for r in bad[:10])
    outcomes = {r["verify"] for r in results} | {r["noverify"] for r in results}
    assert not outcomes & set(FAIL)
    # the hashes catch every unsigned edit: with verify=True those load only when the bytes did not change meaning
    errors = sum(r["verify"] == "error" for r in results)
    assert errors > 0.8 * n
