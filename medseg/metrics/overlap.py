"""Overlap metrics from the confusion counts of two binary masks.

Every ratio is computed from ``(TP, FP, FN, TN)``; a ratio whose denominator is 0 (``0 / 0``) is NaN,
never a guessed 0 or 1 (see docs/metrics.md, "Empty structures").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OVERLAP_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision")


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of one structure: true/false positives/negatives."""

    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_counts(cls, n_pred: int, n_ref: int, n_both: int, n_total: int) -> "Confusion":
        """From the voxel counts of prediction, reference, their intersection and the whole grid."""
        fp, fn = n_pred - n_both, n_ref - n_both
        return cls(tp=int(n_both), fp=int(fp), fn=int(fn), tn=int(n_total - n_both - fp - fn))


def confusion(pred: np.ndarray, ref: np.ndarray) -> Confusion:
    """Confusion counts of two boolean masks of the same shape ``(*spatial)``."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    return Confusion.from_counts(np.count_nonzero(pred), np.count_nonzero(ref), np.count_nonzero(pred & ref), pred.size)


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else float("nan")


def overlap_metrics(c: Confusion) -> dict[str, float]:
    """Dice, IoU (Jaccard), sensitivity (recall), specificity and precision (PPV) of ``c``.

    ``dice = 2TP / (2TP + FP + FN)``, ``iou = TP / (TP + FP + FN)``, ``sensitivity = TP / (TP + FN)``,
    ``specificity = TN / (TN + FP)``, ``precision = TP / (TP + FP)``; ``0 / 0`` gives NaN.
    """
    return {
        "dice": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "iou": _ratio(c.tp, c.tp + c.fp + c.fn),
        "sensitivity": _ratio(c.tp, c.tp + c.fn),
        "specificity": _ratio(c.tn, c.tn + c.fp),
        "precision": _ratio(c.tp, c.tp + c.fp),
    }
