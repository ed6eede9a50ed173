"""Where the demo's weights come from: a local folder, or a Hugging Face Hub repository (``spinebench.hub``).

Nothing here trains: a deployment without weights is told so. Training on demand, when the demo wants it, lives in
``app.py`` (inference never imports training orchestration).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spinebench.errors import SpinebenchError
from spinebench.weights import trained_records

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "SPINEBENCH_WEIGHTS_DIR"    # a local folder holding manifest.json + weights files
WEIGHTS_REPO_ENV = "SPINEBENCH_WEIGHTS_REPO"  # a Hugging Face Hub model repository with the same files
WEIGHTS_REVISION_ENV = "SPINEBENCH_WEIGHTS_REVISION"


def default_weights_dir() -> Path:
    from spinebench.paths import repo_root

    return Path(os.environ.get(WEIGHTS_DIR_ENV) or repo_root() / "weights")


def find_weights(weights_dir: str | os.PathLike | None = None, *, hub_repo: str | None = None,
                 revision: str | None = None) -> Path | None:
    """A folder with trained models: ``weights_dir`` (default ``$SPINEBENCH_WEIGHTS_DIR`` or ``<repo>/weights``)
    when it holds some, else the snapshot of the Hub repository ``hub_repo`` (default ``$SPINEBENCH_WEIGHTS_REPO``,
    revision ``$SPINEBENCH_WEIGHTS_REVISION``); None when there is neither.

    Raises SpinebenchError when a Hub repository is named but cannot be had or holds no trained model.
    """
    from spinebench.hub import download_weights

    wdir = Path(weights_dir) if weights_dir else default_weights_dir()
    if wdir.is_dir() and trained_records(wdir):
        return wdir
    hub_repo = hub_repo or os.environ.get(WEIGHTS_REPO_ENV) or None
    if not hub_repo:
        return None
    from spinebench.hub import parse_hub_spec

    repo, rev = parse_hub_spec(hub_repo)
    folder = download_weights(repo, revision or rev or os.environ.get(WEIGHTS_REVISION_ENV) or None)
    if not trained_records(folder):
        raise SpinebenchError(f"Hugging Face repository {repo} holds no manifest.json with model files")
    return folder
