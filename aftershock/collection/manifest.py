"""The manifest: ``manifest-<gen>.json`` written and fsynced, then ``CURRENT`` renamed to name it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aftershock.index.store import fsync_dir

FORMAT = "aftershock-collection"
VERSION = 1


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def commit_manifest(root: Path, manifest: dict) -> None:
    """manifest-<gen>.json written and fsynced, then CURRENT renamed to name it: the atomic switch."""
    name = f"manifest-{manifest['generation']:06d}.json"
    write_atomic(root / name, json.dumps(manifest, indent=1).encode())
    write_atomic(root / "CURRENT", name.encode())
