"""Regenerate the demo's example radiographs from the synthetic generator (``python make_examples.py``).

One image of each kind (normal, scoliosis, implant, both) from films at least 1,000 px tall, downscaled to 1,000 px
on the long side (what a visitor can read; the models downscale it again to their own view), as 8-bit JPEG at
quality 90 (40-65 KB; the same film as PNG is 120-180 KB). The implant example shows pedicle screws and rods, the
construct a visitor recognises. The scoliosis-and-implant case once more as a 12-bit MONOCHROME1 DICOM with a
window, JPEG 2000 lossless, at ``DICOM_LONG_SIDE`` (shows that DICOM windowing and inversion are applied and that no
patient field is shown; its patient fields are the generator's synthetic ones). Each file stays under 100 KB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
LONG_SIDE = 1000
DICOM_LONG_SIDE = 448
JPEG_QUALITY = 90
KINDS = {(0, 0): "normal", (0, 1): "scoliosis", (1, 0): "implant", (1, 1): "implant_and_scoliosis"}


def main(out: Path = Path(__file__).resolve().parent) -> None:
    from pydicom import dcmread
    from pydicom.uid import JPEG2000Lossless

    from spinebench.data import synth
    from spinebench.data.dataset import resize_keep_aspect

    found: dict[str, np.ndarray] = {}
    patient = 0
    while len(found) < len(KINDS) and patient < 400:
        pat = synth.sample_patient(SEED, patient)
        for view in range(pat.n_views):
            img, truth = synth.render_image(SEED, patient, view)
            kind = KINDS[(truth.implant, truth.scoliosis)]
            if kind in found or img.shape[0] < LONG_SIDE or (kind == "implant" and "pedicle_rod" not in truth.hardware):
                continue
            found[kind] = img
            print(f"{kind}: synthetic patient {patient} view {view}, {img.shape[0]} x {img.shape[1]} px, largest Cobb "
                  f"{truth.cobb.max():.0f} deg, hardware {truth.hardware or '-'}")
        patient += 1
    for old in out.glob("0[1-9]_*"):
        if old.suffix in (".png", ".jpg", ".dcm"):
            old.unlink()
    for i, kind in enumerate(KINDS.values(), start=1):
        small, _ = resize_keep_aspect(found[kind], LONG_SIDE)
        path = out / f"{i:02d}_{kind}.jpg"
        Image.fromarray(np.round(small.astype(np.float32) * 255).astype(np.uint8)).save(
            path, quality=JPEG_QUALITY, optimize=True)
        print(path.name, path.stat().st_size // 1024, "KB")
    small, _ = resize_keep_aspect(found["implant_and_scoliosis"], DICOM_LONG_SIDE)
    path = synth.write_image(small.astype(np.float32), out / f"{len(KINDS) + 1:02d}_dicom_monochrome1",
                             "dcm12-mono1", uid_key="demo-example", patient="DEMO-EXAMPLE")
    ds = dcmread(path)
    ds.compress(JPEG2000Lossless, ds.pixel_array, encoding_plugin="pylibjpeg")  # about half the uncompressed size
    ds.save_as(path, enforce_file_format=True)
    print(path.name, path.stat().st_size // 1024, "KB")


if __name__ == "__main__":
    main()
