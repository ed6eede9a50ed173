"""A trained model is one object: :class:`TrainedWeights`, the record of ``weights/manifest.json``.

Like torchvision's ``Weights`` (url, ``transforms()``, ``meta``) and timm's ``pretrained_cfg``, the record carries
everything needed to use a trained model: which architecture and kwargs, which file and its sha256, the decision
thresholds chosen on validation, and the exact preprocessing (the decode downscale the training run cached images
at, then the model's evaluation transform). :meth:`TrainedWeights.preprocess` is the one way ``evaluate``, the
demo, ``measure`` and batch prediction turn a loaded image into model input, so they agree by construction.

One writer (:func:`write_record`) and one reader (:func:`read_records`) of the manifest. Entries written before
the record existed (no ``schema``; ``data`` as a list or a string; ``test_metrics`` for ``metrics``; ``max_side``
for ``cache_side``) are read through one adapter, :meth:`TrainedWeights.from_entry`.

A weights file holds only tensors and plain values (``.pt`` loaded with ``torch.load(weights_only=True)``, or
``.safetensors``): opening a stranger's checkpoint cannot execute code. Loading checks the file's sha256 against the
record, so a swapped or truncated file is refused instead of silently used.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Version of the manifest entry schema. 1: entries written before the record (read through the adapter).
SCHEMA_VERSION = 2


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_kind(spec: str) -> str:
    """synthetic / hybrid / real for every source of a (space-separated) data spec, e.g. ``synthetic + real``."""
    from spinebench.data.sources import data_kind as kind_of

    kinds = list(dict.fromkeys(kind_of(part) for part in str(spec).split()))
    return " + ".join(kinds) or "unknown"


def _plain(obj: Any) -> Any:
    """JSON-plain copy (numpy scalars and arrays, tensors, tuples, paths), by the result rows' own JSON rule."""
    from spinebench.evaluation.results import _json_default

    return json.loads(json.dumps(obj, default=_json_default))


def _size(v) -> list[int] | None:
    if v is None or isinstance(v, str) or not hasattr(v, "__len__") or len(v) != 2:
        return None
    return [int(x) for x in v]


@dataclass
class TrainedWeights:
    """One trained model: what it is, where its weights are, how to feed it, and how it scored."""

    model: str                                # registry name (``spinebench.models``)
    task: str                                 # the registry's task of that model
    file: str = ""                            # file name inside the weights folder
    sha256: str = ""
    thresholds: list[float] = field(default_factory=list)  # per finding, chosen on validation
    cache_side: int = 320                     # decode downscale: longest side the training run cached images at
    image_size: list[int] | None = None       # (H, W) the eval transform resizes to; None: the model's own
    input_size: list[int] | None = None       # what the model was trained at, as reported (detectors: min/max)
    normalize: dict | None = None             # {"mean": [...], "std": [...]} after the transform; None: [0, 1]
    model_kwargs: dict = field(default_factory=dict)
    data: str = ""                            # the data spec it was trained on (space-separated sources)
    data_kind: str = "unknown"                # synthetic / hybrid / real (+ ...)
    split_file: str | None = None
    run_id: str = ""
    seed: int | None = None
    pretrained: bool | str = False            # what was really loaded: False, True, "imagenet", "in-domain:..."
    metrics: dict = field(default_factory=dict)  # test metrics (numbers only)
    spinebench_version: str = ""
    git_commit: str = ""
    saved: str = ""                           # UTC time the file was written
    extra: dict = field(default_factory=dict)  # anything else the trainer recorded (best epoch, device, ...)
    schema: int = SCHEMA_VERSION
    folder: Path | None = field(default=None, compare=False, repr=False)  # where it was read from (not stored)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_meta(cls, model: str, meta: dict) -> "TrainedWeights":
        """A record from what a trainer knows (``save_weights``'s ``meta``, any schema): the writers' constructor.

        The commit is filled in when the trainer did not record one, so every written record names its code."""
        rec = cls.from_entry(model, dict(meta))
        if not rec.git_commit:
            from spinebench.evaluation.results import git_commit

            rec.git_commit = git_commit()
        return rec

    @classmethod
    def from_entry(cls, name: str, entry: dict) -> "TrainedWeights":
        """The one adapter from a manifest entry of any schema version to a record."""
        from spinebench import __version__
        from spinebench.engine.profiles import profile_cache_side

        e = _plain(entry)
        if int(e.get("schema") or 1) > SCHEMA_VERSION:
            raise SpinebenchError(f"weights of {name} were written by a newer spinebench (manifest schema "
                                  f"{e['schema']} > {SCHEMA_VERSION}): upgrade spinebench")
        known = {f.name for f in dataclasses.fields(cls)}
        data = e.pop("data", "")
        data = " ".join(str(d) for d in data) if isinstance(data, (list, tuple)) else str(data or "")
        metrics = e.pop("metrics", None) or e.pop("test_metrics", None) or {}
        e.pop("test_metrics", None)
        task = e.pop("task", None)
        if not task:
            from spinebench.models import model_info

            try:
                task = model_info(name)["task"]
            except SpinebenchError:  # a model this version does not know: readable, skipped by its users
                task = "unknown"
        cache_side = profile_cache_side(e)  # cache_side, cobb_train's max_side, or the run id's profile
        e.pop("max_side", None)
        e.pop("model", None)
        rec = cls(
            model=name, task=str(task), data=data, cache_side=int(cache_side),
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            thresholds=[float(t) for t in (e.pop("thresholds", None) or [])],
            image_size=_size(e.pop("image_size", None)), input_size=_size(e.pop("input_size", None)),
            model_kwargs=dict(e.pop("model_kwargs", None) or {}),
            spinebench_version=str(e.pop("spinebench_version", "") or __version__),
            data_kind=str(e.pop("data_kind", "") or data_kind(data)),
            schema=SCHEMA_VERSION,
        )
        e.pop("schema", None)
        e.pop("cache_side", None)
        e.pop("folder", None)
        extra = dict(e.pop("extra", None) or {})
        for k in list(e):
            if k in known:
                setattr(rec, k, e.pop(k))
        rec.extra = extra | e  # keys of older or newer writers are kept, not lost
        try:
            rec.seed = int(rec.seed) if rec.seed not in (None, "") else None
        except (TypeError, ValueError):
            rec.seed = None
        return rec

    def to_entry(self) -> dict:
        """The manifest entry (JSON-plain), as :func:`write_record` stores it."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "folder"}
        return _plain(d)

    # ------------------------------------------------------------------------------------------ use
    @property
    def path(self) -> Path:
        if self.folder is None:
            raise SpinebenchError(f"the record of {self.model} is not attached to a weights folder")
        return self.folder / self.file

    @property
    def imagenet(self) -> bool:
        """Whether ImageNet weights were really loaded before training: what a row's ``pretrained`` column means, in
        ``run-all`` and ``evaluate`` alike. A start from a classifier of the same run (``pretrained``
        "in-domain:...") is not: it saw only the run's training split, and ``pretrained`` keeps saying where it
        started."""
        return self.pretrained is True or self.pretrained == "imagenet"

    def decision_thresholds(self) -> tuple[float, ...]:
        """Per-finding thresholds (validated): finite numbers, one per finding, else SpinebenchError."""
        from spinebench import FINDINGS

        t = [float(v) for v in (self.thresholds or [0.5] * len(FINDINGS))]
        if len(t) < len(FINDINGS) or not all(math.isfinite(v) for v in t[:len(FINDINGS)]):
            raise SpinebenchError(f"the weights of {self.model} have no valid thresholds: {t}")
        return tuple(t[:len(FINDINGS)])

    def state_dict(self) -> dict:
        """The tensors of the weights file, after checking it against the record's sha256."""
        import torch

        path = self.path
        if not path.is_file():
            raise SpinebenchError(f"{path} is listed in {path.parent / MANIFEST} but missing")
        if not self.sha256:
            raise SpinebenchError(f"{path} has no sha256 in {MANIFEST}: refusing to load an unchecked file")
        if sha256_file(path) != self.sha256:
            raise SpinebenchError(f"{path} does not match its sha256 in {MANIFEST}: refusing to load a changed file")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu")
            return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one clear line, no traceback
            raise SpinebenchError(f"cannot read {path}: {type(e).__name__}: {e}") from None

    def build(self):
        """The architecture with the record's kwargs and no pretrained download (the trained weights replace it)."""
        from spinebench.models import create_model

        return create_model(self.model, pretrained="none", **self.model_kwargs)

    def load(self, device="cpu"):
        """The trained model on ``device`` in eval mode (file checked against its sha256)."""
        model = self.build()
        try:
            model.load_state_dict(self.state_dict())
        except RuntimeError as e:
            raise SpinebenchError(f"{self.path} does not fit {self.model} "
                                  f"({str(e).splitlines()[0]})") from None
        model.pretrained_loaded = self.imagenet
        self._transform = self._make_transform(model)
        return model.to(device).eval()

    def downscale(self, img: np.ndarray, side: int | None = None) -> tuple[np.ndarray, float]:
        """The decode downscale of training (aspect kept, longest side ``cache_side``): (float32 view, scale).

        Exactly the dataset's cache (``spinebench.data.dataset``), float16 included; ``scale`` = view px per image
        px. Models trained at the same ``cache_side`` can share one view. ``side`` overrides it (experiments).
        """
        from spinebench.data.dataset import resize_keep_aspect

        arr, scale = resize_keep_aspect(img, int(side or self.cache_side))
        return arr.astype(np.float32), float(scale)

    def model_input(self, view: np.ndarray):
        """A downscaled view -> the tensor the model eats for it (one item, no batch axis)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(view, dtype=np.float32))[None]
        item = self.transform()({"image": x}, np.random.default_rng(0))
        x = item["image"]
        if self.normalize:
            mean = torch.tensor(self.normalize["mean"], dtype=x.dtype).view(-1, 1, 1)
            std = torch.tensor(self.normalize["std"], dtype=x.dtype).view(-1, 1, 1)
            x = (x - mean) / std
        return x

    def preprocess(self, img: np.ndarray):
        """A loaded image (float32 H x W in [0, 1], ``spinebench.io.load_image``) -> exactly what the model eats:
        the training downscale, then the model's evaluation transform. One item without a batch axis: classifiers
        and landmark models take ``x[None]``, detectors ``[x]``."""
        return self.model_input(self.downscale(img)[0])

    def transform(self):
        """The model's evaluation item transform (its task's, ``spinebench.tasks``)."""
        if getattr(self, "_transform", None) is None:
            self._transform = self._make_transform(self.build())
        return self._transform

    def _make_transform(self, model):
        from spinebench.tasks import get_task

        return get_task(model).transform(model, tuple(self.image_size) if self.image_size else None, train=False)

    # ------------------------------------------------------------------------------------------ writing
    def save(self, model, weights_dir: str | os.PathLike) -> Path:
        """Write ``<model>.pt`` atomically and this record into the folder's manifest (others are kept)."""
        import torch

        weights_dir = Path(weights_dir)
        weights_dir.mkdir(parents=True, exist_ok=True)
        self.file = f"{self.model}.pt"
        path = weights_dir / self.file
        tmp = path.with_name(path.name + ".tmp")
        self.saved = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "meta_json": json.dumps(self.to_entry())}, tmp)
        os.replace(tmp, path)
        self.sha256 = sha256_file(path)
        self.folder = weights_dir
        write_record(weights_dir, self)
        return path


# ---------------------------------------------------------------------------------------------- the manifest
def _read_manifest_json(weights_dir: Path) -> dict:
    path = weights_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpinebenchError(f"{path} is not valid JSON ({e}); delete it and retrain, or restore it") from None


def read_records(weights_dir: str | os.PathLike) -> dict[str, TrainedWeights]:
    """The one reader: every record of ``weights_dir/manifest.json`` (any schema), attached to that folder."""
    weights_dir = Path(weights_dir)
    out = {}
    for name, entry in _read_manifest_json(weights_dir).items():
        rec = TrainedWeights.from_entry(name, entry)
        rec.folder = weights_dir
        out[name] = rec
    return out


def write_record(weights_dir: str | os.PathLike, record: TrainedWeights) -> None:
    """The one writer: put ``record`` into ``weights_dir/manifest.json`` atomically (other models' entries kept)."""
    weights_dir = Path(weights_dir)
    raw = _read_manifest_json(weights_dir)
    raw[record.model] = record.to_entry()
    path = weights_dir / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(raw, indent=2, sort_keys=True))
    os.replace(tmp, path)


def trained_records(weights_dir: str | os.PathLike) -> dict[str, TrainedWeights]:
    """The records whose file is present."""
    return {n: r for n, r in read_records(weights_dir).items() if r.file and r.path.is_file()}


def get_record(name: str, weights_dir: str | os.PathLike) -> TrainedWeights:
    records = read_records(weights_dir)
    if name not in records:
        have = ", ".join(records) or "none"
        raise SpinebenchError(f"no trained weights for {name} in {weights_dir} (trained there: {have}; run "
                              "`python -m spinebench run-all`)")
    return records[name]


def load_trained(name: str, weights: str | os.PathLike = "weights", device="cpu"):
    """``(model in eval mode, its TrainedWeights)`` for trained model ``name`` from a weights folder or a Hugging
    Face Hub repository (``hf://user/name`` or ``hf://user/name@revision``; see :mod:`spinebench.hub`)."""
    from spinebench.hub import resolve_weights

    rec = get_record(name, resolve_weights(weights))
    return rec.load(device), rec
