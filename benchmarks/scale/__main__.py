"""``python -m benchmarks.scale ...`` (same as ``aftershock bench scale ...``)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: put the checkout on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.scale import main

sys.exit(main(sys.argv[1:]))
