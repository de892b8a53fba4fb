"""Sliding-window inference with Gaussian weighting, batched windows and in-place accumulation.

The window layout and the Gaussian importance map follow MONAI's ``sliding_window_inference``
(``mode="gaussian"``, ``sigma_scale=0.125``, starts every ``int(patch * (1 - overlap))`` voxels, the
last window flush with the far side, images smaller than the patch padded symmetrically with zeros),
so both give the same probabilities for the same network. What differs is how the work is done:

* several independent images can be stacked on a leading axis ``N`` (the axial slices of a volume for
  a 2D network): windows of every image are batched together;
* flip test-time augmentation happens inside each batch (every window is run under every flip in the
  same forward pass, un-flipped and averaged before accumulation), so flips cost one pass over the
  windows with a larger batch rather than one sliding pass per flip;
* probabilities are accumulated in place on ``accumulate_device`` (the network's device unless the
  volume does not fit, see :mod:`medseg.inference.memory`); the normalisation map is accumulated once
  per window position, not per image or per class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from medseg import devices

if TYPE_CHECKING:  # pragma: no cover
    import torch

SIGMA_SCALE = 0.125
MIN_WEIGHT = 1e-3


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = SIGMA_SCALE, device=None):
    """A separable Gaussian centred on the patch (1 at the exact centre), clamped below at ``1e-3``:
    float32 ``(*patch_size)``, as MONAI's ``compute_importance_map(mode="gaussian")``."""
    import torch

    weight = None
    for size in patch_size:
        x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float32, device=device)[:size]
        g = torch.exp(x**2 / (-2 * (size * sigma_scale) ** 2))
        weight = g if weight is None else weight.unsqueeze(-1) * g
    return weight.clamp_(min=max(float(weight.min()), MIN_WEIGHT))


def window_starts(image_size: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Start index of the windows along each axis (``image_size >= patch_size`` on every axis)."""
    starts = []
    for size, patch in zip(image_size, patch_size):
        if size <= patch:
            starts.append([0])
            continue
        step = max(int(patch * (1 - overlap)), 1)
        count = math.ceil((size - patch) / step) + 1
        starts.append([min(i * step, size - patch) for i in range(count)])
    return starts


def whole_image_patch(image_size: Sequence[int], patch_size: Sequence[int], factor: float,
                      size_multiple: int = 1) -> tuple[int, ...]:
    """The window to use: the whole image padded to ``size_multiple`` (and to at least the patch) when
    that holds at most ``factor`` × the patch's voxels, else ``patch_size``."""
    patch_size = tuple(int(p) for p in patch_size)
    if factor <= 0:
        return patch_size
    whole = tuple(max(p, -(-int(s) // size_multiple) * size_multiple) for s, p in zip(image_size, patch_size))
    return whole if math.prod(whole) <= factor * math.prod(patch_size) else patch_size


def num_windows(image_size: Sequence[int], patch_size: Sequence[int], overlap: float,
                whole_image_factor: float = 0.0, size_multiple: int = 1) -> int:
    """How many windows cover an image of ``image_size`` (after padding to at least ``patch_size``)."""
    patch_size = whole_image_patch(image_size, patch_size, whole_image_factor, size_multiple)
    padded = [max(s, p) for s, p in zip(image_size, patch_size)]
    return math.prod(len(s) for s in window_starts(padded, patch_size, overlap))


def to_probabilities(logits: "torch.Tensor", activation: str) -> "torch.Tensor":
    """``softmax`` over channels, or ``sigmoid`` of a single channel returned as ``[1 - p, p]``.

    ``logits`` (B, K, *spatial) → float32 probabilities (B, K, *spatial) (K = 2 for sigmoid).
    """
    import torch

    logits = logits.float()
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        if logits.shape[1] != 1:
            raise ValueError(f"sigmoid activation expects one output channel, got {logits.shape[1]}")
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    raise ValueError(f"unknown activation {activation!r} (expected 'softmax' or 'sigmoid')")


def autocast_context(device: "torch.device", amp: bool = True):
    """bf16 autocast where the device runs bf16 natively (a CUDA GPU that supports it, a CPU with AVX512-BF16
    or AMX: ``medseg.devices.bf16_supported``), a no-op elsewhere (other CPUs only emulate bf16, far slower).

    On the AMX Xeon the 39 Hippocampus validation cases with the default TTA took 0.49× the fp32 time per
    case and kept their pooled Dice to 1e-4 (``benchmarks/cpu_inference.py``, ``cpu_inference_epoch483.json``).
    """
    import contextlib

    import torch

    if amp and devices.bf16_supported(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sliding_window_predict(
    model: Callable,
    image: "torch.Tensor",
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    device="cpu",
    *,
    activation: str = "softmax",
    flips: Sequence[Sequence[int]] = ((),),
    accumulate_device=None,
    second_moment: bool = False,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
    whole_image_factor: float = 0.0,
    size_multiple: int = 1,
) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Predict class probabilities for ``image`` window by window.

    Args:
        model: maps ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)`` (a list/tuple: first item).
        image: ``(C, *spatial)``, or ``(N, C, *spatial)`` for ``N`` independent images of one size
            (e.g. the slices of a volume for a 2D network); ``len(spatial) == len(patch_size)``.
        patch_size: window size; images smaller than it are padded with zeros and cropped back.
        overlap: fraction of a window shared with its neighbour along each axis, in [0, 1).
        batch_size: windows per forward pass (each is run under every flip in the same pass).
        device: where the network runs; windows are moved there batch by batch.
        activation: ``"softmax"`` or ``"sigmoid"`` (see :func:`to_probabilities`).
        flips: spatial axes to flip (0-based), one tuple per test-time member, ``()`` = unflipped.
            Each member's output is flipped back and the members are averaged.
        accumulate_device: where the running sums live (default ``device``).
        second_moment: also return the weighted mean of ``p²`` over windows and flips (for the
            variance across test-time members).
        amp: bf16 autocast where the device runs it natively (``autocast_context``).
        progress: called with the number of windows done after each batch.
        whole_image_factor: when > 0 and the image, padded to a multiple of ``size_multiple`` (and to at
            least the patch), has at most ``whole_image_factor`` × the patch's voxels, it is predicted as
            one window of that size (for fully convolutional networks: no overlapping windows to run
            twice). 0 keeps the patch-sized windows (MONAI's layout).
        size_multiple: the network's input side multiple (for ``whole_image_factor``).

    Returns:
        ``(probs, probs_sq)``: float32 ``(K, *spatial)`` (or ``(N, K, *spatial)`` for a stacked input)
        on ``accumulate_device``; ``probs_sq`` is None unless ``second_moment``.
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    accumulate_device = torch.device(accumulate_device) if accumulate_device is not None else device
    dims = len(patch_size)
    stacked = image.ndim == dims + 2
    if not stacked:
        if image.ndim != dims + 1:
            raise ValueError(f"image shape {tuple(image.shape)} does not fit a {dims}D patch {tuple(patch_size)}")
        image = image[None]
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    patch_size = tuple(int(p) for p in patch_size)
    flips = [tuple(int(a) for a in f) for f in flips] or [()]
    n_images = image.shape[0]
    spatial = tuple(image.shape[2:])
    patch_size = whole_image_patch(spatial, patch_size, whole_image_factor, size_multiple)

    # Pad to at least the patch (MONAI: lower side gets diff // 2).
    pad = []
    for size, patch in zip(reversed(spatial), reversed(patch_size)):
        diff = max(patch - size, 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        image = F.pad(image, pad)
    padded = tuple(image.shape[2:])
    lows = [pad[2 * (dims - 1 - d)] for d in range(dims)]

    weight = gaussian_importance_map(patch_size, device=device)
    weight_acc = weight.to(accumulate_device)
    windows = [tuple(slice(s, s + p) for s, p in zip(start, patch_size))
               for start in itertools.product(*window_starts(padded, patch_size, overlap))]
    norm = torch.zeros(padded, dtype=torch.float32, device=accumulate_device)
    for win in windows:
        norm[win] += weight_acc

    items = [(n, win) for win in windows for n in range(n_images)]
    probs_sum = probs_sq = None
    with torch.no_grad(), devices.subnormals_flushed():
        for first in range(0, len(items), batch_size):
            chunk = items[first:first + batch_size]
            batch = torch.stack([image[n][(slice(None), *win)] for n, win in chunk]).to(device, non_blocking=True)
            members = torch.cat([batch.flip([2 + a for a in f]) if f else batch for f in flips])
            with autocast_context(device, amp):
                logits = model(members)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            # softmax and the mean over flips in fp32: bf16 keeps 8 bits, ~0.004 steps near p = 0.5
            probs = to_probabilities(logits.float(), activation).unflatten(0, (len(flips), len(chunk)))
            unflipped = [probs[i].flip([2 + a for a in f]) if f else probs[i] for i, f in enumerate(flips)]
            mean = unflipped[0] if len(flips) == 1 else torch.stack(unflipped).mean(0)
            mean = (mean * weight).to(accumulate_device)
            sq = None
            if second_moment:
                sq = (torch.stack([p * p for p in unflipped]).mean(0) * weight).to(accumulate_device)
            if probs_sum is None:
                shape = (n_images, mean.shape[1], *padded)
                probs_sum = torch.zeros(shape, dtype=torch.float32, device=accumulate_device)
                if second_moment:
                    probs_sq = torch.zeros(shape, dtype=torch.float32, device=accumulate_device)
            for b, (n, win) in enumerate(chunk):
                probs_sum[n][(slice(None), *win)] += mean[b]
                if sq is not None:
                    probs_sq[n][(slice(None), *win)] += sq[b]
            if progress is not None:
                progress(len(chunk))

    crop = (slice(None), slice(None), *(slice(lo, lo + s) for lo, s in zip(lows, spatial)))
    probs_sum = probs_sum.div_(norm)[crop]
    if probs_sq is not None:
        probs_sq = probs_sq.div_(norm)[crop]
    if not stacked:
        probs_sum = probs_sum[0]
        probs_sq = probs_sq[0] if probs_sq is not None else None
    return probs_sum, probs_sq
