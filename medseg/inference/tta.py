"""Multi-scale × flip test-time augmentation, all on the device.

A member of the ensemble is a :class:`TTATransform` ``(scale, flip)``: the preprocessed image is
resampled by ``scale`` (``F.interpolate`` on the network's spatial axes), flipped along ``flip``,
predicted, and the probabilities are flipped back and resampled to the scale-1 grid. The mean over
members is the prediction. Flips of one scale run inside the same sliding pass (every window under
every flip in one batch, see :func:`medseg.inference.sliding_window.sliding_window_predict`); scales
are separate passes whose probabilities are resampled back and averaged in place.

Flip modes: ``all`` = every combination of the network's spatial axes (8 members in 3D, 4 in 2D),
``inplane`` = combinations of the first two axes only (4 members; for canonical RAS volumes the
left-right and anterior-posterior axes), ``none`` = no flip.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medseg.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

FLIP_MODES = ("all", "inplane", "none")


def flip_combinations(mode: str, spatial_dims: int) -> list[tuple[int, ...]]:
    """The flips of ``mode`` as tuples of spatial axes, the identity ``()`` first."""
    if mode not in FLIP_MODES:
        raise UsageError(f"unknown flip mode {mode!r} (expected one of: {', '.join(FLIP_MODES)})")
    axes = {"all": range(spatial_dims), "inplane": range(min(2, spatial_dims)), "none": ()}[mode]
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def parse_scales(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.75,1,1.25"`` (or a sequence) → ``(0.75, 1.0, 1.25)``; each scale must be in (0, 4]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        scales = tuple(float(s) for s in items if str(s).strip())
    except ValueError:
        raise UsageError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if not scales or any(not 0 < s <= 4 for s in scales):
        raise UsageError(f"--scales must be numbers in (0, 4], got {text!r}")
    return scales


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, ...]:
    return tuple(max(1, round(s * scale)) for s in size)


def resample(x: "torch.Tensor", size: Sequence[int]) -> "torch.Tensor":
    """Linear resampling of ``x (N, C, *spatial)`` to ``size`` (bi-/trilinear, align_corners=False)."""
    import torch.nn.functional as F

    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


@dataclass(frozen=True)
class TTATransform:
    """One test-time member: resample by ``scale``, then flip the spatial axes in ``flip``."""

    scale: float = 1.0
    flip: tuple[int, ...] = ()

    def apply(self, image: "torch.Tensor") -> "torch.Tensor":
        """``image (N, C, *spatial)`` → the transformed image ``(N, C, *scaled spatial)``."""
        x = resample(image, scaled_size(image.shape[2:], self.scale)) if self.scale != 1 else image
        return x.flip([2 + a for a in self.flip]) if self.flip else x

    def invert(self, output: "torch.Tensor", size: Sequence[int]) -> "torch.Tensor":
        """Undo the transform on an output ``(N, K, *scaled spatial)`` → ``(N, K, *size)``."""
        x = output.flip([2 + a for a in self.flip]) if self.flip else output
        return resample(x, size)


def tta_members(scales: Sequence[float], flip_mode: str, spatial_dims: int) -> list[TTATransform]:
    """Every ``(scale, flip)`` member, scale by scale."""
    return [TTATransform(float(s), f) for s in scales for f in flip_combinations(flip_mode, spatial_dims)]


def tta_predict(
    model: Callable,
    image: "torch.Tensor",
    patch_size: Sequence[int],
    *,
    scales: Sequence[float] = (1.0,),
    flip_mode: str = "none",
    overlap: float = 0.5,
    batch_size: int = 4,
    device="cpu",
    accumulate_device=None,
    activation: str = "softmax",
    second_moment: bool = False,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
    whole_image_factor: float = 0.0,
    size_multiple: int = 1,
) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Mean probabilities over every ``(scale, flip)`` member.

    ``image``: ``(N, C, *spatial)`` with ``len(spatial) == len(patch_size)`` (N images of one size,
    e.g. slices for a 2D network), on ``device`` or on the CPU. Returns ``(probs, probs_sq)``:
    float32 ``(N, K, *spatial)`` on ``accumulate_device`` (default ``device``); ``probs_sq`` is the
    mean of ``p²`` over members (None unless ``second_moment``), so the variance across members is
    ``probs_sq - probs²``. With one scale 1.0 and ``flip_mode="none"`` this is plain sliding-window
    inference. ``whole_image_factor`` and ``size_multiple``: see ``sliding_window_predict``.
    """
    import torch

    from medseg.inference.sliding_window import sliding_window_predict

    device = torch.device(device)
    accumulate_device = torch.device(accumulate_device) if accumulate_device is not None else device
    size = tuple(image.shape[2:])
    flips = flip_combinations(flip_mode, len(patch_size))
    total = total_sq = None
    for scale in scales:
        scaled = TTATransform(float(scale)).apply(image)
        probs, probs_sq = sliding_window_predict(
            model, scaled, patch_size, overlap, batch_size, device, activation=activation, flips=flips,
            accumulate_device=accumulate_device, second_moment=second_moment, amp=amp, progress=progress,
            whole_image_factor=whole_image_factor, size_multiple=size_multiple,
        )
        del scaled
        if len(scales) == 1:
            return probs, probs_sq
        probs = resample(probs, size)
        total = probs if total is None else total.add_(probs)
        if second_moment:
            probs_sq = resample(probs_sq, size)
            total_sq = probs_sq if total_sq is None else total_sq.add_(probs_sq)
    total.div_(len(scales))
    if total_sq is not None:
        total_sq.div_(len(scales))
    return total, total_sq


def tta_windows(spatial: Sequence[int], patch_size: Sequence[int], overlap: float, scales: Sequence[float],
                n_images: int = 1, whole_image_factor: float = 0.0, size_multiple: int = 1) -> int:
    """How many windows :func:`tta_predict` runs over ``n_images`` images (a progress bar's total)."""
    from medseg.inference.sliding_window import num_windows

    return n_images * sum(num_windows(scaled_size(spatial, s), patch_size, overlap, whole_image_factor, size_multiple)
                          for s in scales)
