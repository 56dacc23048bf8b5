"""Corruption fuzzing of saved indexes: ``python -m benchmarks.fault --cases 1000`` (see `fuzz`)."""
