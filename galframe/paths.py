"""Where galframe keeps what it caches: simulated datasets, model weights, wheels."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$GALFRAME_CACHE`` if set, else ``~/.cache/galframe`` (created on demand)."""
    root = os.environ.get("GALFRAME_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "galframe"
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    path = cache_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path
