"""Torch datasets over records: dict-shaped items, images decoded once, in the one pixel contract.

Every item is a dict (torchxrayvision style)::

    image       float32 tensor (1, H, W) in [0, 1], bright = dense (spinebench.io pixel contract)
    labels      float32 tensor (2,): FINDINGS (implant, scoliosis)
    boxes       float32 tensor (N, 4) xyxy in pixels of ``image``; box_labels int64 (N,): 1=Lum, 2=sco
    landmarks   float32 tensor (68, 2) in pixels of ``image`` (NaN when unknown)
    cobb        float32 tensor (3,) degrees pt, mt, tl (NaN when unknown)
    image_id, patient_id, source, split: str;  index: int;  scale: float (image px per original px)

Why images are decoded once and kept downscaled in memory: real radiographs are 1-5 MP JPEG/DICOM and decoding them
every epoch dominates CPU training; every model here trains at a few hundred pixels, so one shared, aspect-kept
cache at ``max_side`` pixels serves all six models of a run.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spinebench.io import load_image

log = logging.getLogger(__name__)


def resize_keep_aspect(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = img.shape
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return img.astype(np.float16), 1.0
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    # antialias: downscaling 2500 px radiographs to a few hundred must not alias thin metal edges away
    out = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].clamp_(0, 1).numpy().astype(np.float16), nh / h


class SpineDataset(Dataset):
    """Records -> dict items. ``transform(item, rng) -> item`` may augment; it gets a per-item seeded generator.

    Args:
        records: records (spinebench.data.records) of one split.
        max_side: longest side of the in-memory image cache (pixels).
        transform: optional callable applied to every item.
        seed: base seed; the augmentation of item i in epoch e is seeded by (seed, epoch, i), so a resumed run
            replays exactly the same augmentations.
        workers: threads used to decode the images once.
    """

    def __init__(self, records: Sequence[dict], max_side: int = 640, transform: Callable | None = None,
                 seed: int = 0, workers: int = 2, images: list | None = None):
        self.records = list(records)
        self.max_side = max_side
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        if images is None:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
                images = list(ex.map(lambda r: resize_keep_aspect(load_image(r["path"])[0], max_side),
                                     self.records))
        self._images = images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> "SpineDataset":
        """A view on some items that reuses the decoded images (no second decode)."""
        return SpineDataset([self.records[i] for i in indices], self.max_side, transform, self.seed,
                            images=[self._images[i] for i in indices])

    def with_transform(self, transform: Callable | None) -> "SpineDataset":
        return self.subset(range(len(self)), transform)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        arr, scale = self._images[index]
        boxes = [b for b in rec.get("boxes") or []]
        box_t = torch.tensor([b[:4] for b in boxes], dtype=torch.float32).reshape(-1, 4) * scale
        lab_t = torch.tensor([int(b[4]) for b in boxes], dtype=torch.int64)
        lm = rec.get("landmarks")
        lm_t = (torch.tensor(lm, dtype=torch.float32) * scale if lm is not None
                else torch.full((68, 2), math.nan))
        item = {
            "image": torch.from_numpy(arr.astype(np.float32))[None],
            "labels": torch.tensor([float(rec["implant"]), float(rec["scoliosis"])]),
            "boxes": box_t, "box_labels": lab_t, "landmarks": lm_t,
            "cobb": torch.tensor([rec.get("cobb_pt", math.nan), rec.get("cobb_mt", math.nan),
                                  rec.get("cobb_tl", math.nan)], dtype=torch.float32),
            "image_id": rec["image_id"], "patient_id": rec["patient_id"], "source": rec["source"],
            "split": rec.get("split", ""), "index": index, "scale": scale,
        }
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            item = self.transform(item, rng)
        return item


def collate_dicts(items: list[dict]) -> dict:
    """Stack what has one shape across items (labels, cobb); keep lists for images and boxes."""
    out: dict = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if key in ("labels", "cobb") or (key == "image" and len({tuple(v.shape) for v in vals}) == 1):
            out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out
