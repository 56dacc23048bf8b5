"""Transformer encoders: `TransformerEncoder` (the batching loop shared by every transformer encoder)
and `Splade` (masked-LM head, expansion)."""

from __future__ import annotations

from pathlib import Path

from aftershock.errors import ConfigError, ModelFormatError
from aftershock.lsr.base import SparseEncoder
from aftershock.lsr.hf import (assemble, autocast, length_order, load_tokenizer, model_dir, model_max_length,
                               resolve_device, resolve_dtype, sparsify, tokenized_batches, tokenizer_vocab)

POOLINGS = ("max", "sum")
LONG_POLICIES = ("truncate", "passages")
META_FILE = "aftershock_encoder.json"


def _segment(x, op: str, lengths):
    """Reduce consecutive row segments of ``x`` (N, C) -> (len(lengths), C) by ``op`` (max or sum)."""
    import torch

    try:
        return torch.segment_reduce(x, op, lengths=lengths, axis=0)
    except (RuntimeError, NotImplementedError):  # a backend/dtype without segment_reduce
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=x.device), lengths)
        out = torch.zeros(lengths.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
        if op == "max":
            out.fill_(float("-inf"))
        return out.scatter_reduce_(0, rows[:, None].expand_as(x), x, "amax" if op == "max" else "sum")


class TransformerEncoder(SparseEncoder):
    """Common loop: sort by length, tokenize in a background thread, run the model (bf16 autocast
    on GPU by default), pool to (batch, vocab) on the device, sparsify on the device."""

    on_batch = None  # optional callable(n_texts) after each model batch (a caller's progress bar)

    def __init__(self, path, device: str = "cpu", batch_size: int = 32, query_max_length: int | None = None,
                 doc_max_length: int | None = None, top_k: int | None = None, threshold: float = 0.0,
                 long_documents: str = "truncate", stride: int = 0, dtype: str = "auto", progress: bool = False,
                 errors: str = "replace"):
        super().__init__(batch_size, query_max_length, doc_max_length, progress, errors)
        if long_documents not in LONG_POLICIES:
            raise ConfigError(f"long_documents={long_documents!r}; use 'truncate' or 'passages'")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k={top_k} must be >= 1 (or None for no top-k pruning)")
        if threshold < 0:
            raise ConfigError(f"threshold={threshold} must be >= 0")
        self.path = model_dir(path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.top_k, self.threshold = top_k, float(threshold)
        self.long_documents, self.stride = long_documents, int(stride)
        self.tokenizer = load_tokenizer(self.path)
        self.name = self.path.name

    def _limit(self, side: str) -> int:
        limit = model_max_length(self.tokenizer, getattr(self, "config", None))
        ml = self.max_length(side)
        if ml is not None and ml > limit:
            raise ConfigError(f"{side} max length {ml} exceeds the model's limit of {limit} tokens; use <= {limit} "
                              "(long documents: long_documents='passages')")
        return ml or limit

    def _encode(self, texts, side):
        import torch
        from tqdm.auto import tqdm

        passages = side == "document" and self.long_documents == "passages"
        order = length_order(texts)
        parts = []
        bar = tqdm(total=len(texts), unit="query" if side == "query" else "doc",
                   desc="encode queries" if side == "query" else "encode documents", disable=not self.progress)
        with torch.inference_mode():
            for pos, enc in tokenized_batches(self.tokenizer, texts, order, self.batch_size, self._limit(side),
                                              passages=passages, stride=self.stride):
                ids = enc["input_ids"].to(self.device, non_blocking=True)
                mask = enc["attention_mask"].to(self.device, non_blocking=True)
                with autocast(self.device, self.dtype):
                    out = self._pool(ids, mask)
                if passages:  # max over the windows of each document
                    sample = enc["overflow_to_sample_mapping"].to(self.device)
                    out = torch.zeros(len(pos), out.shape[1], dtype=out.dtype, device=self.device).scatter_reduce_(
                        0, sample[:, None].expand_as(out), out, "amax")
                parts.append((pos, *sparsify(out, self.top_k, self.threshold)))
                bar.update(len(pos))
                if self.on_batch is not None:
                    self.on_batch(len(pos))
        bar.close()
        return assemble(len(texts), parts)

    def _pool(self, ids, mask):
        raise NotImplementedError


class Splade(TransformerEncoder):
    """SPLADE over any Hugging Face masked-LM directory.

    w[t] = pool over non-padding tokens i of log(1 + relu(logit[i, t])), pool = ``max`` or ``sum``.
    The vocabulary projection runs ``vocab_chunk`` columns at a time (by default chunks of at most
    ``chunk_bytes``: 128 MiB on CPU, a quarter of the free memory on a GPU), so on long inputs the
    full batch x length x vocabulary tensor is never held at once; on CPU only the non-padding tokens
    are projected (``pack``). For max pooling the activation is applied after the max (it is
    monotone, so the result is the same) and only (batch, vocab) is kept.
    """

    def __init__(self, path, device: str = "cpu", pooling: str = "max", vocab_chunk: int | None = None,
                 chunk_bytes: int | None = None, pack: bool | None = None, **kw):
        super().__init__(path, device=device, **kw)
        import torch
        from transformers import AutoModelForMaskedLM

        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r}; use 'max' or 'sum'")
        if vocab_chunk is not None and vocab_chunk < 1:
            raise ConfigError(f"vocab_chunk={vocab_chunk} must be >= 1")
        self.pooling, self.vocab_chunk = pooling, vocab_chunk
        if chunk_bytes is None:
            chunk_bytes = torch.cuda.mem_get_info(self.device)[0] // 4 if self.device.type == "cuda" else 128 << 20
        self.chunk_bytes = int(chunk_bytes)
        # pack=True: only real tokens are projected (fastest on CPU); pack=False: the padded batch is
        # projected as one (batch, length, vocab) product when it fits, exactly as sentence-transformers
        # does, which on a GPU keeps the vectors bit-identical to it (the GPU has the bandwidth to spare)
        self.pack = self.device.type != "cuda" if pack is None else bool(pack)
        try:
            self.model = AutoModelForMaskedLM.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{self.path} is not a Hugging Face masked-LM directory ({e}); SPLADE needs "
                                   "config.json with a *ForMaskedLM architecture and its weights") from None
        self.config = self.model.config
        self.model.eval().to(self.device)
        # the output projection (hidden -> vocabulary) is applied by us, chunk by chunk
        decoder = self.model.get_output_embeddings()
        self._decoder = decoder
        self.weight, self.bias = decoder.weight, decoder.bias
        if self.bias is None:
            self.bias = torch.zeros(self.weight.shape[0], device=self.device)
        self._swap_decoder(torch.nn.Identity())
        self.vocab = tokenizer_vocab(self.tokenizer)
        if len(self.vocab) != self.weight.shape[0]:
            raise ModelFormatError(f"{self.path}: the tokenizer has {len(self.vocab)} tokens but the model's output "
                                   f"layer {self.weight.shape[0]}; they must be the same vocabulary")

    def _swap_decoder(self, new):
        if not hasattr(self, "_slot"):
            self._slot = next(((mod, name) for mod in self.model.modules() for name, child in mod.named_children()
                               if child is self._decoder), None)
            if self._slot is None:
                raise ModelFormatError(f"{self.path}: cannot find the output projection of the masked-LM head")
        setattr(*self._slot, new)

    def _pool(self, ids, mask):
        import torch

        hidden = self.model(input_ids=ids, attention_mask=mask).logits  # (B, L, H): the head before projection
        keep = mask.bool()
        B, V = ids.shape[0], self.weight.shape[0]
        elem = 2 if self.dtype == "bf16" else 4
        if self.pack:  # (N, H) real tokens, contiguous per text
            lengths = keep.sum(1)
            hidden = hidden[keep]
        rows = hidden.shape[0] * (1 if self.pack else hidden.shape[1])
        chunk = self.vocab_chunk or max(256, self.chunk_bytes // max(rows * elem, 1))
        pad = None if self.pack else ~keep[:, :, None]
        out = None
        for c in range(0, V, chunk):
            logits = torch.nn.functional.linear(hidden, self.weight[c:c + chunk], self.bias[c:c + chunk])
            if self.pooling == "max":  # log1p(relu(.)) is monotone: apply it after the max, on (B, V) only
                part = _segment(logits, "max", lengths) if self.pack else logits.masked_fill_(pad, -torch.inf).amax(1)
            else:
                act = logits.relu_().log1p_()
                part = _segment(act, "sum", lengths) if self.pack else act.masked_fill_(pad, 0).sum(1)
            if out is None:
                out = torch.empty(B, V, dtype=part.dtype, device=part.device)
            out[:, c:c + chunk] = part
        if self.pooling == "max":
            # in place, so the result keeps the logits' dtype (bf16 under autocast) as sentence-transformers'
            # SpladePooling does; out-of-place log1p would be promoted to fp32 by CUDA autocast
            out = out.relu_().log1p_()
        return out

    def save_pretrained(self, path) -> Path:
        """Write the masked-LM model and tokenizer (Hugging Face layout) to ``path``."""
        path = Path(path)
        self._swap_decoder(self._decoder)
        try:
            self.model.save_pretrained(str(path))
        finally:
            self._swap_decoder(__import__("torch").nn.Identity())
        self.tokenizer.save_pretrained(str(path))
        return path
