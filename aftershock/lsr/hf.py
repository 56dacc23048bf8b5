"""Shared plumbing for encoders that run a Hugging Face transformer: device/dtype choice, local-only
loading, length-sorted batching with tokenization pipelined in a background thread, and the on-device
dense -> sparse conversion (only the non-zeros cross to the host)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from aftershock.errors import BackendUnavailableError, ConfigError, ModelFormatError
from aftershock.index import Vocabulary

DTYPES = ("auto", "bf16", "fp32")


def resolve_device(device: str | None):
    import torch

    device = (device or "cpu").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device={device!r} but torch sees no CUDA GPU (torch {torch.__version__}); "
                                          "use device='cpu' or 'auto'")
        return torch.device(device)
    if device != "cpu":
        raise ConfigError(f"device={device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return dtype


def autocast(device, dtype: str):
    import torch

    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_dir(path) -> Path:
    """A local directory (or a hub name already in the local Hugging Face cache); never downloads."""
    p = Path(path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path), local_files_only=True))
    except Exception:
        raise ModelFormatError(f"model {str(path)!r} is not a local directory and not in the local Hugging Face "
                               "cache; Aftershock never downloads: pass the path of a model directory") from None


class RustTokenizer:
    """The part of a transformers fast tokenizer that static (inference-free) encoders use, read straight
    from ``tokenizer.json`` with the `tokenizers` package: text queries of an inference-free model then
    need neither transformers nor torch (``pip install 'aftershock[query]'``)."""

    is_fast = True

    def __init__(self, path):
        from tokenizers import Tokenizer

        path = Path(path)
        self.backend_tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        cfg_file = path / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        self.model_max_length = cfg.get("model_max_length") or 512
        vocab = self.backend_tokenizer.get_vocab(with_added_tokens=True)
        names = [cfg.get(k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
                                      "bos_token", "eos_token")]
        names = [n.get("content") if isinstance(n, dict) else n for n in names]
        special = {vocab[n] for n in names if isinstance(n, str) and n in vocab}
        info = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        special |= {t["id"] for t in info.get("added_tokens", []) if t.get("special")}
        self.all_special_ids = sorted(special)
        pad = cfg.get("pad_token")
        self.pad_token = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token_id = vocab.get(self.pad_token) if self.pad_token else None

    def get_vocab(self) -> dict:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts, add_special_tokens=True, truncation=True, max_length=None, **_):
        rt = copy.deepcopy(self.backend_tokenizer)
        rt.no_padding()
        if truncation:
            rt.enable_truncation(max_length=max_length or self.model_max_length)
        return {"input_ids": [e.ids for e in rt.encode_batch(list(texts), add_special_tokens=add_special_tokens)]}


def load_tokenizer(path, static: bool = False):
    """The fast tokenizer of ``path`` (transformers); with ``static=True`` and transformers not installed, a
    `RustTokenizer` over its tokenizer.json (enough for the static encoders)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        if static and (Path(path) / "tokenizer.json").is_file():
            return RustTokenizer(path)
        raise

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot load a tokenizer from {path}: {e}; the directory needs tokenizer.json "
                               "(or vocab.txt) and tokenizer_config.json") from None
    if not getattr(tok, "is_fast", False):
        raise ModelFormatError(f"the tokenizer in {path} is a slow (Python) tokenizer; Aftershock needs a fast one "
                               "(save it with tokenizer.json)")
    return tok


def tokenizer_vocab(tok) -> Vocabulary:
    """Vocabulary in id order; ids the tokenizer never produces get a placeholder name."""
    table = tok.get_vocab()
    n = max(len(tok), max(table.values()) + 1)
    tokens = [f"[unused_id_{i}]" for i in range(n)]
    for t, i in table.items():
        tokens[i] = t
    return Vocabulary(tokens)


def model_max_length(tok, config=None) -> int:
    """The tokenizer's limit (512 when it has none), capped by the model's position embeddings."""
    limit = getattr(tok, "model_max_length", None)
    limit = limit if limit and limit < 100_000 else 512
    pos = getattr(config, "max_position_embeddings", None) if config is not None else None
    return int(min(limit, pos) if pos else limit)


def length_order(texts: list[str]) -> np.ndarray:
    """Longest first by character length, so batches of similar lengths pad little. The very call
    sentence-transformers makes (``np.argsort`` of minus the lengths), so with the same batch size
    both form the same batches and give bit-identical vectors."""
    return np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)))


def rust_tokenizer(tok, max_length: int):
    """A copy of the fast tokenizer's Rust backend that truncates and pads by itself, so a batch comes
    back as equal-length id lists (no per-token Python work). Same ids and mask as ``tok(...)``."""
    from tokenizers import Tokenizer

    rt = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    rt.enable_truncation(max_length=max_length, direction=getattr(tok, "truncation_side", "right"))
    rt.enable_padding(direction=getattr(tok, "padding_side", "right"), pad_id=tok.pad_token_id or 0,
                      pad_type_id=getattr(tok, "pad_token_type_id", 0), pad_token=tok.pad_token or "[PAD]")
    return rt


def tokenized_batches(tok, texts: list[str], order: np.ndarray, batch_size: int, max_length: int,
                      passages: bool = False, stride: int = 0, add_special_tokens: bool = True,
                      prefetch: int = 2) -> Iterator[tuple[np.ndarray, dict]]:
    """Yield ``(positions, encoding)`` per batch of ``order``, in order; the next batches are
    tokenized by background threads (up to 8, each with its own Rust tokenizer, which releases the
    GIL) while the caller runs the model.
    ``encoding`` holds ``input_ids`` and ``attention_mask`` (int64 tensors, pinned when CUDA is
    present) and, with ``passages``, ``overflow_to_sample_mapping``."""
    import torch

    fast = not passages and tok.pad_token_id is not None
    local = threading.local()

    def work(sel):
        batch = [texts[i] for i in sel]
        if fast:  # one Rust tokenizer per worker thread; the Rust call releases the GIL
            rt = getattr(local, "rt", None)
            if rt is None:
                rt = local.rt = rust_tokenizer(tok, max_length)
            encs = getattr(rt, "encode_batch_fast", rt.encode_batch)(batch, add_special_tokens=add_special_tokens)
            enc = {"input_ids": torch.from_numpy(np.array([e.ids for e in encs], dtype=np.int64)),
                   "attention_mask": torch.from_numpy(np.array([e.attention_mask for e in encs], dtype=np.int64))}
        else:
            kw = dict(padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                      add_special_tokens=add_special_tokens, return_token_type_ids=False)
            if passages:
                kw.update(return_overflowing_tokens=True, stride=stride)
            enc = dict(tok(batch, **kw))
        if _cuda_ok():
            for key in ("input_ids", "attention_mask"):
                enc[key] = enc[key].pin_memory()
        return sel, enc

    if prefetch <= 0:  # no thread (profiling)
        for s in range(0, len(order), batch_size):
            yield work(order[s:s + batch_size])
        return
    workers = min(8, os.cpu_count() or 1) if fast else 1
    depth = max(prefetch, 2 * workers)
    starts = iter(range(0, len(order), batch_size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aftershock-tokenize") as pool:
        pending = [pool.submit(work, order[s:s + batch_size]) for _, s in zip(range(depth), starts)]
        while pending:
            fut = pending.pop(0)
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(work, order[nxt:nxt + batch_size]))
            yield fut.result()


_CUDA = None


def _cuda_ok() -> bool:
    global _CUDA
    if _CUDA is None:
        import torch

        _CUDA = torch.cuda.is_available()
    return _CUDA


def sparsify(out, top_k: int | None, threshold: float):
    """(B, V) non-negative device tensor -> (row counts, column ids, values) as host numpy arrays.

    Keeps weights > ``threshold`` and, with ``top_k``, only each row's ``top_k`` heaviest; the
    selection and the nonzero scan run on the device, only the survivors are copied to the host.
    """
    import torch

    if top_k is not None and top_k < out.shape[1]:
        top = out.topk(top_k, dim=1).indices
        keep = torch.zeros_like(out, dtype=torch.bool).scatter_(1, top, True)
        out = out.masked_fill(~keep, 0)
    nz = (out > threshold).nonzero()
    vals = out[nz[:, 0], nz[:, 1]].float()
    counts = torch.bincount(nz[:, 0], minlength=out.shape[0])
    return counts.cpu().numpy(), nz[:, 1].to(torch.int32).cpu().numpy(), vals.cpu().numpy()


def assemble(n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]):
    """Per-batch ``(positions, counts, cols, vals)`` -> CSR arrays in the original text order."""
    from aftershock.lsr.base import reorder_rows

    if not parts:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    pos = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts]).astype(np.int64)
    cols = np.concatenate([p[2] for p in parts]).astype(np.int32, copy=False)
    vals = np.concatenate([p[3] for p in parts]).astype(np.float32, copy=False)
    indptr = np.zeros(len(pos) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if np.array_equal(pos, np.arange(n)):
        return indptr, cols, vals
    inverse = np.empty(n, np.int64)
    inverse[pos] = np.arange(n)
    return reorder_rows(indptr, cols, vals, inverse)
