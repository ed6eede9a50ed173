"""Shared test fixtures. Nothing here downloads anything."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (the folder is not a package: the scripts are run by path)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def dicom_testfile() -> Callable[[str], str]:
    """Path of a DICOM test file shipped with pydicom or pydicom-data; skips the test when it is not local
    (``download=False``: pydicom would otherwise try the network)."""

    def get(name: str) -> str:
        from pydicom.data import get_testdata_file

        path = get_testdata_file(name, download=False)
        if path is None or not Path(path).is_file():
            pytest.skip(f"DICOM test file {name} is not installed locally (pydicom-data)")
        return str(path)

    return get


def write_dicom(path: str | Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                bits_stored: int | None = None, modality: str = "CR", preamble: bool = True,
                **attrs) -> Path:
    """Write a small uncompressed DICOM (Explicit VR Little Endian) holding ``pixels`` (2D, or 3D frames).

    Extra keyword arguments become DICOM attributes (``WindowCenter=...``, ``PatientName=...``); an attribute
    given as None is removed, so that broken files can be built too.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-0001"
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # a bare data set, as some old systems export: no preamble, no 'DICM', no file meta
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=False, little_endian=True)
    return Path(path)


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """:func:`write_dicom` as a fixture."""
    return write_dicom


def make_tiny_folder(root: Path, n: int = 30) -> Path:
    """n tiny 'radiographs' (96 x 48): a bright block for hardware, a tilted bar for a curve, labels.csv."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        img = (rng.random((96, 48)) * 60 + 40).astype(np.uint8)
        implant, sco = i % 2, (i // 2) % 2
        boxes = []
        if implant:
            img[60:72, 18:30] = 250
            boxes.append([18, 60, 30, 72, 1])
        if sco:
            for y in range(10, 80):
                x = int(24 + 8 * math.sin(y / 20))
                img[y, x - 2:x + 2] = 200
            boxes.append([12, 8, 36, 82, 2])
        Image.fromarray(img).save(root / "img" / f"x{i:02d}.png")
        rows.append({"path": f"img/x{i:02d}.png", "implant": implant, "scoliosis": sco,
                     "patient_id": f"p{i // 2}", "boxes": json.dumps(boxes)})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A folder data spec of 30 tiny labelled films (15 patients): enough for a patient split and one epoch."""
    return f"folder={make_tiny_folder(tmp_path_factory.mktemp('tiny'))}"


def fit_head(model, head, x, y, steps: int) -> list[float]:
    """``steps`` AdamW steps of ``model`` and a train-time head (``tasks.classification``) on one batch: the
    head's losses, for tests that a head learns."""
    import torch

    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    losses = []
    for _ in range(steps):
        model(x)
        loss = head.loss(y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    return losses


@pytest.fixture(scope="session")
def synth_sets(tmp_path_factory):
    """(train, val): 12 real films of the synthetic generator (12 patients, some with hardware) in 8 and 4."""
    from spinebench.data import synth
    from spinebench.data.dataset import SpineDataset
    from spinebench.data.sources import load_records

    root = tmp_path_factory.mktemp("synth")
    synth.generate(root, n=12, seed=2, workers=1, progress=False, scale=0.3)
    full = SpineDataset(load_records([f"synth={root}"]), max_side=160)
    return full.subset(range(0, 8)), full.subset(range(8, 12))
