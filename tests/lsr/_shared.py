"""Paths of the models and data the encoder tests use. With the read-only shared data next to the repository
(``../shared``) they are SPLADE-tiny and the shared BEIR folders; on a clone without it they are stand-ins
made from what the package ships, so a clone alone runs these tests:

- ``MODEL``: the shipped model's BERT-tiny document encoder as a plain Hugging Face masked-LM directory
  (its ``config.json``, weights and tokenizer, without ``aftershock_encoder.json``);
- ``DATA / "adi"`` and ``DATA / "scifact"``: small BEIR folders made from the bundled Cranfield collection
  (titles as texts, its qrels as test and train qrels).

``REAL_MODEL`` / ``REAL_DATA`` say which one is in use; ``needs_real_model`` / ``needs_real_data`` skip the
few tests that check facts of SPLADE-tiny or of the shared collections themselves.
"""

import gzip
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PACKAGE = Path(__file__).resolve().parents[2] / "aftershock"
VECTORS = SHARED / "vectors" / "splade-tiny"
REAL_MODEL = (SHARED / "models" / "splade-tiny" / "model.safetensors").is_file()
REAL_DATA = (SHARED / "data" / "adi" / "corpus.jsonl.gz").is_file()


def _stand_in_root() -> Path:
    key = hashlib.sha1(str(PACKAGE).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"aftershock-test-stand-ins-{key}"


def _stand_in_model() -> Path:
    src = PACKAGE / "models" / "default"
    out = _stand_in_root() / "masked-lm"
    names = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not all((out / n).is_file() for n in names) or not all(
            (out / n).stat().st_size == (src / n).stat().st_size for n in names if n != "config.json"):
        tmp = Path(tempfile.mkdtemp(dir=_mk(out.parent)))
        for n in names:
            shutil.copyfile(src / n, tmp / n)
        config = json.loads((src / "config.json").read_text())
        config.update({k: "float32" for k in ("dtype", "torch_dtype") if k in config})  # fp16 weights, fp32 model
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def _stand_in_data() -> Path:
    """``adi/`` (test qrels) and ``scifact/`` (train and test qrels), both the bundled Cranfield titles."""
    src = PACKAGE / "data" / "cranfield"
    root = _stand_in_root() / "data"
    for name, splits in (("adi", ("test",)), ("scifact", ("train", "test"))):
        folder = root / name
        if (folder / "corpus.jsonl.gz").is_file():
            continue
        tmp = Path(tempfile.mkdtemp(dir=_mk(root)))
        (tmp / "qrels").mkdir()
        with open(src / "titles.tsv", encoding="utf-8") as f, gzip.open(tmp / "corpus.jsonl.gz", "wt") as out:
            for line in f:
                did, _, text = line.rstrip("\n").partition("\t")
                out.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
        shutil.copyfile(src / "queries.jsonl", tmp / "queries.jsonl")
        for split in splits:
            shutil.copyfile(src / "qrels" / "test.tsv", tmp / "qrels" / f"{split}.tsv")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return root


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


MODEL = SHARED / "models" / "splade-tiny" if REAL_MODEL else _stand_in_model()
DATA = SHARED / "data" if REAL_DATA else _stand_in_data()

needs_model = pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(), reason="no masked-LM model directory")
needs_data = pytest.mark.skipif(not (DATA / "adi" / "corpus.jsonl.gz").is_file(), reason="no BEIR test folder")
needs_real_model = pytest.mark.skipif(not REAL_MODEL, reason="checks facts of SPLADE-tiny itself: needs "
                                      "../shared/models/splade-tiny")
needs_real_data = pytest.mark.skipif(not REAL_DATA, reason="checks facts of the shared collections: needs "
                                     "../shared/data")
