"""Planning: target spacing, normalization per channel, cropping, and the plan.json dictionary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import UsageError
from medseg.preprocessing.resample import ANISOTROPY_RATIO, resampled_shape

CROP_RATIO_THRESHOLD = 0.75  # crop to the nonzero box when it keeps at most 3/4 of the median case (nnU-Net)
MODALITIES = ("CT", "MR", "2D")


def auto_target_spacing(spacings: Sequence[Sequence[float]]) -> list[float]:
    """Median spacing per axis; when the coarsest median axis is more than 3× the finest, that axis takes
    the 10th percentile of its spacings instead, but never finer than the other axes' coarsest median
    (nnU-Net's rule for anisotropic data). ``spacings`` is ``(cases, axes)`` in canonical axis order."""
    spacings = np.asarray(spacings, dtype=float)
    target = np.median(spacings, axis=0)
    if len(target) == 3:
        worst = int(np.argmax(target))
        if target[worst] > ANISOTROPY_RATIO * target.min():
            others = [a for a in range(3) if a != worst]
            target[worst] = max(float(np.percentile(spacings[:, worst], 10)), float(target[others].max()))
    return [float(t) for t in target]


def parse_target_spacing(value: str | Sequence[float] | None, dims: int) -> list[float] | None:
    """``"auto"``/None → None; ``"X,Y,Z"`` or a sequence → floats (one per spatial axis, all > 0)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except ValueError:
        raise UsageError(f"--target-spacing must be 'auto' or {dims} numbers like 1,1,2.5 (got {value!r})") from None
    if len(parts) == 1:
        parts = parts * dims
    if len(parts) != dims or any(not np.isfinite(p) or p <= 0 for p in parts):
        raise UsageError(f"--target-spacing needs {dims} positive numbers for {dims}D data (got {value!r})")
    return parts


def normalization_scheme(channel_name: str, modality: str, intensity: dict[str, float], dtype: str) -> dict[str, Any]:
    """One channel's normalization entry (see medseg.preprocessing.normalize).

    Channel names ``noNorm``, ``rgb``/``rgb_to_0_1``, ``zscore`` and ``CT`` (nnU-Net's names) choose their
    scheme; otherwise CT data get ``ct``, 8-bit 2D images ``rgb``, everything else ``zscore``."""
    name = channel_name.strip().lower()
    if name in ("nonorm", "none"):
        return {"scheme": "none"}
    if name in ("rgb", "rgb_to_0_1"):
        return {"scheme": "rgb"}
    if name == "ct" or (modality == "CT" and name != "zscore"):
        return {"scheme": "ct", "clip": [intensity["p00_5"], intensity["p99_5"]],
                "mean": intensity["mean"], "std": intensity["std"]}
    if modality == "2D" and dtype == "uint8" and name != "zscore":
        return {"scheme": "rgb"}
    return {"scheme": "zscore"}


def make_plan(fingerprint: dict[str, Any], *, dims: int, modality: str, channel_names: list[str],
              labels: dict[str, int], dtypes: list[str], target_spacing: list[float] | None = None) -> dict[str, Any]:
    """The plan.json dictionary (docs/INTERNALS.md) for a fingerprinted dataset."""
    if dims == 2:
        target = [1.0, 1.0] if target_spacing is None else list(target_spacing)
        crop = False
    else:
        target = auto_target_spacing(fingerprint["spacings"]) if target_spacing is None else list(target_spacing)
        crop = fingerprint["median_crop_ratio"] <= CROP_RATIO_THRESHOLD
    shapes_after = [resampled_shape(shape, spacing, target)
                    for shape, spacing in zip(fingerprint["shapes"], fingerprint["spacings"])]
    normalization = [normalization_scheme(name, modality, fingerprint["intensity"][str(c)], dtypes[c])
                     for c, name in enumerate(channel_names)]
    return {
        "dims": dims,
        "modality": modality,
        "channel_names": list(channel_names),
        "num_channels": len(channel_names),
        "labels": dict(labels),
        "num_classes": max(labels.values()) + 1,
        "canonical": "RAS",
        "target_spacing": [float(t) for t in target],
        "normalization": normalization,
        "crop_nonzero": bool(crop),
        "median_shape": [int(round(v)) for v in np.median(np.asarray(shapes_after, dtype=float), axis=0)],
        "resampling": {"image_order": 3, "label_order": 0, "anisotropy_ratio": ANISOTROPY_RATIO,
                       "thick_axis_image_order": 1},
    }


def make_splits(case_ids: Sequence[str], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """k-fold cross-validation splits, fixed by ``seed``.

    With fewer cases than folds, one fold per case (leave one out); with a single case (or ``folds=1``)
    one split whose validation set is the training set."""
    if folds < 1:
        raise UsageError(f"--folds must be at least 1 (got {folds})")
    ids = sorted(case_ids)
    if len(ids) == 1 or folds == 1:
        return [{"train": ids, "val": ids}]
    k = min(folds, len(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    splits = []
    for chunk in np.array_split(order, k):
        val = sorted(ids[i] for i in chunk)
        splits.append({"train": [c for c in ids if c not in set(val)], "val": val})
    return splits
