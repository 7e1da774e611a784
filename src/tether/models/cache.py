"""Where Tether keeps converted weights: ``$TETHER_CACHE`` or ``~/.cache/tether``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("TETHER_CACHE") or Path.home() / ".cache" / "tether")
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_fingerprint(path: Path, *, chunk: int = 4 << 20) -> str:
    """sha256 over size + head + tail (whole file when small): cheap for GB checkpoints, and any
    retrained or re-quantised weights change it in practice."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with path.open("rb") as handle:
        if size <= 4 * chunk:
            digest.update(handle.read())
        else:
            digest.update(handle.read(chunk))
            handle.seek(size // 2)
            digest.update(handle.read(chunk))
            handle.seek(size - chunk)
            digest.update(handle.read(chunk))
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def directory_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.is_file() and (item.suffix in WEIGHT_SUFFIXES or item.name.endswith("config.json")):
            digest.update(item.name.encode())
            digest.update(file_fingerprint(item).encode())
    return digest.hexdigest()
