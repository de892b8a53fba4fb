"""2D images (PNG, JPEG, TIFF, GIF, BMP) as :class:`Volume` via Pillow.

Layout (INTERNALS.md): ``array`` is ``(C, W, H)`` so that ``array[c, x, y]`` is the pixel at row ``y``,
column ``x``; the affine is the identity. Images: RGB(A) and palette images give 3 channels (alpha
dropped), greyscale gives 1 channel (16-bit and float pixels kept as they are). Masks (``as_label``):
one channel of integer labels, see :func:`read_image2d`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError, LabelError, OutputExistsError
from medseg.io.volume import Volume

LOSSY_SUFFIXES = (".jpg", ".jpeg")
_WRITE_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF"}


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError("file does not exist", path)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not a readable 2D image ({type(exc).__name__})", path) from None
    if getattr(img, "n_frames", 1) > 1:
        raise InputError(f"has {img.n_frames} frames; expected a single 2D image", path)
    return img


def _pixels(img, *, as_label: bool) -> np.ndarray:
    """Pixels as ``(H, W, C)`` for the given Pillow image (mode conversions documented in the module)."""
    mode = img.mode
    if mode == "P" and as_label:
        data = np.asarray(img)  # palette indices
    elif mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        data = np.asarray(img.convert("RGB"))
    elif mode in ("LA", "La"):
        data = np.asarray(img.convert("L"))
    elif mode == "1":
        data = np.asarray(img, dtype=np.uint8)  # 0/1
        if not as_label:
            data = data * np.uint8(255)
    else:  # L, RGB, I, I;16*, F
        data = np.asarray(img)
    if data.ndim == 2:
        data = data[:, :, None]
    return data


def _to_labels(data: np.ndarray, path: Path, label_table: dict[int, int] | None, lossy: bool) -> np.ndarray:
    """``(H, W, C)`` raw mask pixels → ``(H, W)`` integer labels."""
    if data.shape[2] > 1:
        if not all(np.array_equal(data[..., 0], data[..., c]) for c in range(1, data.shape[2])):
            raise LabelError("mask has colour channels that differ; expected a greyscale or index mask", path)
    raw = data[..., 0]
    if np.issubdtype(raw.dtype, np.floating) and not lossy:
        if not np.all(np.isfinite(raw)) or not np.array_equal(raw, np.round(raw)):
            raise LabelError("mask has non-integer values", path)
    if label_table is not None:
        keys = np.array(sorted(label_table), dtype=np.float64)
        if lossy:  # snap each value to the nearest declared raw value
            idx = np.abs(raw[..., None].astype(np.float64) - keys).argmin(axis=-1)
        else:
            idx = np.searchsorted(keys, raw)
            idx = np.clip(idx, 0, len(keys) - 1)
            unknown = np.unique(raw[keys[idx] != raw])
            if unknown.size:
                shown = ", ".join(str(int(v)) for v in unknown[:10])
                raise LabelError(f"mask values not in the label table: {shown}", path)
        labels = np.array([label_table[int(k)] for k in keys])[idx]
    elif lossy:
        labels = (raw > 127).astype(np.uint8)
    else:
        labels = raw.astype(np.int64)
        values = np.unique(labels)
        if values.size and set(values.tolist()) <= {0, 255}:
            labels = labels // 255
        if values.size and values.min() < 0:
            raise LabelError(f"mask has negative values (min {int(values.min())})", path)
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint8 if top <= 255 else np.int16 if top <= 32767 else np.int32)


def read_image2d(path: str | Path, as_label: bool = False, label_table: dict[int, int] | None = None) -> Volume:
    """Read a 2D image as a ``Volume`` with ``array`` ``(C, W, H)`` and an identity affine.

    ``as_label=True`` returns one channel of integer labels (uint8, int16 above 255):

    * JPEG (lossy): foreground is ``value > 127`` → 1 (with a ``label_table``, each pixel takes the
      label of the nearest declared raw value);
    * otherwise values ``{0, 255}`` become ``{0, 1}``; other values are kept, or mapped through
      ``label_table`` (raw value → label; a value missing from the table is a ``LabelError``);
    * palette images give their index values; a multi-channel mask uses its first channel and is
      refused when the channels differ.
    """
    path = Path(path)
    img = _open(path)
    meta = {"format": "image2d", "file_format": img.format, "mode": img.mode}
    lossy = path.suffix.lower() in LOSSY_SUFFIXES or img.format == "JPEG"
    if as_label and lossy and img.mode != "L":
        img = img.convert("L")  # lossy colour channels never agree exactly: use the luminance
    data = _pixels(img, as_label=as_label)
    if as_label:
        array = _to_labels(data, path, label_table, lossy)[None]
    else:
        if label_table is not None:
            raise ValueError("label_table only applies with as_label=True")
        array = np.moveaxis(data, 2, 0)
    array = np.ascontiguousarray(np.swapaxes(array, 1, 2))  # (C, H, W) -> (C, W, H)
    return Volume(array=array, affine=np.eye(4), source=str(path), meta=meta)


def write_image2d(volume: Volume, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a 2D ``volume`` (``(C, W, H)``, or ``(C, W, H, 1)``) losslessly (PNG, TIFF, BMP, GIF by suffix).

    One channel → greyscale (uint8, or 16-bit PNG/TIFF when values exceed 255; label maps keep their
    values, they are not scaled), three → RGB, four → RGBA. Values must be integers in 0..65535 (RGB:
    0..255). JPEG is refused (lossy). Written atomically; ``overwrite=False`` refuses an existing file.
    """
    from PIL import Image

    from medseg.io.atomic import atomic_path

    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError("unsupported 2D output format (use .png, .tif, .bmp or .gif; JPEG is lossy)", path)
    if not overwrite and path.exists():
        raise OutputExistsError("output exists (pass overwrite=True to replace it)", path)
    array = volume.array
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise InputError(f"cannot write array of shape {volume.array.shape} as a 2D image (need 1, 3 or 4 channels)", path)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.size and (not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))):
        raise InputError("2D images hold integer pixels; scale/round the values first", path)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    limit = 255 if array.shape[0] > 1 or fmt in ("BMP", "GIF") else 65535
    if low < 0 or high > limit:
        raise InputError(f"pixel values {low:g}..{high:g} do not fit 0..{limit} for {fmt}", path)
    pixels = np.ascontiguousarray(np.moveaxis(np.swapaxes(array, 1, 2), 0, -1))  # (H, W, C)
    if pixels.shape[2] == 1:
        grey = pixels[..., 0]
        img = Image.fromarray(grey.astype(np.uint8)) if high <= 255 else Image.fromarray(grey.astype(np.uint16))
    else:
        img = Image.fromarray(pixels.astype(np.uint8))
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)
    return path
