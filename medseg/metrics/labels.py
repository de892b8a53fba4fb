"""Label lists for evaluation and the checks on label maps.

A label list maps structure names to integer values (background 0 excluded). It comes from a
``dataset.json`` (nnU-Net v2 ``{"liver": 1}`` or Decathlon ``{"1": "liver"}``), from a string
``"liver=1,spleen=2"``, or, when none is given, from the nonzero values found in the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from medseg.errors import InputError, LabelError, UsageError
from medseg.io.volume import Volume


def default_label_name(value: int) -> str:
    return f"label_{value}"


def read_dataset_labels(path: str | Path) -> dict[str, int]:
    """Foreground labels ``{name: value}`` of an nnU-Net v2 or Decathlon ``dataset.json``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())["labels"]
    except FileNotFoundError:
        raise InputError("file does not exist", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable JSON file ({type(exc).__name__})", path) from None
    except (KeyError, TypeError):
        raise InputError("no 'labels' mapping in this dataset.json", path) from None
    if not isinstance(raw, dict):
        raise InputError("'labels' is not a mapping", path)
    labels: dict[str, int] = {}
    for key, item in raw.items():
        name, value = (item, key) if _is_int(key) else (key, item)  # Decathlon: {"1": "liver"}
        if not _is_int(value) or not isinstance(name, str):
            raise LabelError(f"label {key!r}: {item!r} is not a name with one integer value "
                             "(region-based labels are not supported)", path)
        if int(value) != 0:
            labels[name] = int(value)
    return _checked(labels, str(path))


def parse_labels(spec: str | Path | None) -> dict[str, int] | None:
    """``None`` (labels from the data), a ``dataset.json`` path, or ``"liver=1,spleen=2"``."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    if text.lower().endswith(".json") or Path(text).is_file():
        return read_dataset_labels(text)
    labels: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not _is_int(value.strip()):
            raise UsageError(f"--labels: {item.strip()!r} is not NAME=VALUE (e.g. liver=1,spleen=2) nor a dataset.json")
        labels[name.strip()] = int(value.strip())
    return _checked(labels, "--labels")


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        int(str(value))
        return True
    except ValueError:
        return False


def _checked(labels: dict[str, int], where: str) -> dict[str, int]:
    if not labels:
        raise UsageError(f"{where}: no foreground labels")
    values = list(labels.values())
    if any(v <= 0 for v in values):
        raise UsageError(f"{where}: label values must be positive integers (background 0 is implied)")
    if len(set(values)) != len(values):
        raise UsageError(f"{where}: two names share one label value")
    return dict(sorted(labels.items(), key=lambda kv: kv[1]))


def label_array(volume: Volume) -> np.ndarray:
    """The integer label map ``(*spatial)`` of a single-channel label volume.

    Raises LabelError naming the file for several channels, non-integer or non-finite values, or
    negative values. Floats holding integers are converted (uint8 / uint16 / int32, the smallest that fits).
    """
    source = volume.source or "label map"
    if volume.num_channels != 1:
        raise LabelError(f"expected one label channel, found {volume.num_channels}", source)
    array = volume.array[0]
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise LabelError("label map holds NaN or infinite values", source)
        if not np.array_equal(array, np.round(array)):
            raise LabelError("label map holds non-integer values", source)
    elif array.dtype.kind not in "iu":
        raise LabelError(f"label map has non-numeric type {array.dtype}", source)
    if array.dtype.kind in "iuf" and array.dtype not in (np.uint8, np.uint16):
        low, high = (array.min(), array.max()) if array.size else (0, 0)
        if low < 0:
            raise LabelError(f"label map holds negative values (min {low:g})", source)
        dtype = np.uint8 if high <= 255 else np.uint16 if high <= 65535 else np.int32
        array = array.astype(dtype)
    return array


def check_declared(present: Iterable[int], labels: Mapping[str, int], source: str) -> None:
    """LabelError naming ``source`` when it holds nonzero values that ``labels`` does not declare."""
    unknown = sorted(set(present) - set(labels.values()) - {0})
    if unknown:
        declared = ", ".join(f"{n}={v}" for n, v in labels.items())
        raise LabelError(f"label values {unknown} are not in the label list ({declared})", source)
