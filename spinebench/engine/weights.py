"""Trained weights: ``weights/<model>.pt`` plus ``weights/manifest.json``, and loading them back safely.

A weights file holds only tensors and plain values, so it loads with ``torch.load(weights_only=True)``: opening a
checkpoint from a stranger cannot execute code. The manifest records per model the file's sha256, the decision
thresholds chosen on validation, test metrics, the training data, and whether ImageNet weights were really used;
loading checks the file against the manifest, so a swapped or truncated file is refused instead of silently used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_weights_manifest(weights_dir: str | os.PathLike) -> dict:
    path = Path(weights_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpinebenchError(f"{path} is not valid JSON ({e}); delete it and retrain, or restore it") from None


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def save_weights(model, weights_dir: str | os.PathLike, *, meta: dict) -> Path:
    """Write ``<name>.pt`` atomically and record it in the manifest (other models' entries are kept)."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    name = model.default_cfg["name"]
    path = weights_dir / f"{name}.pt"
    tmp = path.with_name(path.name + ".tmp")
    plain_meta = json.loads(json.dumps(meta, default=_json_default))
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "meta_json": json.dumps(plain_meta)}, tmp)
    os.replace(tmp, path)
    manifest = read_weights_manifest(weights_dir)
    manifest[name] = dict(plain_meta, file=path.name, sha256=sha256_file(path),
                          saved=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    _write_json_atomic(weights_dir / MANIFEST, manifest)
    return path


def trained_models(weights_dir: str | os.PathLike) -> list[str]:
    """Names of the models the manifest lists whose file is present."""
    manifest = read_weights_manifest(weights_dir)
    return [n for n, m in manifest.items() if (Path(weights_dir) / m.get("file", "")).is_file()]


def load_weights(name: str, weights_dir: str | os.PathLike, device="cpu"):
    """Build model ``name`` and load its trained weights; returns (model in eval mode, manifest entry).

    Raises SpinebenchError when the model is not in the manifest, the file is missing, or its sha256 differs.
    """
    from spinebench.models import create_model

    weights_dir = Path(weights_dir)
    manifest = read_weights_manifest(weights_dir)
    if name not in manifest:
        raise SpinebenchError(f"no trained weights for {name} in {weights_dir} (run `python -m spinebench run-all`)")
    entry = manifest[name]
    path = weights_dir / entry["file"]
    if not path.is_file():
        raise SpinebenchError(f"{path} is listed in {weights_dir / MANIFEST} but missing")
    if sha256_file(path) != entry["sha256"]:
        raise SpinebenchError(f"{path} does not match its sha256 in {MANIFEST}: refusing to load a changed file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign pickle: one clear line, no traceback
        raise SpinebenchError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    meta = json.loads(blob["meta_json"])
    model = create_model(name, pretrained="none", **(meta.get("model_kwargs") or {}))
    model.load_state_dict(blob["state_dict"])
    model.pretrained_loaded = bool(meta.get("pretrained"))
    return model.to(device).eval(), entry
