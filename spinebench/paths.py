"""Where spinebench keeps generated things: cache (synthetic/hybrid renders), runs, results, weights.

``SPINEBENCH_CACHE`` overrides the cache folder (default ``~/.cache/spinebench``). Nothing here is in git.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """A folder under the spinebench cache, created on demand."""
    root = Path(os.environ.get("SPINEBENCH_CACHE") or Path.home() / ".cache" / "spinebench")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout this package runs from (for default runs/, results/, weights/ folders)."""
    return Path(__file__).resolve().parent.parent


def default_aasce_path() -> Path:
    """The shared development copy of AASCE 2019 (tests skip when it is absent)."""
    env = os.environ.get("SPINEBENCH_AASCE")
    return Path(env) if env else repo_root().parent / "shared" / "data" / "aasce2019"
