"""Shared test fixtures. Nothing here downloads anything."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest


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
