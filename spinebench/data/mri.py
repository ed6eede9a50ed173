"""The paper's MRI step: a sagittal lumbar-spine MRI series becomes a few 2D images.

Le Van et al. took 2-3 slices per study from the Mendeley "Lumbar Spine MRI Dataset" (Sudirman et al., 2019)
and saved them as single DICOM images. :func:`convert_mri_series` does that reproducibly: it keeps the central
``n_slices`` sagittal slices in anatomical order, writes each as a de-identified single-frame DICOM and as an
8-bit PNG rendered through :func:`spinebench.io.load_image` (so the PNG shows exactly what a model sees).

Leakage warning: slices of one study are near-duplicates. Keep them in one split (give them one
``patient_id``); the converted files of one call share one new StudyInstanceUID.

De-identification (a pragmatic subset of the DICOM PS3.15 basic profile, not a certified one): patient name
and ID replaced, person names, dates, times, addresses, institution and device identifiers and private tags
removed or blanked, and every instance UID replaced by a new one (``pydicom.uid.generate_uid``). Text burned
into the pixels is not detected.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np

from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)

__all__ = ["convert_mri_series"]

# identifying attributes (beyond every PN, DA, DT, TM element, which are blanked wherever they occur)
_IDENTIFYING = {
    "PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "IssuerOfPatientID", "PatientAddress",
    "PatientTelephoneNumbers", "MedicalRecordLocator", "PatientInsurancePlanCodeSequence", "MilitaryRank",
    "BranchOfService", "CountryOfResidence", "RegionOfResidence", "PatientReligiousPreference", "EthnicGroup",
    "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientAge", "PatientSex", "PatientSize",
    "PatientWeight", "PatientBirthDate", "PatientBirthTime", "AccessionNumber", "StudyID", "StudyDescription",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "StationName", "DeviceSerialNumber", "RequestingService", "RequestedProcedureID", "ScheduledProcedureStepID",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence", "RequestAttributesSequence",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedImageSequence", "SourceImageSequence",
    "ReferencedPerformedProcedureStepSequence", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "ResponsibleOrganization", "ImageComments", "TextComments",
    "FrameComments", "AcquisitionComments", "DerivationDescription", "IssuerOfAccessionNumberSequence",
    "ReferencedPatientPhotoSequence", "ContentCreatorIdentificationCodeSequence",
}
_BLANK_VRS = {"PN", "DA", "DT", "TM"}


def convert_mri_series(series_dir: str | os.PathLike, out_dir: str | os.PathLike, n_slices: int = 3, *,
                       patient_id: str = "ANONYMOUS") -> list[Path]:
    """Write the central ``n_slices`` sagittal slices of one MRI series as 2D DICOM + PNG pairs.

    ``series_dir`` holds the DICOM files of exactly one series (recognised by content; subfolders are searched
    too), or one multi-frame (enhanced) MR file. Slices are ordered along the slice normal
    (ImagePositionPatient projected on the normal of ImageOrientationPatient), falling back to InstanceNumber.
    ``patient_id`` is written as the pseudonymous PatientID of every output file (use one per study so that
    patient-level splits keep its slices together). Returns the DICOM paths in anatomical order; each has a
    PNG twin with the same stem.
    """
    import pydicom

    from spinebench.io import is_dicom

    series_dir, out_dir = Path(series_dir), Path(out_dir)
    if not series_dir.is_dir():
        raise SpinebenchError(f"{series_dir}: no such folder" if not series_dir.exists()
                              else f"{series_dir}: is a file; expected the folder of one MRI series")
    if not isinstance(n_slices, int) or n_slices < 1:
        raise SpinebenchError(f"--slices must be a positive number of slices, got {n_slices}")

    out_abs = out_dir.resolve()
    files = sorted(p for p in series_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and out_abs not in p.resolve().parents)  # earlier outputs inside the series folder
    headers = []
    for p in files:
        if not is_dicom(p):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        except Exception as e:  # a broken file among good ones: say which, keep going
            log.warning("%s: unreadable DICOM header, skipped (%s)", p, type(e).__name__)
            continue
        if "Rows" not in ds or "SeriesInstanceUID" not in ds:
            log.debug("%s: not an image of a series (no Rows / SeriesInstanceUID), skipped", p)
            continue
        headers.append((p, ds))
    if not headers:
        raise SpinebenchError(f"{series_dir}: no DICOM images found (looked at {len(files)} files)")

    series: dict[str, list] = {}
    for p, ds in headers:
        series.setdefault(str(ds.SeriesInstanceUID), []).append((p, ds))
    if len(series) > 1:
        listing = "; ".join(f"{uid} ('{items[0][1].get('SeriesDescription', '') or 'no description'}', "
                            f"{len(items)} files, e.g. {items[0][0].relative_to(series_dir)})"
                            for uid, items in series.items())
        raise SpinebenchError(f"{series_dir}: holds {len(series)} series, convert one at a time: {listing}")
    items = next(iter(series.values()))

    multi = [p for p, ds in items if _n_frames(ds) > 1]
    if multi and len(items) > 1:
        raise SpinebenchError(f"{series_dir}: mixes multi-frame and single-frame files ({multi[0].name}); "
                              "expected one series of 2D slices or one multi-frame file")
    photometric = str(items[0][1].get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SpinebenchError(f"{items[0][0]}: MRI slices must be MONOCHROME1/2, not '{photometric or 'missing'}'")

    if multi:
        slices = _frames_in_order(items[0][0], items[0][1])
    else:
        slices = _files_in_order(series_dir, items)
    n = len(slices)
    if n_slices > n:
        raise SpinebenchError(f"{series_dir}: the series has {n} slice(s), fewer than the {n_slices} asked for")
    start = (n - n_slices) // 2
    chosen = list(range(start, start + n_slices))

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpinebenchError(f"{out_dir}: cannot create the output folder ({e.strerror or e})") from e
    uid_map: dict[str, str] = {}
    written = []
    cache: dict[Path, object] = {}
    for rank, i in enumerate(chosen, start=1):
        path, frame = slices[i]
        if path not in cache:
            try:
                cache[path] = pydicom.dcmread(path, force=True)
            except Exception as e:
                raise SpinebenchError(f"{path}: unreadable DICOM ({type(e).__name__})") from e
        ds = _single_slice(cache[path], path, frame)
        _deidentify(ds, patient_id, uid_map)
        ds.InstanceNumber = rank
        dcm = out_dir / f"slice_{i:03d}.dcm"
        try:
            ds.save_as(dcm, enforce_file_format=True)
            _write_png(dcm, dcm.with_suffix(".png"))
        except OSError as e:
            raise SpinebenchError(f"{dcm}: cannot write ({e.strerror or e})") from e
        written.append(dcm)
    log.info("%s: kept slices %s of %d -> %s", series_dir, chosen, n, out_dir)
    return written


def _n_frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def _normal(iop) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in iop], dtype=float)
    except (TypeError, ValueError):
        return None
    if v.shape != (6,):
        return None
    n = np.cross(v[:3], v[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 1e-6 else None


def _position(ipp) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in ipp], dtype=float)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (3,) else None


def _check_sagittal(where: Path, normal: np.ndarray | None) -> None:
    """Sagittal slices have their normal along the patient's left-right (x) axis."""
    if normal is None:
        log.warning("%s: no ImageOrientationPatient, cannot confirm the slices are sagittal", where)
        return
    axis = int(np.argmax(np.abs(normal)))
    if axis != 0:
        plane = {1: "coronal", 2: "axial"}[axis]
        raise SpinebenchError(f"{where}: the series is {plane} (slice normal {np.round(normal, 2).tolist()}); "
                              "convert-mri keeps sagittal slices")


def _files_in_order(series_dir: Path, items: list) -> list[tuple[Path, int | None]]:
    normal = _normal(items[0][1].get("ImageOrientationPatient"))
    _check_sagittal(series_dir, normal)
    positions = [_position(ds.get("ImagePositionPatient")) for _, ds in items]
    if normal is not None and all(p is not None for p in positions):
        keys = [float(p @ normal) for p in positions]
    else:
        try:
            keys = [float(ds.InstanceNumber) for _, ds in items]
        except (AttributeError, TypeError, ValueError):
            raise SpinebenchError(f"{series_dir}: cannot order the slices (no ImagePositionPatient/"
                                  "ImageOrientationPatient and no InstanceNumber)") from None
        log.warning("%s: slices ordered by InstanceNumber (no usable slice positions)", series_dir)
    if len(set(keys)) < len(keys):
        log.warning("%s: several files share one slice position; the series may hold repeats", series_dir)
    order = sorted(range(len(items)), key=lambda k: (keys[k], str(items[k][0])))
    return [(items[k][0], None) for k in order]


def _frame_group_value(ds, frame: int, seq: str, keyword: str):
    """A value from the per-frame functional group of ``frame``, else from the shared one."""
    for groups, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        g = ds.get(groups)
        if g is not None and idx < len(g) and seq in g[idx] and len(g[idx][seq].value):
            item = g[idx][seq].value[0]
            if keyword in item:
                return item[keyword].value
    return None


def _frames_in_order(path: Path, ds) -> list[tuple[Path, int | None]]:
    n = _n_frames(ds)
    normal = _normal(_frame_group_value(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")
                     or ds.get("ImageOrientationPatient"))
    _check_sagittal(path, normal)
    positions = [_position(_frame_group_value(ds, f, "PlanePositionSequence", "ImagePositionPatient"))
                 for f in range(n)]
    if normal is not None and all(p is not None for p in positions):
        order = sorted(range(n), key=lambda f: (float(positions[f] @ normal), f))
    else:
        log.warning("%s: no per-frame positions, frames kept in stored order", path)
        order = list(range(n))
    return [(path, f) for f in order]


def _single_slice(src, path: Path, frame: int | None):
    """A copy of ``src`` holding one frame, uncompressed (Explicit VR Little Endian)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels import pixel_array
    from pydicom.uid import ExplicitVRLittleEndian

    try:
        arr = pixel_array(src, index=frame)
    except Exception as e:
        raise SpinebenchError(f"{path}: cannot decode the pixel data ({type(e).__name__}: {e})".split("\n")[0]) from e
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # big-endian sources decode as '>u2'
    ds = copy.deepcopy(src)
    del ds.PixelData
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    bits = int(src.get("BitsStored") or arr.dtype.itemsize * 8)
    ds.set_pixel_data(arr, str(src.PhotometricInterpretation), bits, generate_instance_uid=False)
    if frame is not None:  # enhanced (multi-frame) IODs need NumberOfFrames, and only this frame's group
        ds.NumberOfFrames = 1
        per = src.get("PerFrameFunctionalGroupsSequence")
        if per is not None and frame < len(per):
            ds.PerFrameFunctionalGroupsSequence = [copy.deepcopy(per[frame])]
    ds.set_original_encoding(False, True)
    return ds


def _deidentify(ds, patient_id: str, uid_map: dict[str, str]) -> None:
    """Remove identity in place; ``uid_map`` keeps old->new UIDs consistent across the slices of one call.

    Identifying elements are replaced without ever decoding their old values, so that pydicom's warnings
    about malformed values (which quote the value) cannot carry a name or a birth date into the logs.
    """
    from pydicom.dataelem import DataElement
    from pydicom.datadict import dictionary_VR, keyword_for_tag
    from pydicom.uid import generate_uid

    ds.remove_private_tags()

    def clean(d) -> None:
        for tag in list(d.keys()):
            try:
                vr = dictionary_VR(tag)
            except KeyError:  # unknown public tag: trust the file's VR
                vr = d.get_item(tag).VR or "UN"
            vr = vr.split(" or ")[0]
            if keyword_for_tag(tag) in _IDENTIFYING:
                if vr == "SQ":
                    del d[tag]
                else:
                    d[tag] = DataElement(tag, vr, "")
            elif vr == "SQ":
                for item in d[tag].value:
                    clean(item)
            elif vr in _BLANK_VRS:
                d[tag] = DataElement(tag, vr, "")
            elif vr == "UI":
                # every instance UID is replaced; well-known DICOM UIDs (SOP classes, codes) stay
                elem = d[tag]
                if not elem.value:
                    continue
                values = list(elem.value) if elem.VM > 1 else [elem.value]
                new = [v if str(v).startswith("1.2.840.10008.") else uid_map.setdefault(str(v), generate_uid())
                       for v in values]
                elem.value = new if elem.VM > 1 else new[0]

    clean(ds)
    ds.PatientName = "ANONYMOUS"
    ds.PatientID = patient_id
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "spinebench convert-mri: names/dates/IDs blanked, new UIDs"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _write_png(dcm: Path, png: Path) -> None:
    """The slice as models see it: :func:`load_image` output, quantised to 8 bits."""
    from PIL import Image

    from spinebench.io import load_image

    img, _ = load_image(dcm)
    Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(png)
