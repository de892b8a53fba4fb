"""Dataset fingerprint: per-case geometry (in canonical RAS axis order) and foreground intensities.

Per case (:func:`case_stats`, run in the worker that reads the case) up to ``SAMPLES_PER_CASE``
foreground voxels per channel are sampled; the dataset statistics (:func:`aggregate`) come from all
samples together, as nnU-Net does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.io import Volume
from medseg.preprocessing.crop import bounding_box
from medseg.preprocessing.orientation import canonical_ornt, reorder_to_canonical, reoriented_shape

SAMPLES_PER_CASE = 10_000


def case_stats(image: Volume, label: Volume | None, seed: int = 0) -> dict[str, Any]:
    """Geometry, nonzero-crop ratio, label values and foreground intensity samples of one case."""
    dims = image.ndim
    ornt = canonical_ornt(image.affine, dims)
    nonzero = np.any(image.array != 0, axis=0)
    box = bounding_box(nonzero) if dims == 3 else [[0, n] for n in image.spatial_shape]  # holes never move the box
    crop_ratio = float(np.prod([hi - lo for lo, hi in box]) / np.prod(image.spatial_shape))
    rng = np.random.default_rng(seed)
    if label is not None and (label.array > 0).any():
        foreground = np.flatnonzero(label.array[0] > 0)
    else:
        foreground = np.flatnonzero(nonzero)
    picked = rng.choice(foreground, min(SAMPLES_PER_CASE, foreground.size), replace=False) if foreground.size else foreground
    samples = [channel.reshape(-1)[picked].astype(np.float64) for channel in image.array]
    return {
        "dims": dims,
        "num_channels": image.num_channels,
        "spacing": reorder_to_canonical(image.spacing, ornt),
        "shape": list(reoriented_shape(image.spatial_shape, ornt)),
        "crop_ratio": crop_ratio,
        "label_values": sorted(int(v) for v in np.unique(label.array)) if label is not None else [],
        "samples": samples,
        "min": [float(c.min()) for c in image.array],
        "integer_valued": bool(image.array.dtype.kind in "iub"),
        "dtype": str(image.array.dtype),
        "dicom_modality": image.meta.get("modality") or image.meta.get("Modality"),
    }


def intensity_properties(values: np.ndarray) -> dict[str, float]:
    """mean, std, min, max, median, p00_5, p99_5 of ``values`` (1D)."""
    if values.size == 0:
        return {k: 0.0 for k in ("mean", "std", "min", "max", "median", "p00_5", "p99_5")}
    p = np.percentile(values, [50.0, 0.5, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "median": float(p[0]), "p00_5": float(p[1]), "p99_5": float(p[2])}


def aggregate(case_ids: list[str], stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The fingerprint.json content from the per-case stats (in the order of ``case_ids``)."""
    spacings = [s["spacing"] for s in stats]
    shapes = [s["shape"] for s in stats]
    channels = stats[0]["num_channels"]
    intensity = {
        str(c): intensity_properties(np.concatenate([s["samples"][c] for s in stats]))
        for c in range(channels)
    }
    return {
        "num_cases": len(stats),
        "case_ids": list(case_ids),
        "spacings": spacings,
        "shapes": shapes,
        "median_spacing": [float(v) for v in np.median(np.asarray(spacings, dtype=float), axis=0)],
        "median_shape": [float(v) for v in np.median(np.asarray(shapes, dtype=float), axis=0)],
        "median_crop_ratio": float(np.median([s["crop_ratio"] for s in stats])),
        "intensity": intensity,
        "label_values": sorted({v for s in stats for v in s["label_values"]}),
    }
