"""convert_mri_series: the paper's MRI-to-2D step, on generated sagittal series and a real enhanced MR file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from conftest import write_dicom
from spinebench.cli import main
from spinebench.data.mri import convert_mri_series
from spinebench.errors import SpinebenchError
from spinebench.io import load_image

SECRETS = ("Doe^John", "MRN-123456", "19600101", "General Hospital of Nowhere", "Who^Doctor", "secret-private")
SAGITTAL = [0, 1, 0, 0, 0, -1]  # rows along anterior-posterior, columns head-to-foot: normal = (-1, 0, 0)


def slice_pixels(k: int) -> np.ndarray:
    """Distinct content per slice: a level of 200 * (k + 1) plus a ramp (so min-max is not degenerate)."""
    return (np.full((32, 32), 200 * (k + 1)) + np.arange(32)[None, :] * (k + 1)).astype(np.uint16)


def write_series(folder: Path, n: int = 9, *, orientation=SAGITTAL, series_uid: str | None = None,
                 positions: bool = True, seed: int = 0, **extra) -> dict[str, int]:
    """n slices at x = -20 + 5 k mm, written in shuffled order under meaningless names, with shuffled
    InstanceNumbers, so that only ImagePositionPatient gives the true order. Returns {SOPInstanceUID: k}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid, study_uid = series_uid or generate_uid(), generate_uid()
    sops = {}
    for file_no, k in enumerate(rng.permutation(n)):
        attrs = dict(SeriesInstanceUID=series_uid, StudyInstanceUID=study_uid, InstanceNumber=int(rng.integers(1, 99)),
                     ImageOrientationPatient=orientation, PatientName=SECRETS[0], PatientID=SECRETS[1],
                     PatientBirthDate=SECRETS[2], InstitutionName=SECRETS[3], ReferringPhysicianName=SECRETS[4],
                     SeriesDescription="T2 SAG", FrameOfReferenceUID="1.2.3.4.5.6", WindowCenter=1000,
                     WindowWidth=2000, PixelSpacing=[0.5, 0.5])
        attrs.update(extra)
        if positions:
            attrs["ImagePositionPatient"] = [-20.0 + 5.0 * k, -100.0, 100.0]
        p = write_dicom(folder / f"IM{file_no:04d}", slice_pixels(int(k)), modality="MR", bits_stored=12, **attrs)
        ds = pydicom.dcmread(p)
        ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", SECRETS[5])
        ds.save_as(p)
        sops[str(ds.SOPInstanceUID)] = int(k)
    return sops


def slice_index(path: Path) -> int:
    """Which generated slice a converted file holds, read from its pixels."""
    return int(pydicom.dcmread(path).pixel_array[0, 0]) // 200 - 1


def test_central_slices_in_order_deidentified(tmp_path):
    src = tmp_path / "series"
    sops = write_series(src)
    (src / "notes.txt").write_text("not dicom")  # other files in the folder are ignored
    out = tmp_path / "out"
    written = convert_mri_series(src, out, n_slices=3, patient_id="study-007")

    assert len(written) == 3 and all(p.suffix == ".dcm" and p.is_file() for p in written)
    ks = [slice_index(p) for p in written]
    # normal = (-1, 0, 0): ascending position along the normal is descending x, so the centre is 5, 4, 3
    assert ks == [5, 4, 3]
    xs = [float(pydicom.dcmread(p).ImagePositionPatient[0]) for p in written]
    assert xs == [5.0, 0.0, -5.0]

    outs = [pydicom.dcmread(p) for p in written]
    for ds, k in zip(outs, ks):
        np.testing.assert_array_equal(ds.pixel_array, slice_pixels(k))  # stored values unchanged
        assert "NumberOfFrames" not in ds or int(ds.NumberOfFrames) == 1
        assert ds.PatientName == "ANONYMOUS" and ds.PatientID == "study-007" and ds.PatientIdentityRemoved == "YES"
        assert ds.PatientBirthDate == "" and ds.InstitutionName == "" and ds.ReferringPhysicianName == ""
        assert ds.SeriesDescription == "T2 SAG" and float(ds.WindowCenter) == 1000
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # new UIDs: one new study and series for the call, a new SOP instance per slice, nothing reused
    assert len({ds.StudyInstanceUID for ds in outs}) == 1 and len({ds.SeriesInstanceUID for ds in outs}) == 1
    assert len({ds.SOPInstanceUID for ds in outs}) == 3 and len({ds.FrameOfReferenceUID for ds in outs}) == 1
    old = set(sops) | {str(pydicom.dcmread(next(src.glob("IM*"))).StudyInstanceUID), "1.2.3.4.5.6"}
    new = {str(u) for ds in outs for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                            ds.FrameOfReferenceUID)}
    assert not old & new
    # no identity anywhere in the written bytes (private tags included)
    for p in written:
        raw = p.read_bytes()
        for s in SECRETS:
            assert s.encode() not in raw, s

    # PNG twins: 8-bit, what load_image gives
    for p in written:
        png = p.with_suffix(".png")
        im = Image.open(png)
        assert im.mode == "L" and im.size == (32, 32)
        img, _ = load_image(p)
        np.testing.assert_array_equal(np.asarray(im), np.rint(img * 255).astype(np.uint8))


def test_malformed_identity_values_stay_out_of_logs(tmp_path, caplog, recwarn):
    """Identity is replaced without decoding it: a malformed value (pydicom raises on a bad DS, and quotes
    bad values in warnings) must neither break the conversion nor reach the logs or the output."""
    import logging

    src = tmp_path / "series"
    write_series(src, n=3, PatientBirthDate="1960-01-01 (Doe)", PatientWeight="71.000")  # DA not valid
    for p in src.glob("IM*"):  # a DS pydicom cannot decode (it raises ValueError); same length, valid file
        raw = p.read_bytes()
        assert raw.count(b"71.000") == 1
        p.write_bytes(raw.replace(b"71.000", b"71 Doe"))
    caplog.clear()
    recwarn.clear()
    caplog.set_level(logging.DEBUG)
    written = convert_mri_series(src, tmp_path / "out", n_slices=1)
    shown = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "1960-01-01" not in shown and "Doe" not in shown
    assert b"1960-01-01" not in written[0].read_bytes() and b"Doe" not in written[0].read_bytes()


def test_instance_number_fallback_and_slice_count(tmp_path):
    src = tmp_path / "series"
    write_series(src, n=5, positions=False)
    written = convert_mri_series(src, tmp_path / "out", n_slices=1)
    assert len(written) == 1 and written[0].with_suffix(".png").is_file()
    with pytest.raises(SpinebenchError, match="has 5 slice.*fewer than the 6"):
        convert_mri_series(src, tmp_path / "out2", n_slices=6)
    with pytest.raises(SpinebenchError, match="positive"):
        convert_mri_series(src, tmp_path / "out3", n_slices=0)


def test_refuses_folder_without_dicom(tmp_path):
    src = tmp_path / "nodicom"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "b.png")
    with pytest.raises(SpinebenchError, match="no DICOM images found.*2 files"):
        convert_mri_series(src, tmp_path / "out")
    with pytest.raises(SpinebenchError, match="no such folder"):
        convert_mri_series(tmp_path / "missing", tmp_path / "out")


def test_refuses_two_series_and_says_which(tmp_path):
    src = tmp_path / "study"
    a, b = generate_uid(), generate_uid()
    write_series(src / "s1", n=3, series_uid=a, seed=1)
    write_series(src / "s2", n=3, series_uid=b, seed=2)
    with pytest.raises(SpinebenchError) as err:
        convert_mri_series(src, tmp_path / "out")
    msg = str(err.value)
    assert "holds 2 series" in msg and a in msg and b in msg and "\n" not in msg


def test_refuses_axial_series(tmp_path):
    src = tmp_path / "axial"
    write_series(src, n=5, orientation=[1, 0, 0, 0, 1, 0])
    with pytest.raises(SpinebenchError, match="axial"):
        convert_mri_series(src, tmp_path / "out")


def test_enhanced_multiframe_ordered_by_plane_position(tmp_path, dicom_testfile):
    """A real enhanced MR file (10 frames), given sagittal per-frame positions in reverse stored order."""
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(dicom_testfile("emri_small.dcm"))
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = SAGITTAL
    shared.PlaneOrientationSequence = [orient]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    for f in range(10):
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [float(f), -100.0, 100.0]  # x grows with f: along the normal it falls
        item.PlanePositionSequence = [pos]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    src = tmp_path / "enhanced"
    src.mkdir()
    ds.save_as(src / "emri.dcm")

    written = convert_mri_series(src, tmp_path / "out", n_slices=3)
    # ordered along the normal (-1, 0, 0): frames 9..0; the central three are frames 6, 5, 4
    for p, frame in zip(written, (6, 5, 4)):
        out = pydicom.dcmread(p)
        assert int(out.NumberOfFrames) == 1 and len(out.PerFrameFunctionalGroupsSequence) == 1
        assert float(out.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient[0]) == frame
        np.testing.assert_array_equal(out.pixel_array, pydicom.pixels.pixel_array(ds, index=frame))


def test_cli(tmp_path, capsys):
    code = main(["data", "convert-mri", str(tmp_path / "nope"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("spinebench: error:") and err.count("\n") == 1 and "nope" in err
    src = tmp_path / "series"
    write_series(src, n=7)
    assert main(["-q", "data", "convert-mri", str(src), str(tmp_path / "out"), "--slices", "2"]) == 0
    assert "wrote 2 slices" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    # outputs written inside the series folder are not taken for a second series on a rerun
    for _ in range(2):
        assert main(["-q", "data", "convert-mri", str(src), str(src / "converted")]) == 0
