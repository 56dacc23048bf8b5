import sys
from pathlib import Path

# `benchmarks` (the fuzzer) lives at the repository root, next to `tests`
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
