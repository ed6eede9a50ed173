"""Regenerate the demo's example radiographs from the synthetic generator (``python make_examples.py``).

One image of each kind (normal, scoliosis, implant, both), downscaled to 448 px on the long side (the quick
profile's models see 384 px), as 8-bit PNG; the scoliosis-and-implant case once more as a 12-bit MONOCHROME1 DICOM
with a window, JPEG 2000 lossless (shows that DICOM windowing and inversion are applied and that no patient field
is shown; its patient fields are the generator's synthetic ones). Each file stays well under 100 KB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 0
LONG_SIDE = 448
KINDS = {(0, 0): "normal", (0, 1): "scoliosis", (1, 0): "implant", (1, 1): "implant_and_scoliosis"}


def main(out: Path = Path(__file__).resolve().parent) -> None:
    from pydicom import dcmread
    from pydicom.uid import JPEG2000Lossless

    from spinebench.data import synth
    from spinebench.data.dataset import resize_keep_aspect

    found: dict[str, np.ndarray] = {}
    patient = 0
    while len(found) < len(KINDS) and patient < 200:
        pat = synth.sample_patient(SEED, patient)
        for view in range(pat.n_views):
            img, truth = synth.render_image(SEED, patient, view)
            kind = KINDS[(truth.implant, truth.scoliosis)]
            if kind not in found:
                small, _ = resize_keep_aspect(img, LONG_SIDE)
                found[kind] = small.astype(np.float32)
                print(f"{kind}: synthetic patient {patient} view {view}, largest Cobb {truth.cobb.max():.0f} deg, "
                      f"hardware {truth.hardware or '-'}")
        patient += 1
    for i, kind in enumerate(KINDS.values(), start=1):
        path = synth.write_image(found[kind], out / f"{i:02d}_{kind}", "png8")
        print(path.name, path.stat().st_size // 1024, "KB")
    path = synth.write_image(found["implant_and_scoliosis"], out / f"{len(KINDS) + 1:02d}_dicom_monochrome1",
                             "dcm12-mono1", uid_key="demo-example", patient="DEMO-EXAMPLE")
    ds = dcmread(path)
    ds.compress(JPEG2000Lossless, ds.pixel_array, encoding_plugin="pylibjpeg")  # 150 KB -> under 80 KB
    ds.save_as(path, enforce_file_format=True)
    print(path.name, path.stat().st_size // 1024, "KB")


if __name__ == "__main__":
    main()
