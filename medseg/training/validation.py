"""Validation during training: whole-case sliding-window prediction and foreground Dice.

Each validation case is predicted whole on its preprocessed grid with
``medseg.inference.sliding_window.sliding_window_predict`` (Gaussian-weighted windows of the training
patch, overlap 0.5): 3D networks on the volume, 2D networks on all axial slices stacked as a batch, or on
the 2D image. Dice per foreground class is aggregated over the cases (``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)``,
nnU-Net's "pseudo Dice"), so small cases do not dominate and an absent class does not count as 0 or 1.
Under DDP each rank predicts every ``world_size``-th case and the counts are summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medseg.training.data import Case


def confusion_counts(pred, ref, num_classes: int):
    """``(3, K-1)`` int64 tensor of TP, FP, FN per foreground class for integer label tensors."""
    import torch

    rows = []
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        rows.append(torch.stack([(p & r).sum(), (p & ~r).sum(), (~p & r).sum()]))
    return torch.stack(rows, dim=1).to(torch.int64) if rows else torch.zeros((3, 0), dtype=torch.int64)


def dice_from_counts(counts) -> list[float]:
    """Per-class Dice from ``confusion_counts`` sums (NaN where the class is absent from both)."""
    tp, fp, fn = (counts[i].double() for i in range(3))
    denominator = 2 * tp + fp + fn
    return [float(2 * t / d) if d > 0 else math.nan for t, d in zip(tp.tolist(), denominator.tolist())]


def mean_dice(per_class: Sequence[float]) -> float:
    values = [d for d in per_class if not math.isnan(d)]
    return float(np.mean(values)) if values else math.nan


def predict_case(model, image, patch_size: Sequence[int], device, activation: str, network_dims: int,
                 batch_size: int = 2, amp: bool = False):
    """Label map for one preprocessed case.

    ``image``: float32 tensor ``(C, *data spatial)``. A 2D network on a volume sees the axial slices
    (last axis) as a stack. Returns an int64 tensor ``(*data spatial)`` on ``device``.
    """
    from medseg.inference.sliding_window import sliding_window_predict

    data_dims = image.dim() - 1
    if network_dims == 2 and data_dims == 3:
        stack = image.permute(3, 0, 1, 2)  # (Z, C, X, Y)
        probs, _ = sliding_window_predict(model, stack, patch_size, overlap=0.5, batch_size=batch_size, device=device,
                                          activation=activation, amp=amp)
        return probs.argmax(1).permute(1, 2, 0)  # (X, Y, Z)
    probs, _ = sliding_window_predict(model, image, patch_size, overlap=0.5, batch_size=batch_size, device=device,
                                      activation=activation, amp=amp)
    return probs.argmax(0)


def validate(model, cases: Sequence[Case], patch_size: Sequence[int], device, activation: str, network_dims: int,
             num_classes: int, *, batch_size: int = 2, amp: bool = False, rank: int = 0, world_size: int = 1,
             advance=None):
    """Summed ``(3, K-1)`` confusion counts of this rank's share of ``cases`` (on ``device``)."""
    import torch

    counts = torch.zeros((3, max(num_classes - 1, 0)), dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for case in list(cases)[rank::world_size]:
                image = torch.from_numpy(np.load(case.image_path).astype(np.float32, copy=False))
                label = torch.from_numpy(np.load(case.label_path)[0].astype(np.int64)).to(device)
                pred = predict_case(model, image, patch_size, device, activation, network_dims, batch_size, amp)
                counts += confusion_counts(pred.to(device), label, num_classes).to(device)
                if advance is not None:
                    advance(1)
    finally:
        model.train(was_training)
    return counts
