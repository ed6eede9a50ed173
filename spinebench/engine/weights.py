"""The training side's entry points to trained weights: thin adapters over :class:`spinebench.weights.TrainedWeights`.

``save_weights(model, dir, meta=...)`` and ``load_weights(name, dir)`` keep the signatures the trainers and
``evaluate`` call; the record (``spinebench.weights``) is the one schema, writer and reader of the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

from spinebench.weights import MANIFEST, TrainedWeights, get_record, read_records, sha256_file, trained_records

__all__ = ["MANIFEST", "sha256_file", "read_weights_manifest", "save_weights", "trained_models", "load_weights"]


def _entry(record: TrainedWeights) -> dict:
    """A record as the plain dict callers of these adapters read; fields not known (None) are left out, as the
    older writers left them out (``entry.get(key, default)`` keeps working)."""
    return {k: v for k, v in record.to_entry().items() if v is not None}


def read_weights_manifest(weights_dir: str | os.PathLike) -> dict:
    """Every manifest entry as a plain dict of the current schema (older entries adapted)."""
    return {n: _entry(r) for n, r in read_records(weights_dir).items()}


def save_weights(model, weights_dir: str | os.PathLike, *, meta: dict) -> Path:
    """Write ``<name>.pt`` atomically and record it in the manifest (other models' entries are kept)."""
    return TrainedWeights.from_meta(model.default_cfg["name"], meta).save(model, weights_dir)


def trained_models(weights_dir: str | os.PathLike) -> list[str]:
    """Names of the models the manifest lists whose file is present."""
    return list(trained_records(weights_dir))


def load_weights(name: str, weights_dir: str | os.PathLike, device="cpu"):
    """Build model ``name`` and load its trained weights; returns (model in eval mode, manifest entry).

    Raises SpinebenchError when the model is not in the manifest, the file is missing, or its sha256 differs.
    """
    rec = get_record(name, weights_dir)
    return rec.load(device), _entry(rec)
