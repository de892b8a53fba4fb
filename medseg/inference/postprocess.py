"""Post-processing on the scan grid: arg-max, largest connected component per class, uncertainty."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

UNCERTAINTY_KINDS = ("entropy", "variance")


def keep_largest_component(labels: np.ndarray, classes=None) -> np.ndarray:
    """Keep, for each class, only its largest connected component (face connectivity); the voxels
    removed become background 0.

    ``labels``: integer ``(*spatial)``; ``classes``: the values to process (default: every non-zero
    value present). Returns a new array of the same dtype. Works class by class inside each class's
    bounding box (one ``scipy.ndimage.find_objects`` pass), so small structures in big scans are cheap.
    """
    from scipy import ndimage

    out = labels.copy()
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False)) if labels.max(initial=0) > 0 else []
    present = [v for v in range(1, len(boxes) + 1) if boxes[v - 1] is not None]
    for value in present if classes is None else [int(c) for c in classes if 0 < int(c) <= len(boxes)]:
        box = boxes[value - 1]
        if box is None:
            continue
        mask = labels[box] == value
        components, count = ndimage.label(mask)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[box][mask & (components != int(sizes.argmax()))] = 0
    return out


def normalized_entropy(probs: "torch.Tensor") -> "torch.Tensor":
    """Entropy of ``probs (K, *spatial)`` over K divided by ``log K``: ``(*spatial)`` in [0, 1]."""
    import math

    import torch

    k = probs.shape[0]
    p = probs.clamp_min(1e-12)
    return (-(p * p.log()).sum(0) / math.log(max(k, 2))).clamp_(0, 1).to(torch.float32)


def member_variance(probs: "torch.Tensor", probs_sq: "torch.Tensor") -> "torch.Tensor":
    """Total variance across test-time members, ``sum_k (E[p_k²] - E[p_k]²)``: ``(*spatial)`` in [0, 1]."""
    return (probs_sq - probs * probs).sum(0).clamp_(0, 1)


def uncertainty_map(kind: str, probs: "torch.Tensor", probs_sq: "torch.Tensor | None" = None) -> "torch.Tensor":
    """``entropy`` of the mean probabilities, or ``variance`` across TTA members (needs ``probs_sq``)."""
    if kind == "entropy":
        return normalized_entropy(probs)
    if kind == "variance":
        if probs_sq is None:
            raise ValueError("variance uncertainty needs the second moment of the TTA members")
        return member_variance(probs, probs_sq)
    raise ValueError(f"unknown uncertainty {kind!r} (expected one of: {', '.join(UNCERTAINTY_KINDS)})")
