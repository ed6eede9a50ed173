"""The one image loader: every image that enters spinebench (data sets, CLI, demo) passes through
:func:`load_image`, so every model sees pixels that follow one contract.

The pixel contract
------------------
``img, meta = load_image(src)`` returns

* ``img``: ``numpy.ndarray``, dtype ``float32``, shape ``(H, W)`` (one grey channel, rows first), C-contiguous,
  every value finite and in ``[0, 1]``.
* **Bright = dense**: bone and metal near 1, air near 0, as a radiograph is displayed (DICOM ``MONOCHROME2``).
  ``MONOCHROME1`` DICOMs (and TIFFs stored ``MINISWHITE``) are inverted to get there; ``meta["inverted"]``
  says so. A ``PresentationLUTShape`` of ``INVERSE`` flips the result once more.
* Pixels as stored: no EXIF rotation, no cropping, no resizing, so box and landmark coordinates given in pixels
  of the file stay valid.
* Colour (RGB, YBR, palette, RGBA) becomes grey by ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``;
  alpha is dropped.

How values reach ``[0, 1]``:

* DICOM, monochrome: stored values -> Modality LUT (``RescaleSlope``/``Intercept`` or a Modality LUT
  sequence, :func:`pydicom.pixels.apply_modality_lut`) -> VOI LUT (a VOI LUT sequence if present, else the
  first ``WindowCenter``/``WindowWidth``, :func:`pydicom.pixels.apply_voi_lut`), scaled so that the VOI
  output range maps to ``[0, 1]`` (a window saturates outside itself, as on a viewing station). Without a VOI
  LUT or window: min-max of the image. ``BitsStored`` is respected (unused high bits are masked by pydicom).
  Window/LUT attributes inside enhanced (multi-frame) functional groups are honoured.
* DICOM, colour: divided by ``2**BitsStored - 1`` (colour images are already display values).
* PNG / JPEG / TIFF, unsigned integers: divided by ``2**bits - 1`` where ``bits`` is the **effective bit
  depth**: 8 for 8-bit files; for deeper files the smallest of 8, 10, 12, 14, 16 (then 24, 32) bits that holds
  the image's maximum. A 12-bit detector image stored in a 16-bit PNG is thus divided by 4095, not 65535
  (it would otherwise be almost black), and the scale stays linear and anchored at 0, so the relative contrast
  of the file is kept (a min-max stretch would not keep it). ``meta["bits_stored"]`` records the depth used.
* Signed integers with negative values: min-max. Floats: kept if already within ``[0, 1]``, else min-max;
  NaN or infinite values are refused. Boolean / 1-bit: 0 and 1. A constant image becomes all zeros.

``meta`` never carries patient identity. Its keys (always all present; ``None`` where not applicable)::

    format          "dicom" | "png" | "jpeg" | "tiff"
    height, width   int, the shape of ``img``
    bits_stored     int: DICOM BitsStored, or the effective bit depth used to scale a PNG/JPEG/TIFF
    photometric     DICOM PhotometricInterpretation, or the Pillow mode ("L", "RGB", "I;16", ...) /
                    tifffile photometric of other files
    modality        DICOM Modality ("CR", "DX", "MR", ...) or None
    pixel_spacing   (row_mm, col_mm) from PixelSpacing, ImagerPixelSpacing or the enhanced Pixel Measures,
                    or None (also when the file says 0)
    frames          number of frames in the file (the loaded one is the ``frame`` argument)
    inverted        True when the stored values were inverted to reach bright = dense
    transfer_syntax DICOM transfer syntax name, else None
    window          (center, width) of the window applied, else None
    voi             how values were scaled: "window", "lut", "minmax" or "range" (bit depth / [0, 1] floats)

Everything that cannot be read as such an image raises :class:`~spinebench.errors.ImageLoadError` with one
line that names the file and the problem; no other exception escapes for bad input.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.errors import ImageLoadError

log = logging.getLogger(__name__)

__all__ = ["load_image", "is_dicom", "SUPPORTED_EXTENSIONS", "DEFAULT_MAX_PIXELS"]

#: File name endings for file pickers. DICOM is recognised by content, so files without an ending load too.
SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".dic")
#: Refuse images with more pixels than this before decoding them (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 80_000_000

_LUMA = np.array([0.299, 0.587, 0.114])
_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "TIFF": "tiff"}
# signatures of common non-image files, for a clearer refusal than "cannot identify"
_NOT_IMAGES = ((b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "an empty ZIP archive"), (b"%PDF", "a PDF"),
               (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"),
               (b"GIF8", "a GIF (not supported)"), (b"BM", "a BMP (not supported)"))
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PHOTOMETRIC_OK = {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT",
                   "PALETTE COLOR"}


def _meta(fmt: str, **kw: Any) -> dict:
    meta = {"format": fmt, "height": 0, "width": 0, "bits_stored": None, "photometric": None, "modality": None,
            "pixel_spacing": None, "frames": 1, "inverted": False, "transfer_syntax": None, "window": None,
            "voi": None}
    meta.update(kw)
    return meta


class _Src:
    """A file path or an in-memory file, with a display name for messages."""

    def __init__(self, src: str | os.PathLike | bytes | bytearray | memoryview):
        if isinstance(src, (bytes, bytearray, memoryview)):
            self.path, self.data, self.name = None, bytes(src), "<bytes>"
            self.size = len(self.data)
            return
        if not isinstance(src, (str, os.PathLike)):
            raise ImageLoadError(f"{src!r}: expected a file path or bytes, got {type(src).__name__}")
        self.path, self.data, self.name = Path(src), None, str(src)
        try:
            if not self.path.exists():
                raise ImageLoadError(f"{self.name}: no such file")
            if self.path.is_dir():
                raise ImageLoadError(f"{self.name}: is a directory, not an image file")
            self.size = self.path.stat().st_size
        except OSError as e:  # permission denied, name too long...
            raise ImageLoadError(f"{self.name}: cannot access file ({e.strerror or e})") from e

    def head(self, n: int = 132) -> bytes:
        if self.data is not None:
            return self.data[:n]
        try:
            with open(self.path, "rb") as f:
                return f.read(n)
        except OSError as e:
            raise ImageLoadError(f"{self.name}: cannot read file ({e.strerror or e})") from e

    def open(self):
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_image(src: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               frame: int | None = 0) -> tuple[np.ndarray, dict]:
    """Load any supported image (PNG, JPEG, TIFF, DICOM by content) under the pixel contract of this module.

    ``frame`` picks the frame of a multi-frame DICOM or multi-page TIFF (default the first); ``frame=None``
    refuses multi-frame files instead of silently taking one frame. ``max_pixels`` bounds the declared
    frame size, checked before anything is decoded.
    """
    s = _Src(src)
    if s.size == 0:
        raise ImageLoadError(f"{s.name}: empty file")
    dicom = _is_dicom_src(s)
    try:
        if dicom:
            img, meta = _load_dicom(s, max_pixels, frame)
        else:
            img, meta = _load_raster(s, max_pixels, frame)
    except ImageLoadError:
        raise
    except MemoryError as e:
        raise ImageLoadError(f"{s.name}: not enough memory to decode this image") from e
    except Exception as e:  # third-party decoders raise anything on corrupt input; keep it one line
        log.debug("decoding %s failed", s.name, exc_info=True)
        kind = "DICOM" if dicom else "image"
        raise ImageLoadError(f"{s.name}: corrupt or unreadable {kind} ({type(e).__name__}: {_one_line(e)})") from e
    img = np.ascontiguousarray(img, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise ImageLoadError(f"{s.name}: decoded to an unusable array of shape {img.shape}")
    if not np.isfinite(img).all():
        raise ImageLoadError(f"{s.name}: contains NaN or infinite pixel values")
    np.clip(img, 0.0, 1.0, out=img)
    meta["height"], meta["width"] = img.shape
    log.debug("loaded %s: %s %dx%d, %s", s.name, meta["format"], meta["width"], meta["height"], meta["voi"])
    return img, meta


# ---------------------------------------------------------------------------------------------------- DICOM

def is_dicom(path_or_bytes: str | os.PathLike | bytes) -> bool:
    """True if the content is DICOM: the 'DICM' marker at byte 128, or (no preamble) a data set that starts
    with group 0002/0008 and parses with valid group-0008 elements. File names are never looked at."""
    try:
        s = _Src(path_or_bytes)
        return s.size > 0 and _is_dicom_src(s)
    except ImageLoadError:
        return False


def _is_dicom_src(s: _Src) -> bool:
    head = s.head(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # preamble-less: the first tag must be group 0002 or 0008 (little or big endian)
    if head[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    import pydicom

    try:
        with s.open() as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f, force=True, stop_before_pixels=True)
        return any(tag.group == 0x0008 for tag in ds.keys())
    except Exception:
        return False


def _frame_view(ds, index: int):
    """The attributes that drive LUTs and spacing for one frame, merged from the top level and the enhanced
    functional groups (pydicom's LUT functions only look at the top level)."""
    from pydicom.dataset import Dataset

    view = Dataset()
    for kw in ("PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
               "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "VOILUTSequence",
               "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelSpacing", "ImagerPixelSpacing"):
        if kw in ds:
            setattr(view, kw, ds[kw].value)
    groups = []
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and 0 <= index < len(per):
        groups.append(per[index])
    for g in groups:
        for seq, kws in (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
                         ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
                         ("PixelMeasuresSequence", ("PixelSpacing",))):
            if seq in g and len(g[seq].value):
                item = g[seq].value[0]
                for kw in kws:
                    if kw in item:
                        setattr(view, kw, item[kw].value)
    return view


def _first_number(value) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _spacing(view) -> tuple[float, float] | None:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = view.get(kw)
        try:
            r, c = float(v[0]), float(v[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if r > 0 and c > 0 and math.isfinite(r) and math.isfinite(c):
            return (r, c)
    return None


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return arr  # refused by the finiteness check in load_image
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) * np.float32(1.0 / (hi - lo))


def _load_dicom(s: _Src, max_pixels: int, frame: int | None) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom import uid as uids
    from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array

    with s.open() as f:
        ds = pydicom.dcmread(f, force=True)
    name = s.name
    if not any(kw in ds for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = ds.get("Modality") or "unknown"
        raise ImageLoadError(f"{name}: DICOM without pixel data (modality {modality}), not an image")

    fm = getattr(ds, "file_meta", None)
    ts = fm.get("TransferSyntaxUID") if fm is not None else None
    if ts is None:
        # no file meta (preamble-less file): the encoding pydicom detected tells the native transfer syntax
        if "PixelData" in ds and ds["PixelData"].is_undefined_length:
            raise ImageLoadError(f"{name}: compressed DICOM pixel data without a transfer syntax, cannot decode")
        implicit, little = ds.original_encoding
        ts = (uids.ImplicitVRLittleEndian if implicit else
              uids.ExplicitVRLittleEndian if little else uids.ExplicitVRBigEndian)
        if fm is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    ts = uids.UID(str(ts))
    ts_name = ts.name if ts.is_transfer_syntax else str(ts)
    if "PixelData" in ds:
        if not ts.is_transfer_syntax:
            raise ImageLoadError(f"{name}: unknown DICOM transfer syntax {ts_name}")
        try:
            decoder = get_decoder(ts) if ts.is_compressed else None
        except NotImplementedError:
            decoder = None
        if ts.is_compressed and (decoder is None or not decoder.is_available):
            raise ImageLoadError(f"{name}: unsupported DICOM transfer syntax {ts_name} (no decoder installed)")

    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in _PHOTOMETRIC_OK:
        shown = photometric or "missing"
        raise ImageLoadError(f"{name}: unsupported DICOM PhotometricInterpretation '{shown}' "
                             f"(supported: MONOCHROME1/2, RGB, YBR_*, PALETTE COLOR)")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or cols <= 0:
        raise ImageLoadError(f"{name}: zero-sized DICOM image ({rows} x {cols})")
    if rows * cols > max_pixels:
        raise ImageLoadError(f"{name}: declared size {cols} x {rows} exceeds the limit of {max_pixels} pixels")
    try:
        n_frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise ImageLoadError(f"{name}: invalid NumberOfFrames {ds.get('NumberOfFrames')!r}") from None
    n_frames = max(n_frames, 1)
    index = _check_frame(name, frame, n_frames)

    view = _frame_view(ds, index)
    bits = ds.get("BitsStored") or ds.get("BitsAllocated")
    meta = _meta("dicom", bits_stored=int(bits) if bits else None, photometric=photometric,
                 modality=str(ds.get("Modality") or "") or None, pixel_spacing=_spacing(view), frames=n_frames,
                 transfer_syntax=ts_name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about benign oddities (padding, VR); not the user's job
        arr = pixel_array(ds, index=index if n_frames > 1 else None)
    if arr.ndim == 3 and n_frames > 1 and arr.shape[0] == n_frames and int(ds.get("SamplesPerPixel") or 1) == 1:
        arr = arr[index]  # a decoder that ignored index
    if arr.shape[:2] != (rows, cols):
        raise ImageLoadError(f"{name}: decoded pixel data has shape {arr.shape}, header says {rows} x {cols}")

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        # scale by the brightest palette entry: some files store 8-bit colours in 16-bit tables
        n_entries, first = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor[:2])
        n_entries = n_entries or 65536
        full = apply_color_lut(np.arange(first, first + n_entries).astype(arr.dtype), ds)
        img = _rgb_to_gray(rgb) / max(float(full.max()), 1.0)
        meta["voi"] = "range"
        return img, meta
    if arr.ndim == 3:  # RGB (pydicom converted YBR to RGB)
        img = _rgb_to_gray(arr)
        if arr.dtype.kind in "ui":
            img = img / float(2 ** int(ds.get("BitsStored") or arr.dtype.itemsize * 8) - 1)
            meta["voi"] = "range"
        else:
            img, meta["voi"] = _minmax(img), "minmax"
        return img, meta

    arr = apply_modality_lut(arr, view)
    img, meta["voi"], meta["window"] = _apply_voi(arr, view)
    inverted = photometric == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape") or "").upper() == "INVERSE":
        inverted = not inverted
    if inverted:
        img = 1.0 - img
    meta["inverted"] = inverted
    return img, meta


def _apply_voi(arr: np.ndarray, view) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    """VOI LUT sequence, else the first valid window, else min-max; the VOI output range maps to [0, 1]."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in view and len(view.VOILUTSequence):
        out = apply_voi_lut(arr, view, index=0, prefer_lut=True)
        lo, hi = (float(v) for v in apply_voi_lut(np.array([-(2 ** 31), 2 ** 31 - 1], dtype=np.int64), view,
                                                   index=0, prefer_lut=True))
        if hi != lo:
            return (out.astype(np.float32) - lo) / np.float32(hi - lo), "lut", None
        return _minmax(out), "minmax", None
    center, width = _first_number(view.get("WindowCenter")), _first_number(view.get("WindowWidth"))
    exact = str(view.get("VOILUTFunction") or "").upper() == "LINEAR_EXACT"
    if center is not None and width is not None and (width >= 1 or (exact and width > 0)):
        from pydicom.dataset import Dataset

        win = Dataset()  # a copy holding only the first window, so a malformed second one cannot interfere
        for kw in ("PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleSlope",
                   "RescaleIntercept", "ModalityLUTSequence", "VOILUTFunction"):
            if kw in view:
                setattr(win, kw, view[kw].value)
        win.WindowCenter, win.WindowWidth = center, width
        out = apply_voi_lut(arr, win, index=0, prefer_lut=False)
        lo, hi = (float(v) for v in apply_voi_lut(np.array([-1e30, 1e30]), win, index=0, prefer_lut=False))
        if hi != lo:
            return (out.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), "window", (center, width)
    return _minmax(arr), "minmax", None


def _check_frame(name: str, frame: int | None, n_frames: int) -> int:
    if frame is None:
        if n_frames > 1:
            raise ImageLoadError(f"{name}: multi-frame image ({n_frames} frames); pass frame=INDEX to pick one")
        return 0
    if not isinstance(frame, (int, np.integer)) or not 0 <= frame < n_frames:
        raise ImageLoadError(f"{name}: frame {frame} out of range (the file has {n_frames} frame(s))")
    return int(frame)


# ------------------------------------------------------------------------------------------ PNG, JPEG, TIFF

def _rgb_to_gray(arr: np.ndarray) -> np.ndarray:
    """BT.601 luma of the first three channels (alpha or extra channels dropped), float32 in the input scale."""
    if arr.shape[-1] == 1:
        return arr[..., 0].astype(np.float32)
    if arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0].astype(np.float32)
    return (arr[..., :3].astype(np.float32) @ _LUMA.astype(np.float32)).astype(np.float32, copy=False)


def _effective_bits(max_value: float) -> int:
    for b in (8, 10, 12, 14, 16, 24, 32):
        if max_value <= 2 ** b - 1:
            return b
    return 64


def _scale(arr: np.ndarray, meta: dict) -> np.ndarray:
    """Integer, float or bool pixels -> [0, 1] by the rules in the module docstring; records bits/voi."""
    if arr.dtype == bool:
        meta["bits_stored"], meta["voi"] = 1, "range"
        return arr.astype(np.float32)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            return arr.astype(np.float32)  # refused by load_image
        if arr.min() >= 0 and arr.max() <= 1:
            meta["voi"] = "range"
            return arr.astype(np.float32)
        meta["voi"] = "minmax"
        return _minmax(arr)
    lo, hi = int(arr.min()), int(arr.max())
    if arr.dtype.kind == "i" and lo < 0:
        meta["voi"] = "minmax"
        return _minmax(arr)
    bits = 8 if arr.dtype.itemsize == 1 else _effective_bits(hi)
    meta["bits_stored"], meta["voi"] = bits, "range"
    return arr.astype(np.float32) * np.float32(1.0 / (2 ** bits - 1))


def _scale_gray(arr: np.ndarray, meta: dict) -> np.ndarray:
    """Colour -> grey (luma), scaled by the same rules as grey pixels: unsigned colour by its bit depth."""
    if arr.ndim == 3 and arr.dtype.kind == "u":
        bits = 8 if arr.dtype.itemsize == 1 else _effective_bits(float(arr[..., :3].max()))
        meta["bits_stored"], meta["voi"] = bits, "range"
        return _rgb_to_gray(arr) * np.float32(1.0 / (2 ** bits - 1))
    if arr.ndim == 3:
        arr = _rgb_to_gray(arr)
    return _scale(arr, meta)


def _not_an_image(s: _Src) -> str:
    head = s.head(512)
    if head.startswith(b"\x89PNG"):
        return f"{s.name}: corrupt or truncated PNG (header unreadable)"
    if head.startswith(b"\xff\xd8\xff"):
        return f"{s.name}: corrupt or truncated JPEG (header unreadable)"
    for magic, what in _NOT_IMAGES:
        if head.startswith(magic):
            return f"{s.name}: not an image (looks like {what}); expected PNG, JPEG, TIFF or DICOM"
    try:
        head.decode("utf-8")
        if head.strip() and all(c >= 32 or c in b"\t\r\n" for c in head):
            return f"{s.name}: not an image (a text file); expected PNG, JPEG, TIFF or DICOM"
    except UnicodeDecodeError:
        pass
    return f"{s.name}: not a recognised image (expected PNG, JPEG, TIFF or DICOM)"


def _load_raster(s: _Src, max_pixels: int, frame: int | None) -> tuple[np.ndarray, dict]:
    from PIL import Image, UnidentifiedImageError

    is_tiff = s.head(4) in _TIFF_MAGIC
    with s.open() as f:
        try:
            with warnings.catch_warnings():
                # our own size check below replaces Pillow's warning; its hard error (2x its limit) stays
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(f, formats=["PNG", "JPEG", "TIFF"])  # JPEG yields MPO by itself
        except Image.DecompressionBombError as e:
            raise ImageLoadError(f"{s.name}: declared image size is absurd ({_one_line(e)})") from e
        except UnidentifiedImageError:
            if is_tiff:
                return _load_tifffile(s, max_pixels, frame)
            raise ImageLoadError(_not_an_image(s)) from None
        with im:
            fmt = _PILLOW_FORMATS[im.format]
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageLoadError(f"{s.name}: zero-sized image ({w} x {h})")
            if w * h > max_pixels:
                raise ImageLoadError(f"{s.name}: declared size {w} x {h} exceeds the limit of {max_pixels} pixels")
            n_frames = int(getattr(im, "n_frames", 1) or 1) if fmt != "jpeg" else 1  # MPO extras are previews
            index = _check_frame(s.name, frame, n_frames)
            if is_tiff and _pillow_loses_depth(im):
                try:
                    return _load_tifffile(s, max_pixels, frame)
                except ImageLoadError:
                    raise
                except Exception:  # e.g. a codec tifffile lacks: Pillow's 8-bit reading is better than nothing
                    log.debug("tifffile failed on %s, using Pillow", s.name, exc_info=True)
            if index:
                im.seek(index)
            try:
                im.load()
            except Exception as e:
                if is_tiff:
                    log.debug("Pillow failed on %s, trying tifffile", s.name, exc_info=True)
                    return _load_tifffile(s, max_pixels, frame)
                raise ImageLoadError(f"{s.name}: truncated or corrupt {fmt.upper()} ({_one_line(e)})") from e
            meta = _meta(fmt, photometric=im.mode, frames=n_frames)
            img = _pillow_to_gray(im, meta)
            if is_tiff and im.tag_v2.get(262) == 0:  # MINISWHITE: Pillow inverts 1- and 8-bit grey itself only
                meta["inverted"] = True
                if im.mode not in ("1", "L", "LA"):
                    img = 1.0 - img
            return img, meta


def _pillow_loses_depth(im) -> bool:
    """Pillow reads 16-bit colour TIFFs as 8-bit RGB; tifffile keeps the depth."""
    bps = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
    bps = bps if isinstance(bps, tuple) else (bps,) if bps else ()
    return any(b and b > 8 for b in bps) and im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _pillow_to_gray(im, meta: dict) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "I;16", "I;16B", "I;16L", "I;16N", "I", "F", "1"):
        arr = np.asarray(im)
    elif mode in ("LA", "La"):
        arr = np.asarray(im)[..., 0]
    elif mode in ("P", "PA"):
        arr = np.asarray(im.convert("RGBA"))
    else:  # RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV...
        arr = np.asarray(im.convert("RGB"))
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _scale_gray(arr, meta)


def _load_tifffile(s: _Src, max_pixels: int, frame: int | None) -> tuple[np.ndarray, dict]:
    import tifffile

    with s.open() as f:
        try:
            tif = tifffile.TiffFile(f)
        except Exception as e:
            raise ImageLoadError(f"{s.name}: corrupt TIFF ({_one_line(e)})") from e
        with tif:
            pages = tif.pages
            n_frames = len(pages)
            if n_frames == 0:
                raise ImageLoadError(f"{s.name}: TIFF without images")
            index = _check_frame(s.name, frame, n_frames)
            page = pages[index]
            axes, shape = page.axes, page.shape
            if not ("Y" in axes and "X" in axes) or any(a not in "YXS" for a in axes):
                raise ImageLoadError(f"{s.name}: unsupported TIFF layout (axes {axes})")
            h, w = shape[axes.index("Y")], shape[axes.index("X")]
            if h <= 0 or w <= 0:
                raise ImageLoadError(f"{s.name}: zero-sized image ({w} x {h})")
            if h * w > max_pixels:
                raise ImageLoadError(f"{s.name}: declared size {w} x {h} exceeds the limit of {max_pixels} pixels")
            arr = page.asarray()
            photometric = getattr(page.photometric, "name", str(page.photometric))
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
    meta = _meta("tiff", photometric=photometric, frames=n_frames)
    img = _scale_gray(arr, meta)
    if photometric == "MINISWHITE":
        img, meta["inverted"] = 1.0 - img, True
    return img, meta
