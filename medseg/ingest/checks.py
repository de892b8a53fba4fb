"""Reading one case and checking it: channels and label on one grid, finite non-constant intensities,
integer label values that the label list declares. Every failure is a medseg error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError, LabelError
from medseg.io import Volume, read_volume
from medseg.io.grid import match_grid
from medseg.preprocessing import label_dtype

def check_image(volume: Volume, path: str | Path) -> None:
    """Finite, non-empty, non-constant intensities in every channel."""
    array = volume.array
    if array.size == 0:
        raise InputError("image is empty (no voxels)", path)
    nonfinite = volume.count_nonfinite()
    if nonfinite:
        raise InputError(f"image has {nonfinite} NaN or infinite values", path)
    if array.dtype.kind not in "fiub":
        raise InputError(f"image has an unsupported pixel type {array.dtype}", path)
    for c, channel in enumerate(array):
        lo, hi = channel.min(), channel.max()
        if lo == hi:
            which = f"channel {c} of the image" if array.shape[0] > 1 else "image"
            raise InputError(f"{which} is constant (every voxel is {lo.item():g})", path)


def label_values(label: Volume, path: str | Path, declared: set[int] | None) -> np.ndarray:
    """The integer label array ``(1, *spatial)`` (uint8 / int16); LabelError for non-integer, negative or
    undeclared values."""
    array = label.array
    if array.shape[0] != 1:
        raise LabelError(f"label map has {array.shape[0]} channels; expected one", path)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise LabelError("label map has NaN or infinite values", path)
        rounded = np.rint(array)
        bad = array != rounded
        if bad.any():
            raise LabelError(f"label values are not integers (e.g. {array[bad].flat[0]:g})", path)
        array = rounded
    elif array.dtype.kind not in "iub":
        raise LabelError(f"label map has an unsupported pixel type {array.dtype}", path)
    values = np.unique(array)
    if values.size and values[0] < 0:
        raise LabelError(f"label map has negative values (min {values[0]:g})", path)
    if declared is not None:
        undeclared = sorted(set(int(v) for v in values) - declared)
        if undeclared:
            shown = ", ".join(str(v) for v in undeclared[:8])
            raise LabelError(f"label value(s) {shown} not declared in the label list "
                             f"(declared: {', '.join(str(v) for v in sorted(declared))})", path)
    top = int(values[-1]) if values.size else 0
    if top > np.iinfo(np.int16).max:
        raise LabelError(f"label value {top} is too large (at most {np.iinfo(np.int16).max})", path)
    return array.astype(label_dtype(top), copy=False)


def read_case(images: tuple[Path, ...], label: Path | None, *, declared: set[int] | None = None,
              series_uid: str | None = None) -> tuple[Volume, Volume | None]:
    """Read and check one case: channels concatenated on the first file's grid, the label on that grid.

    Returns ``(image (C, *spatial), label (1, *spatial) integer | None)``."""
    channels = []
    for path in images:
        volume = read_volume(path, series_uid=series_uid)
        check_image(volume, path)
        if channels:
            volume = match_grid(volume, channels[0], "channel")
        channels.append(volume)
    first = channels[0]
    image = first if len(channels) == 1 else first.with_array(np.concatenate([c.array for c in channels]))
    if label is None:
        return image, None
    seg = read_volume(label, as_label=True, reference=image)
    seg = match_grid(seg, image, "label")
    seg = seg.with_array(label_values(seg, label, declared))
    return image, seg
