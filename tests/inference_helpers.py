"""Helpers shared by the inference tests: phantom plans, oracle networks, tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medseg.phantoms import CT_LABELS


def ct_plan(spacing=(1.5, 1.5, 3.0), crop_nonzero: bool = False, labels=None, channels=1) -> dict:
    """A preprocessing plan for CT phantoms (dims 3, CT normalization)."""
    labels = dict(labels or CT_LABELS)
    return {
        "dims": 3, "modality": "CT", "channel_names": ["CT"] * channels, "num_channels": channels,
        "labels": labels, "num_classes": len(labels), "canonical": "RAS",
        "target_spacing": list(spacing),
        "normalization": [{"scheme": "ct", "clip": [-1000.0, 1000.0], "mean": 0.0, "std": 300.0}] * channels,
        "crop_nonzero": crop_nonzero, "median_shape": [32, 32, 16],
    }


def label_plan(num_classes: int, spacing, dims: int = 3) -> dict:
    """A plan whose image channels are taken as they are (normalization 'none')."""
    labels = {"background": 0, **{f"class{k}": k for k in range(1, num_classes)}}
    return {
        "dims": dims, "modality": "MR" if dims == 3 else "2D", "channel_names": ["x"], "num_channels": 1,
        "labels": labels, "num_classes": num_classes, "canonical": "RAS", "target_spacing": list(spacing),
        "normalization": [{"scheme": "none"}], "crop_nonzero": False, "median_shape": [16] * dims,
    }


class Oracle(torch.nn.Module):
    """A stand-in network that ignores its input and returns the logits of a held one-hot reference.

    Used with ``Predictor.from_model(..., patch_size=None)`` (the whole preprocessed image is one window).
    ``set_reference(label (1, *spatial))`` before each case.
    """

    def __init__(self, num_classes: int, spatial_dims: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.reference = None

    def set_reference(self, label: np.ndarray) -> None:
        onehot = torch.nn.functional.one_hot(torch.from_numpy(label[0].astype(np.int64)), self.num_classes)
        self.reference = onehot.movedim(-1, 0).float()[None]

    def forward(self, x):
        assert tuple(x.shape[2:]) == tuple(self.reference.shape[2:]), (x.shape, self.reference.shape)
        return (self.reference.to(x.device) * 40.0 - 20.0).expand(x.shape[0], -1, *x.shape[2:])


class ValueToClass(torch.nn.Module):
    """A translation-equivariant 'network': logits for class k peak where the input value is k.

    With an input image that holds label values, every window, flip and slice predicts the label exactly.
    """

    def __init__(self, num_classes: int, spatial_dims: int = 3, sharpness: float = 20.0):
        super().__init__()
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.sharpness = sharpness

    def forward(self, x):
        k = torch.arange(self.num_classes, dtype=x.dtype, device=x.device).view(1, -1, *([1] * self.spatial_dims))
        return -self.sharpness * (x[:, :1] - k) ** 2


def dice(pred: np.ndarray, ref: np.ndarray, value: int) -> float:
    a, b = pred == value, ref == value
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2 * (a & b).sum() / denom)


def save_tiny_checkpoint(path: Path, plan: dict, arch: str = "unet3d_tiny", patch_size=(16, 16, 16),
                         seed: int = 0, **extra) -> Path:
    """A checkpoint as ``medseg train`` writes it, for a randomly initialised tiny network."""
    from medseg import __version__
    from medseg.models import create_model
    from medseg.runs import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(arch, plan["num_channels"], len(plan["labels"]))
    checkpoint = {
        "medseg_version": __version__, "arch": arch, "model_options": {}, "in_channels": plan["num_channels"],
        "num_classes": len(plan["labels"]), "model": model.state_dict(), "plan": plan, "labels": plan["labels"],
        "spatial_dims": model.spatial_dims, "patch_size": list(patch_size), "activation": "softmax",
        "config": {}, "epoch": 1, "best_dice": 0.0, **extra,
    }
    return save_checkpoint(checkpoint, path)
