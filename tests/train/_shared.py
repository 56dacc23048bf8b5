"""Paths of the read-only shared data (the repository sits next to ``shared/``); tests skip without it."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODEL = SHARED / "models" / "splade-tiny"
DATA = SHARED / "data"
VECTORS = SHARED / "vectors" / "splade-tiny"

needs_model = pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(), reason="shared/models/splade-tiny absent")
needs_data = pytest.mark.skipif(not (DATA / "adi" / "corpus.jsonl.gz").is_file(), reason="shared/data absent")
