"""Hybrid data: surgical hardware rendered onto real radiographs (spec ``hybrid:SPEC``, e.g. ``hybrid:aasce=PATH``).

Why: no real implant radiographs are available, and a detector trained only on synthetic anatomy may learn the
anatomy's look instead of the metal's. Here the anatomy is real and only the hardware is drawn, by the same code
that draws it in the synthetic set (:mod:`spinebench.data.render`): placed from each radiograph's vertebra corner
landmarks where a surgeon would put it, blended with the image's own blur and noise and with the dark halo that the
edge enhancement of processed radiographs puts around metal.

A deterministic share of the images with landmarks (about a third, chosen by a hash of the image id, so the choice
does not depend on which other images were loaded) gets a hardware copy ``<image id>+hw`` with the same
``patient_id``: the copy and its original always fall in the same split. Originals are returned too, so the set
holds real radiographs with and without hardware. Renders are cached under ``cache_dir("hybrid", <key>)``, the key
hashing the chosen inputs and the drawing version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from spinebench import LABEL_MAP
from spinebench.data import render
from spinebench.data.sources import register_wrapper
from spinebench.errors import SpecError

log = logging.getLogger(__name__)

HYBRID_VERSION = 1
#: Share of the images with landmarks that get a hardware copy.
HW_SHARE = 1 / 3
#: Long fusion rods are only put on spines whose largest Cobb angle is below this (a fused spine is corrected).
LONG_FUSION_MAX_COBB = 40.0


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_selected(image_id: str, share: float = HW_SHARE) -> bool:
    """Whether this image gets a hardware copy: a hash of its id, so the choice is stable and order-free."""
    return int(_hash(f"hybrid:{image_id}")[:8], 16) / 2 ** 32 < share


def _file_stem(image_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("_")[-60:]
    return f"{safe}-{_hash(image_id)[:10]}"


def _cache_key(chosen: list[dict]) -> str:
    # the drawing code's own hash too (render.code_fingerprint): films drawn by other code are never read back
    parts = [f"hybrid v{HYBRID_VERSION} render v{render.RENDER_VERSION} "
             f"code {render.code_fingerprint(render, sys.modules[__name__])}"]
    for r in sorted(chosen, key=lambda r: r["image_id"]):
        try:
            st = os.stat(r["path"])
            sig = f"{st.st_size}:{int(st.st_mtime)}"
        except OSError:
            sig = "missing"
        parts.append(f"{r['image_id']}|{r['path']}|{sig}|{json.dumps(r['landmarks'])}")
    return _hash("\n".join(parts))[:16]


def render_record(rec: dict, out_dir: str | os.PathLike) -> dict:
    """Draw hardware onto one record's image; writes ``<stem>.png`` and ``<stem>.json`` (boxes) into out_dir."""
    from spinebench.io import load_image

    out_dir = Path(out_dir)
    stem = _file_stem(rec["image_id"])
    png, side = out_dir / f"{stem}.png", out_dir / f"{stem}.json"
    img, meta = load_image(rec["path"])
    rng = np.random.default_rng(int(_hash(f"hybrid-render:{rec['image_id']}")[:16], 16))
    cobbs = [rec.get(k) for k in ("cobb_pt", "cobb_mt", "cobb_tl")]
    cobbs = [c for c in cobbs if isinstance(c, (int, float)) and not math.isnan(c)]
    allow_long = bool(cobbs) and max(cobbs) < LONG_FUSION_MAX_COBB
    lm = np.asarray(rec["landmarks"], dtype=np.float64)
    out, boxes, constructs = render.add_hardware(img, lm, rng, allow_long=allow_long,
                                                 halo=float(rng.uniform(0.1, 0.35)))
    H, W = out.shape
    boxes = [[max(0.0, b[0]), max(0.0, b[1]), min(float(W), b[2]), min(float(H), b[3])] for b in boxes]
    deep = (meta.get("bits_stored") or 8) > 8
    arr = np.round(out * (65535 if deep else 255)).astype(np.uint16 if deep else np.uint8)
    tmp = png.with_name(png.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG", compress_level=3)
    os.replace(tmp, png)
    info = {"boxes": [[round(v, 2) for v in b] for b in boxes], "width": W, "height": H,
            "hardware": [c.kind for c in constructs]}
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, side)
    return info


def _job(args) -> tuple[str, dict]:
    rec, out_dir = args
    return rec["image_id"], render_record(rec, out_dir)


def _hw_record(rec: dict, path: Path, info: dict) -> dict:
    new = dict(rec)
    lum = LABEL_MAP["Lum"]
    kept = [b for b in (rec.get("boxes") or []) if int(b[4]) != lum]
    new.update(image_id=f"{rec['image_id']}+hw", source="hybrid", path=str(path), implant=1,
               boxes=kept + [list(b[:4]) + [lum] for b in info["boxes"]],
               width=int(info["width"]), height=int(info["height"]))
    return new


@register_wrapper("hybrid")
def hybrid(records: list[dict], workers: int | None = None) -> list[dict]:
    """The records plus a hardware copy of about a third of those with landmarks (see the module docstring)."""
    with_lm = [r for r in records if r.get("landmarks")]
    if not with_lm:
        raise SpecError("hybrid: needs a source with vertebra landmarks (e.g. hybrid:aasce=PATH); "
                        "none of its images has any")
    missing = len(records) - len(with_lm)
    if missing:
        log.warning("hybrid: %d of %d images have no landmarks and pass through without hardware",
                    missing, len(records))
    chosen = [r for r in with_lm if is_selected(r["image_id"]) and not r.get("implant")]
    if not chosen:
        log.warning("hybrid: none of the %d images with landmarks was drawn for hardware", len(with_lm))
        return list(records)
    out_dir = _cache_dir(_cache_key(chosen))
    infos: dict[str, dict] = {}
    todo = []
    for r in chosen:
        side = out_dir / f"{_file_stem(r['image_id'])}.json"
        png = side.with_suffix(".png")
        if side.is_file() and png.is_file():
            infos[r["image_id"]] = json.loads(side.read_text())
        else:
            todo.append(r)
    if todo:
        log.info("hybrid: drawing hardware on %d radiographs into %s", len(todo), out_dir)
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        if workers == 1:
            results = [_job((r, str(out_dir))) for r in todo]
        else:
            fork = "fork" in multiprocessing.get_all_start_methods()
            with (get_context("fork") if fork else get_context()).Pool(workers) as pool:
                results = pool.map(_job, [(r, str(out_dir)) for r in todo], chunksize=2)
        infos.update(dict(results))
    out = []
    for r in records:
        out.append(r)
        if infos.get(r["image_id"], {}).get("boxes"):  # no box: the landmarks offered no sane place
            png = out_dir / f"{_file_stem(r['image_id'])}.png"
            out.append(_hw_record(r, png, infos[r["image_id"]]))
    return out


def _cache_dir(key: str) -> Path:
    from spinebench.paths import cache_dir

    return cache_dir("hybrid", key)
