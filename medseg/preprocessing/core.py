"""``preprocess`` (scan → network input) and ``restore_probabilities`` (network output → scan grid).

The same two functions serve ingest and predict, so training and inference see identical inputs.
Steps: reorient to RAS (exact) → crop to the nonzero box (when ``plan["crop_nonzero"]``) → normalize
per channel → resample to ``plan["target_spacing"]``. ``restore_probabilities`` undoes them in
reverse on the tensor's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.volume import Volume
from medseg.preprocessing.crop import bounding_box, box_slices, crop, nonzero_mask
from medseg.preprocessing.normalize import normalize
from medseg.preprocessing.orientation import canonical_ornt, reorder_to_canonical, reorient
from medseg.preprocessing.resample import resample, resampled_shape

MAX_CLASS_LOCATIONS = 1000


def label_dtype(max_value: int) -> np.dtype:
    """uint8 for labels up to 255, int16 above (the dataset contract)."""
    return np.dtype(np.uint8) if max_value <= 255 else np.dtype(np.int16)


def _as_plan_dims(volume: Volume, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The array and affine with ``dims`` spatial axes (a one-slice 3D file can feed a 2D plan)."""
    array = volume.array
    if volume.ndim == dims:
        return array, volume.affine
    if dims == 2 and volume.ndim == 3 and array.shape[-1] == 1:
        return array[..., 0], volume.affine
    raise InputError(f"image has {volume.ndim} spatial dimensions but the plan expects {dims}", volume.source)


def class_locations(label: np.ndarray, classes: list[int], max_per_class: int = MAX_CLASS_LOCATIONS,
                    seed: int = 1234) -> dict[str, list[list[int]]]:
    """Up to ``max_per_class`` voxel indices ``[i, j(, k)]`` per class value of ``label`` ``(1, *spatial)``."""
    rng = np.random.default_rng(seed)
    flat = label.reshape(-1)
    idx = np.flatnonzero(flat)
    values = flat[idx]
    order = np.argsort(values, kind="stable")
    idx, values = idx[order], values[order]
    out: dict[str, list[list[int]]] = {}
    for c in classes:
        lo, hi = np.searchsorted(values, [c, c + 1])
        picked = idx[lo:hi]
        if len(picked) > max_per_class:
            picked = np.sort(rng.choice(picked, max_per_class, replace=False))
        out[str(c)] = np.stack(np.unravel_index(picked, label.shape[1:]), axis=1).tolist() if len(picked) else []
    return out


def preprocess(volume: Volume, plan: dict[str, Any], label: Volume | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Preprocess one scan (and its label map, which must share its grid) as ``plan`` says.

    Returns ``image`` float32 ``(C, *spatial)``, ``label`` uint8/int16 ``(1, *spatial)`` or None, and the
    ``properties`` dict that :func:`restore_probabilities` needs (keys of CASE.json, without case_id).
    """
    dims = int(plan["dims"])
    array, affine = _as_plan_dims(volume, dims)
    if array.shape[0] != int(plan["num_channels"]):
        raise InputError(f"image has {array.shape[0]} channel(s) but the plan expects {plan['num_channels']}", volume.source)
    original_shape = tuple(int(s) for s in array.shape[1:])
    original_spacing = [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)[:dims]]
    ornt = canonical_ornt(affine, dims)
    image = reorient(array, ornt)
    shape_reoriented = tuple(int(s) for s in image.shape[1:])
    spacing = reorder_to_canonical(original_spacing, ornt)

    seg = None
    if label is not None:
        seg_array, _ = _as_plan_dims(label, dims)
        if tuple(seg_array.shape[1:]) != original_shape:
            raise InputError(f"label shape {seg_array.shape[1:]} differs from the image shape {original_shape}", label.source)
        seg = reorient(seg_array, ornt)

    if plan.get("crop_nonzero", False):
        mask = nonzero_mask(image)
        box = bounding_box(mask)
        mask = mask[box_slices(box)]
        image = crop(image, box)
        seg = crop(seg, box) if seg is not None else None
    else:
        mask = None
        box = [[0, n] for n in shape_reoriented]
    shape_cropped = tuple(int(s) for s in image.shape[1:])

    image = normalize(image, plan["normalization"], mask)
    target = [float(t) for t in plan["target_spacing"]]
    new_shape = resampled_shape(shape_cropped, spacing, target)
    order = int(plan.get("resampling", {}).get("image_order", 3))
    image = np.ascontiguousarray(resample(image, new_shape, is_label=False, spacing=spacing, target_spacing=target, order=order),
                                 dtype=np.float32)
    properties: dict[str, Any] = {
        "original_shape": list(original_shape),
        "original_affine": np.asarray(volume.affine, dtype=float).tolist(),
        "original_spacing": original_spacing,
        "orientation_transform": np.asarray(ornt).astype(int).tolist(),
        "shape_after_reorient": list(shape_reoriented),
        "spacing_after_reorient": spacing,
        "crop_bbox": box,
        "shape_after_crop": list(shape_cropped),
        "shape_after_resample": list(new_shape),
        "spacing_after_resample": [s * a / b for s, a, b in zip(spacing, shape_cropped, new_shape)],
    }
    if seg is not None:
        values = np.rint(seg).astype(np.int64) if seg.dtype.kind == "f" else seg
        max_value = max([int(v) for v in plan["labels"].values()] + [int(values.max(initial=0))])
        seg = values.astype(label_dtype(max_value), copy=False)
        seg = np.ascontiguousarray(resample(seg, new_shape, is_label=True, spacing=spacing, target_spacing=target))
        classes = sorted(int(v) for v in plan["labels"].values() if int(v) != 0)
        properties["class_locations"] = class_locations(seg, classes)
    return image, seg, properties


def restore_probabilities(probs, properties: dict[str, Any]):
    """Map probabilities ``(K, *preprocessed spatial)`` back to the scan grid: ``(K, *original_shape)``.

    Resamples (trilinear in 3D, bilinear in 2D, ``align_corners=False`` like the forward resample) to the
    cropped shape, pads the crop back with background (channel 0 = 1, others 0), then undoes the
    reorientation by permuting and flipping. Stays on ``probs.device`` and keeps a floating dtype.
    """
    import torch
    import torch.nn.functional as F

    from medseg.preprocessing.orientation import undo_reorient

    if not torch.is_floating_point(probs):
        probs = probs.float()
    shape_cropped = [int(s) for s in properties["shape_after_crop"]]
    if list(probs.shape[1:]) != shape_cropped:
        mode = "trilinear" if len(shape_cropped) == 3 else "bilinear"
        probs = F.interpolate(probs[None], size=shape_cropped, mode=mode, align_corners=False)[0]
    shape_reoriented = [int(s) for s in properties["shape_after_reorient"]]
    if shape_reoriented != shape_cropped:
        full = probs.new_zeros((probs.shape[0], *shape_reoriented))
        full[0] = 1
        full[(slice(None), *box_slices(properties["crop_bbox"]))] = probs
        probs = full
    return undo_reorient(probs, properties["orientation_transform"]).contiguous()
