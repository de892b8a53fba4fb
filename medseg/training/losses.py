"""Training losses: Dice + cross-entropy, CM-MLP's edge-weighted BCE + IoU, and deep supervision.

Shapes: ``logits`` ``(B, K, *spatial)``; ``target`` integer labels ``(B, 1, *spatial)`` or ``(B, *spatial)``.
``activation`` is ``"softmax"`` (K ≥ 2 channels, one per class including background) or ``"sigmoid"``
(one channel: the foreground of a binary task).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

EDGE_KERNEL = 31
EDGE_WEIGHT = 5.0


def _squeeze_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if target.dim() == logits.dim():
        target = target[:, 0]
    return target.long()


def _foreground_onehot(target: torch.Tensor, logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Float masks of the channels the region losses score: ``(B, K-1, *spatial)`` (softmax: classes
    1..K-1) or ``(B, 1, *spatial)`` (sigmoid: label 1)."""
    if activation == "sigmoid":
        return (target == 1).unsqueeze(1).to(logits.dtype)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return onehot[:, 1:]


def _foreground_probs(logits: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:]


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, activation: str = "softmax",
                 smooth: float = 1e-5, batch_dice: bool = True) -> torch.Tensor:
    """Cross-entropy (BCE for sigmoid) + (1 − soft Dice over the foreground classes).

    ``batch_dice``: Dice sums over the whole batch (nnU-Net's choice for patches), else per sample.
    """
    logits = logits.float()
    target = _squeeze_target(target, logits)
    if activation == "sigmoid":
        ce = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).to(logits.dtype))
    else:
        ce = F.cross_entropy(logits, target)
    probs = _foreground_probs(logits, activation)
    masks = _foreground_onehot(target, logits, activation)
    axes = (0, *range(2, logits.dim())) if batch_dice else tuple(range(2, logits.dim()))
    intersection = (probs * masks).sum(axes)
    denominator = probs.sum(axes) + masks.sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return ce + (1 - dice.mean())


def edge_weights(masks: torch.Tensor, kernel: int = EDGE_KERNEL, weight: float = EDGE_WEIGHT) -> torch.Tensor:
    """``1 + weight · |avgpool_kernel(mask) − mask|`` per channel: large near edges, 1 far from them.

    ``masks`` float ``(B, C, *spatial)`` (2D or 3D); the pooling keeps the size (stride 1, zero padding
    counted, as in PraNet / CM-MLP's released code).
    """
    pool = F.avg_pool2d if masks.dim() == 4 else F.avg_pool3d
    return 1 + weight * torch.abs(pool(masks, kernel, stride=1, padding=kernel // 2) - masks)


def edge_bce_iou_loss(logits: torch.Tensor, target: torch.Tensor, activation: str = "sigmoid") -> torch.Tensor:
    """CM-MLP's structure loss: edge-weighted BCE + edge-weighted IoU, averaged over channels and batch.

    Binary (sigmoid, one channel): exactly the released code's loss on the foreground mask.
    Multi-class (softmax): the same loss per foreground class channel on the softmax probabilities,
    BCE written as ``−[y log p + (1 − y) log(1 − p)]`` with the class-vs-rest mask ``y``.
    """
    logits = logits.float()
    target = _squeeze_target(target, logits)
    masks = _foreground_onehot(target, logits, activation)
    weights = edge_weights(masks)
    axes = tuple(range(2, logits.dim()))
    if activation == "sigmoid":
        bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
        probs = torch.sigmoid(logits)
    else:
        log_probs = torch.log_softmax(logits, dim=1)[:, 1:]
        probs = log_probs.exp()
        log_rest = torch.log1p(-probs.clamp(max=1 - 1e-6))
        bce = -(masks * log_probs + (1 - masks) * log_rest)
    wbce = (weights * bce).sum(axes) / weights.sum(axes)
    intersection = (probs * masks * weights).sum(axes)
    union = ((probs + masks) * weights).sum(axes)
    wiou = 1 - (intersection + 1) / (union - intersection + 1)
    return (wbce + wiou).mean()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"dice_ce": dice_ce_loss, "edge_bce_iou": edge_bce_iou_loss}


def deep_supervision_weights(levels: int, mode: str = "halving") -> list[float]:
    """Weights of the outputs, finest first: ``halving`` 1, 1/2, 1/4... or ``equal``; they sum to 1."""
    raw = [0.5**i for i in range(levels)] if mode == "halving" else [1.0] * levels
    total = sum(raw)
    return [w / total for w in raw]


def resize_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Integer labels ``(B, 1, *spatial)`` resized to ``size`` by nearest neighbour."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(size), mode="nearest").to(target.dtype)


def compute_loss(outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, name: str = "dice_ce",
                 activation: str = "softmax", deep_supervision: str | None = "halving") -> torch.Tensor:
    """The training loss of a network's output(s).

    ``outputs``: logits, or a list of logits finest first (deep supervision): the loss of each against
    the target resized to its size, weighted by ``deep_supervision_weights`` (``None``: first output only).
    ``target``: ``(B, 1, *spatial)`` integer labels at the finest output's size.
    """
    loss_fn = LOSSES[name]
    if target.dim() == (outputs[0] if isinstance(outputs, (list, tuple)) else outputs).dim() - 1:
        target = target.unsqueeze(1)
    if not isinstance(outputs, (list, tuple)):
        return loss_fn(outputs, target, activation)
    if deep_supervision is None or len(outputs) == 1:
        return loss_fn(outputs[0], target, activation)
    weights = deep_supervision_weights(len(outputs), deep_supervision)
    return sum(w * loss_fn(o, resize_target(target, o.shape[2:]), activation) for w, o in zip(weights, outputs))
