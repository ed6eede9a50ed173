"""The pixel contract of spinebench.io.load_image, on real DICOM files (pydicom, pydicom-data) and on a
generated corpus of bad and unusual inputs."""

from __future__ import annotations

import gzip
import io
import logging
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spinebench.errors import ImageLoadError, SpinebenchError
from spinebench.io import SUPPORTED_EXTENSIONS, is_dicom, load_image
from conftest import write_dicom

META_KEYS = {"format", "height", "width", "bits_stored", "photometric", "modality", "pixel_spacing", "frames",
             "inverted", "transfer_syntax", "window", "voi"}


def assert_contract(img: np.ndarray, meta: dict) -> None:
    assert isinstance(img, np.ndarray) and img.dtype == np.float32 and img.ndim == 2
    assert img.flags["C_CONTIGUOUS"]
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    assert set(meta) == META_KEYS
    assert (meta["height"], meta["width"]) == img.shape


# ------------------------------------------------------------------------------------------- real DICOM files

def region(img: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    h, w = img.shape
    return float(img[int(rows[0] * h):int(rows[1] * h), int(cols[0] * w):int(cols[1] * w)].mean())


def test_cr_chest_monochrome1_is_inverted(dicom_testfile):
    """RG1: a real CR chest PA stored MONOCHROME1. After loading, lungs (air) must be dark and the spine
    and mediastinum bright, i.e. the stored values were inverted."""
    img, meta = load_image(dicom_testfile("RG1_UNCR.dcm"))
    assert_contract(img, meta)
    assert meta["photometric"] == "MONOCHROME1" and meta["inverted"] is True and meta["modality"] == "CR"
    assert meta["window"] == (15000.0, 30000.0) and meta["voi"] == "window"
    assert meta["pixel_spacing"] is None  # the file says 0.0\0.0, which is no spacing
    rows = (0.2, 0.5)
    right_lung, left_lung = region(img, rows, (0.2, 0.35)), region(img, rows, (0.65, 0.8))
    spine = region(img, rows, (0.47, 0.53))
    assert spine > right_lung + 0.15 and spine > left_lung + 0.15
    assert region(img, (0.55, 0.7), (0.43, 0.57)) > right_lung + 0.15  # mediastinum / heart


def test_cr_window_matches_the_dicom_formula(dicom_testfile):
    """The CR window (stored values, then inverted) follows PS3.3 C.11.2.1.2 exactly."""
    import pydicom

    path = dicom_testfile("RG3_UNCR.dcm")
    img, meta = load_image(path)
    x = pydicom.dcmread(path).pixel_array.astype(np.float64)
    c, w = meta["window"]
    expected = 1.0 - np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-5)


def test_ct_window_with_rescale(dicom_testfile):
    """CT: Modality LUT (HU = raw * slope + intercept) then the 40/100 soft-tissue window."""
    import pydicom

    path = dicom_testfile("693_UNCR.dcm")
    img, meta = load_image(path)
    assert_contract(img, meta)
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip((hu - 39.5) / 99.0 + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-5)
    assert meta["window"] == (40.0, 100.0) and meta["pixel_spacing"] == (0.478516, 0.478516)
    assert (img == 0).mean() > 0.1 and (img == 1).mean() > 0.01  # a narrow window saturates


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_padded.dcm"])
def test_every_transfer_syntax_gives_the_same_pixels(dicom_testfile, name):
    """Lossless RLE, JPEG 2000, JPEG-LS, big endian, implicit VR: the same image as the uncompressed file."""
    ref, ref_meta = load_image(dicom_testfile("MR_small.dcm"))
    img, meta = load_image(dicom_testfile(name))
    assert_contract(img, meta)
    np.testing.assert_array_equal(img, ref)
    assert meta["window"] == ref_meta["window"] == (600.0, 1600.0)
    assert meta["transfer_syntax"] != ref_meta["transfer_syntax"] or name == "MR_small_padded.dcm"


def test_jpeg2000_16bit_monochrome2(dicom_testfile):
    """JPEG 2000 lossless, 12 bits in 16, 1024 x 1024 MR with a window: equal to its uncompressed twin."""
    img, meta = load_image(dicom_testfile("MR2_J2KR.dcm"))
    ref, _ = load_image(dicom_testfile("MR2_UNCR.dcm"))
    assert_contract(img, meta)
    assert "JPEG 2000" in meta["transfer_syntax"] and meta["bits_stored"] == 12
    assert meta["photometric"] == "MONOCHROME2" and meta["inverted"] is False and meta["window"] == (1000.0, 2000.0)
    np.testing.assert_array_equal(img, ref)


def test_uncompressed_16bit_without_window_is_min_max(dicom_testfile):
    img, meta = load_image(dicom_testfile("JPEG2000_UNC.dcm"))
    assert_contract(img, meta)
    assert meta["transfer_syntax"] == "Explicit VR Little Endian" and meta["bits_stored"] == 16
    assert meta["voi"] == "minmax" and img.min() == 0.0 and img.max() == 1.0


def test_jpeg_lossless_and_baseline(dicom_testfile):
    img, meta = load_image(dicom_testfile("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert_contract(img, meta)
    assert "JPEG Lossless" in meta["transfer_syntax"] and meta["window"] == (127.0, 254.0)
    # JPEG baseline (lossy, YBR) colour vs the uncompressed RGB original: same grey image within JPEG error
    ref, _ = load_image(dicom_testfile("SC_rgb.dcm"))
    img, meta = load_image(dicom_testfile("SC_rgb_dcmtk_+eb+cy+n1.dcm"))
    assert_contract(img, meta)
    assert meta["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert np.abs(img - ref).mean() < 0.02


def test_rle_colour_equals_uncompressed(dicom_testfile):
    img, meta = load_image(dicom_testfile("SC_rgb_rle.dcm"))
    ref, _ = load_image(dicom_testfile("SC_rgb.dcm"))
    assert meta["transfer_syntax"] == "RLE Lossless"
    np.testing.assert_allclose(img, ref, atol=1e-6)


def test_rgb_dicom_becomes_luma(dicom_testfile):
    import pydicom

    path = dicom_testfile("SC_rgb.dcm")
    img, _ = load_image(path)
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    np.testing.assert_allclose(img, (rgb @ [0.299, 0.587, 0.114]) / 255.0, atol=1e-5)


def test_multi_frame(dicom_testfile):
    path = dicom_testfile("emri_small.dcm")
    img0, meta = load_image(path)
    assert_contract(img0, meta)
    assert meta["frames"] == 10 and img0.shape == (64, 64)
    img3, _ = load_image(path, frame=3)
    assert not np.array_equal(img0, img3)
    rle3, _ = load_image(dicom_testfile("emri_small_RLE.dcm"), frame=3)
    np.testing.assert_array_equal(rle3, img3)
    with pytest.raises(ImageLoadError, match="multi-frame.*10 frames"):
        load_image(path, frame=None)
    with pytest.raises(ImageLoadError, match="frame 10 out of range"):
        load_image(path, frame=10)


def test_voi_lut_sequence_and_palette(dicom_testfile):
    img, meta = load_image(dicom_testfile("vlut_04.dcm"))
    assert_contract(img, meta)
    assert meta["voi"] == "lut" and img.min() == 0.0 and img.max() == 1.0
    path = dicom_testfile("OT-PAL-8-face.dcm")  # PALETTE COLOR, and no preamble: recognised by content
    assert is_dicom(path)
    img, meta = load_image(path)
    assert_contract(img, meta)
    assert meta["photometric"] == "PALETTE COLOR" and img.std() > 0.1


def test_non_image_dicom_refused(dicom_testfile):
    path = dicom_testfile("rtplan.dcm")
    with pytest.raises(ImageLoadError, match="without pixel data"):
        load_image(path)


def test_identity_never_leaks(tmp_path, caplog):
    """Patient identity set in the file appears neither in meta, nor in log output, nor in error messages."""
    secrets = ("Doe^Jane", "SECRET-ID-4711", "19391231", "Hospital of Secrets")
    px = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3)
    ok = write_dicom(tmp_path / "ok.dcm", px, PatientName=secrets[0], PatientID=secrets[1],
                     PatientBirthDate=secrets[2], InstitutionName=secrets[3], WindowCenter=1000, WindowWidth=800)
    bad = write_dicom(tmp_path / "bad.dcm", px, PatientName=secrets[0], PatientID=secrets[1],
                      PatientBirthDate=secrets[2], PhotometricInterpretation="HSV")
    caplog.set_level(logging.DEBUG)
    _, meta = load_image(ok)
    with pytest.raises(ImageLoadError) as err:
        load_image(bad)
    with pytest.raises(ImageLoadError) as err2:
        load_image(ok.read_bytes()[:-300])
    shown = repr(meta) + caplog.text + str(err.value) + str(err2.value)
    assert "loaded" in caplog.text  # the loader did log, so the check below is not vacuous
    for s in secrets:
        assert s not in shown
    assert set(meta) == META_KEYS


# ----------------------------------------------------------------------------------- generated corpus (bad/odd)

def png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header claiming any size, with a tiny (valid zlib) data chunk: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def jpeg_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def tiff_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


GRAD8 = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))  # 16 x 32, 0..248
RNG = np.random.default_rng(0)


def _write(name: str, data: bytes):
    def build(tmp: Path) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p
    return build


def _dicom(name: str, pixels=None, truncate: int = 0, **attrs):
    def build(tmp: Path) -> Path:
        px = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50 if pixels is None else pixels
        p = write_dicom(tmp / name, px, **attrs)
        if truncate:
            p.write_bytes(p.read_bytes()[:-truncate])
        return p
    return build


def _dicom_unsupported_ts(tmp: Path) -> Path:
    import pydicom
    from pydicom.encaps import encapsulate

    p = write_dicom(tmp / "mpeg.dcm", np.zeros((8, 8), np.uint8))
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    ds.PixelData = encapsulate([b"\0" * 16])
    ds["PixelData"].VR = "OB"
    ds.save_as(p)
    return p


def _expect_equal(expected: np.ndarray, atol: float = 1e-6, **meta_expect):
    def check(img, meta):
        np.testing.assert_allclose(img, expected, atol=atol)
        for k, v in meta_expect.items():
            assert meta[k] == v, (k, meta[k], v)
    return check


_u16_12bit = (np.arange(16 * 32, dtype=np.uint16).reshape(16, 32) * 8)  # max 4088: 12 bits used
_u16_full = (np.arange(16 * 32, dtype=np.uint16).reshape(16, 32) * 128)  # max 65408: 16 bits
_rgba = np.zeros((4, 4, 4), np.uint8)
_rgba[..., 0], _rgba[..., 3] = 200, 0  # red, fully transparent: alpha is dropped, not composited
_f32_in = np.linspace(0.1, 0.6, 64, dtype=np.float32).reshape(8, 8)
_f32_out = np.linspace(-5, 20, 64, dtype=np.float32).reshape(8, 8)
_rgb16 = np.stack([_u16_full, _u16_full // 2, _u16_full // 4], -1)
_mono = np.arange(64, dtype=np.uint16).reshape(8, 8) * 64  # 0..4032
_frames = np.stack([np.full((8, 8), v, np.uint16) for v in (100, 2000, 4000)]) + np.arange(8, dtype=np.uint16)


def _palette_png() -> bytes:
    im = Image.fromarray(GRAD8).convert("P")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("image.png", png_bytes(GRAD8))
    return buf.getvalue()


def _multipage_tiff(tmp: Path) -> Path:
    p = tmp / "pages.tif"
    tifffile.imwrite(p, np.stack([GRAD8, 255 - GRAD8]), photometric="minisblack")
    return p


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(GRAD8).save(buf, format="GIF")
    return buf.getvalue()


def _bmp() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(GRAD8).save(buf, format="BMP")
    return buf.getvalue()


def _dicom_as(tmp: Path, name: str, **kw) -> Path:
    return write_dicom(tmp / name, _mono, **kw)


# (id, builder(tmp_path) -> path, load kwargs, expectation): expectation is a check(img, meta) or an error regex
CASES = [
    # --- refused ---
    ("missing", lambda t: t / "nope.png", {}, "no such file"),
    ("directory", lambda t: t, {}, "is a directory"),
    ("empty", _write("empty.png", b""), {}, "empty file"),
    ("text", _write("notes.png", b"patient notes\nline two\n" * 10), {}, "text file"),
    ("random_bytes", _write("noise.jpg", RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes()), {},
     "not a recognised image"),
    ("zip", _write("archive.png", _zip_bytes()), {}, "ZIP"),
    ("pdf", _write("scan.tif", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"), {}, "PDF"),
    ("gzip", _write("img.dcm", gzip.compress(png_bytes(GRAD8))), {}, "gzip"),
    ("gif", _write("anim.gif", _gif()), {}, "GIF"),
    ("bmp", _write("old.bmp", _bmp()), {}, "BMP"),
    ("png_truncated", _write("cut.png", png_bytes(RNG.integers(0, 256, (64, 64), dtype=np.uint8))[:300]), {},
     "truncated|corrupt"),
    ("png_header_only", _write("head.png", png_bytes(GRAD8)[:20]), {}, "corrupt|truncated"),
    ("png_bad_crc", _write("crc.png", png_bytes(GRAD8)[:29] + b"\0\0\0\0" + png_bytes(GRAD8)[33:]), {},
     "corrupt|truncated"),
    ("jpeg_truncated", _write("cut.jpg", jpeg_bytes(RNG.integers(0, 256, (64, 64), dtype=np.uint8))[:400]), {},
     "truncated|corrupt"),
    ("jpeg_garbage", _write("bad.jpg", b"\xff\xd8\xff\xe0" + RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes()),
     {}, "corrupt|truncated"),
    ("png_bomb_100000", _write("bomb.png", png_declaring(100_000, 100_000)), {}, "absurd|exceeds"),
    ("png_over_max_pixels", _write("big.png", png_bytes(GRAD8)), {"max_pixels": 100}, "exceeds the limit of 100"),
    ("png_zero_width", _write("zero.png", png_declaring(0, 10)), {}, "zero-sized|corrupt"),
    ("dicom_truncated", _dicom("cut.dcm", truncate=60), {}, "corrupt|unreadable|pixel data"),
    ("dicom_rows_60000", _dicom("huge.dcm", Rows=60000, Columns=60000), {}, "60000 x 60000 exceeds"),
    ("dicom_zero_rows", _dicom("zero.dcm", Rows=0), {}, "zero-sized"),
    ("dicom_no_pixeldata", _dicom("nopix.dcm", PixelData=None), {}, "without pixel data"),
    ("dicom_unsupported_photometric", _dicom("hsv.dcm", PhotometricInterpretation="HSV"), {},
     "unsupported DICOM PhotometricInterpretation 'HSV'"),
    ("dicom_unsupported_ts", _dicom_unsupported_ts, {}, "unsupported DICOM transfer syntax MPEG2"),
    ("dicom_garbage_after_dicm",
     _write("junk.dcm", b"\0" * 128 + b"DICM" + RNG.integers(0, 256, 500, np.uint8).tobytes()), {},
     "corrupt|unreadable|pixel data"),
    ("dicom_multiframe_frame_none", _dicom("mf.dcm", pixels=_frames), {"frame": None}, "multi-frame"),
    ("dicom_frame_out_of_range", _dicom("mf2.dcm", pixels=_frames), {"frame": 5}, "frame 5 out of range"),
    ("tiff_nan", _write("nan.tif", tiff_bytes(np.array([[0.0, np.nan], [1.0, 2.0]], np.float32))), {},
     "NaN or infinite"),
    ("tiff_truncated", _write("cut.tif", tiff_bytes(RNG.integers(0, 65535, (64, 64), dtype=np.uint16))[:2000]), {},
     "corrupt|truncated|unreadable"),
    ("fake_preamble_less", _write("x.dcm", b"\x08\x00\x05\x00" + RNG.integers(0, 256, 300, np.uint8).tobytes()), {},
     "not a recognised image"),
    ("tiff_frame_none", _multipage_tiff, {"frame": None}, "multi-frame.*2 frames"),
    # --- loaded ---
    ("png_named_dcm", _write("really_png.dcm", png_bytes(GRAD8)), {},
     _expect_equal(GRAD8 / 255.0, format="png", bits_stored=8)),
    ("dicom_named_png", lambda t: _dicom_as(t, "really_dicom.png", WindowCenter=2000, WindowWidth=4001), {},
     _expect_equal(np.clip((_mono - 1999.5) / 4000 + 0.5, 0, 1), format="dicom", voi="window")),
    ("dicom_no_extension", lambda t: _dicom_as(t, "IM000001"), {},
     _expect_equal(_mono / 4032.0, format="dicom", voi="minmax")),
    ("dicom_no_preamble", lambda t: _dicom_as(t, "bare.dcm", preamble=False), {},
     _expect_equal(_mono / 4032.0, format="dicom")),
    ("dicom_monochrome1", lambda t: _dicom_as(t, "mono1.dcm", photometric="MONOCHROME1"), {},
     _expect_equal(1 - _mono / 4032.0, inverted=True)),
    ("dicom_bad_window_falls_back", lambda t: _dicom_as(t, "w0.dcm", WindowCenter=100, WindowWidth=0), {},
     _expect_equal(_mono / 4032.0, voi="minmax", window=None)),
    ("dicom_two_windows_first_used", lambda t: _dicom_as(t, "w2.dcm", WindowCenter=[1000, 3000],
                                                          WindowWidth=[2001, 10]), {},
     _expect_equal(np.clip((_mono - 999.5) / 2000 + 0.5, 0, 1), window=(1000.0, 2001.0))),
    ("dicom_rescale_then_minmax", lambda t: _dicom_as(t, "resc.dcm", RescaleSlope=-2, RescaleIntercept=10), {},
     _expect_equal(1 - _mono / 4032.0, voi="minmax")),
    ("dicom_multiframe_pick", _dicom("mf3.dcm", pixels=_frames), {"frame": 2},
     _expect_equal(np.tile(np.arange(8) / 7.0, (8, 1)), frames=3)),
    ("png16_12bit_content", _write("d12.png", png_bytes(_u16_12bit)), {},
     _expect_equal(_u16_12bit / 4095.0, bits_stored=12)),
    ("png16_full_range", _write("d16.png", png_bytes(_u16_full)), {},
     _expect_equal(_u16_full / 65535.0, bits_stored=16)),
    ("tiff16", _write("d16.tif", tiff_bytes(_u16_12bit)), {}, _expect_equal(_u16_12bit / 4095.0, format="tiff")),
    ("tiff16_rgb_keeps_depth", _write("rgb16.tif", tiff_bytes(_rgb16, photometric="rgb")), {},
     _expect_equal((_rgb16 @ [0.299, 0.587, 0.114]) / 65535.0, atol=1e-5, bits_stored=16)),
    ("tiff_float_in_range", _write("f.tif", tiff_bytes(_f32_in)), {}, _expect_equal(_f32_in, voi="range")),
    ("tiff_float_out_of_range", _write("f2.tif", tiff_bytes(_f32_out)), {},
     _expect_equal((_f32_out + 5) / 25, atol=1e-6, voi="minmax")),
    ("tiff_signed", _write("s.tif", tiff_bytes(np.array([[-100, 0], [50, 100]], np.int16))), {},
     _expect_equal(np.array([[0, 0.5], [0.75, 1.0]]), voi="minmax")),
    ("tiff_miniswhite", _write("mw.tif", tiff_bytes(GRAD8, photometric="miniswhite")), {},
     _expect_equal(1 - GRAD8 / 255.0, inverted=True)),
    ("tiff16_miniswhite", _write("mw16.tif", tiff_bytes(_u16_12bit, photometric="miniswhite")), {},
     _expect_equal(1 - _u16_12bit / 4095.0, inverted=True)),
    ("tiff_page_2", _multipage_tiff, {"frame": 1}, _expect_equal(1 - GRAD8 / 255.0, frames=2)),
    ("rgba_png", _write("rgba.png", png_bytes(_rgba)), {}, _expect_equal(np.full((4, 4), 200 * 0.299 / 255))),
    ("la_png", _write("la.png", png_bytes(np.stack([GRAD8, np.zeros_like(GRAD8)], -1))), {},
     _expect_equal(GRAD8 / 255.0)),
    ("palette_png", _write("pal.png", _palette_png()), {}, _expect_equal(GRAD8 / 255.0, atol=2 / 255)),
    ("one_bit_png", _write("bw.png", png_bytes(GRAD8 > 100)), {}, _expect_equal((GRAD8 > 100).astype(float))),
    ("one_by_one", _write("px.png", png_bytes(np.array([[77]], np.uint8))), {}, _expect_equal(np.array([[77 / 255]]))),
    ("jpeg_gray", _write("g.jpg", jpeg_bytes(GRAD8)), {}, _expect_equal(GRAD8 / 255.0, atol=0.03, format="jpeg")),
    ("jpeg_cmyk", _write("cmyk.jpg", jpeg_bytes(np.stack([GRAD8] * 3, -1), mode="CMYK")), {},
     _expect_equal(GRAD8 / 255.0, atol=0.05)),
    ("bytes_input", lambda t: png_bytes(GRAD8), {}, _expect_equal(GRAD8 / 255.0)),
]


@pytest.mark.parametrize("build, kwargs, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_corpus(tmp_path, build, kwargs, expect):
    src = build(tmp_path)
    if isinstance(expect, str):
        with pytest.raises(ImageLoadError) as err:
            load_image(src, **kwargs)
        msg = str(err.value)
        assert "\n" not in msg
        assert (str(src) if not isinstance(src, bytes) else "<bytes>") in msg
        import re
        assert re.search(expect, msg), msg
        assert isinstance(err.value, SpinebenchError)
    else:
        img, meta = load_image(src, **kwargs)
        assert_contract(img, meta)
        expect(img, meta)


def test_corpus_is_big_enough():
    assert sum(isinstance(c[3], str) for c in CASES) >= 30 and len(CASES) >= 50


def test_is_dicom_by_content(tmp_path):
    d = write_dicom(tmp_path / "image.png", _mono)
    p = tmp_path / "image.dcm"
    p.write_bytes(png_bytes(GRAD8))
    bare = write_dicom(tmp_path / "bare", _mono, preamble=False)
    assert is_dicom(d) and is_dicom(d.read_bytes()) and is_dicom(bare)
    assert not is_dicom(p) and not is_dicom(tmp_path / "missing.dcm") and not is_dicom(b"")
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"} <= set(SUPPORTED_EXTENSIONS)
