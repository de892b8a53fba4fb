"""Patch and batch size from the dataset's median case and the device memory (a pure function).

The budget is a number of voxels per batch: ``memory_fraction × device memory / bytes_per_voxel`` on a
device whose memory is known, ``CPU_BATCH_VOXELS`` otherwise. The patch starts as the whole median case
padded to the network's ``size_multiple``; while it holds more than ``max_patch_voxels`` (or more than the
budget allows for ``min_batch`` samples), the side with the largest physical extent shrinks by one
multiple (nnU-Net's rule, which keeps the patch roughly isotropic in millimetres). The batch then fills
the budget, bounded by ``min_batch`` and ``max_batch`` (``CPU_MAX_BATCH`` on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: bytes of activation memory per voxel of a batch (training, mixed precision), by network dimensionality
BYTES_PER_VOXEL = {2: 1024, 3: 2048}
#: the largest patch by dimensionality (nnU-Net's usual ceilings: 512², 128³)
MAX_PATCH_VOXELS = {2: 512 * 512, 3: 128**3}
#: batch bounds by dimensionality
MAX_BATCH = {2: 32, 3: 16}
#: voxels per batch when the device memory is unknown (CPU): 8 × 256² or 2 × 64³
CPU_BATCH_VOXELS = 2**19
#: batch ceilings on a CPU: 3D batches stay at nnU-Net's minimum of 2, since a compute-bound device gains
#: nothing from a larger batch but fewer optimizer steps a minute. Measured on Hippocampus (unet3d base 8,
#: patch 40×56×40, one core): batch 2 reached validation Dice 0.78 in 5 minutes and 0.82 in 12; batch 5 (the
#: voxel budget's choice; its first 10 minutes shared the core) 0.71 in 9 and 0.80 in 16
CPU_MAX_BATCH = {2: MAX_BATCH[2], 3: 2}
#: on a device without a memory figure (CPU): the most forward multiply-adds per voxel of a planned width
#: (unet3d: base 8 of 32; vnet: 8 of 16; unet: 16 of 64)
CPU_MACS_PER_VOXEL = 128_000
#: the same for a 3D network trained in fp32 on a CPU (no native bf16, or ``--amp off``), where a step costs
#: 2-3× a bf16 one: unet3d base 4 of 32 (15 k). On Hippocampus (same seed, fp32; the AVX2 CPU's 40 minutes
#: emulated from fp32 step times) base 4 led base 8 by 0.006 at 40 minutes, logged and after prediction, and reached 0.85
#: sooner (README, "On a CPU without native bf16")
CPU_FP32_MACS_PER_VOXEL = {3: 32_000}
#: narrowest planned base width
MIN_BASE_CHANNELS = 4


@dataclass(frozen=True)
class PatchPlan:
    patch_size: tuple[int, ...]  # spatial, network axes, multiples of size_multiple
    batch_size: int
    covers_case: bool  # the patch holds the whole (padded) median case
    budget_voxels: int  # voxels per batch the plan aimed at

    def describe(self) -> str:
        side = "×".join(str(s) for s in self.patch_size)
        what = "the whole median case" if self.covers_case else "a part of the median case"
        return f"patch {side} ({what}), batch {self.batch_size}"


def round_up(value: float, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


def plan_patch_and_batch(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    spatial_dims: int,
    device_memory_bytes: int | None = None,
    *,
    size_multiple: int = 16,
    bytes_per_voxel: int | None = None,
    memory_fraction: float = 0.7,
    max_patch_voxels: int | None = None,
    min_batch: int = 2,
    max_batch: int | None = None,
    patch_size: Sequence[int] | None = None,
) -> PatchPlan:
    """Plan ``(patch_size, batch_size)`` for a network of ``spatial_dims`` dimensions.

    Args:
        median_shape: median spatial shape of the training cases in the network's axes (for a 2D
            network on 3D volumes: the in-plane sides), after resampling.
        spacing: voxel size (mm) along the same axes, used to decide which side shrinks first.
        device_memory_bytes: total memory of the training device, or None when unknown (CPU).
        size_multiple: every patch side is a multiple of this (the network's down-sampling factor).
        patch_size: a patch fixed by the user: only the batch is planned.
    Returns:
        a ``PatchPlan``; when the median case fits, the patch covers it whole and the batch grows.
    """
    if len(median_shape) != spatial_dims or len(spacing) != spatial_dims:
        raise ValueError(f"median_shape {tuple(median_shape)} and spacing {tuple(spacing)} must have {spatial_dims} sides")
    bytes_per_voxel = bytes_per_voxel or BYTES_PER_VOXEL[spatial_dims]
    max_patch_voxels = max_patch_voxels or MAX_PATCH_VOXELS[spatial_dims]
    ceiling = MAX_BATCH if device_memory_bytes else CPU_MAX_BATCH
    max_batch = max(min_batch, max_batch or ceiling[spatial_dims])
    if device_memory_bytes:
        budget = int(device_memory_bytes * memory_fraction / bytes_per_voxel)
    else:
        budget = CPU_BATCH_VOXELS
    limit = max(min(max_patch_voxels, budget // min_batch), size_multiple**spatial_dims)

    padded_median = [round_up(s, size_multiple) for s in median_shape]
    if patch_size is not None:
        patch = [int(p) for p in patch_size]
        batch = int(min(max(budget // math.prod(patch), min_batch), max_batch))
        return PatchPlan(tuple(patch), batch, all(p >= m for p, m in zip(patch, padded_median)), budget)
    patch = list(padded_median)
    covers = math.prod(patch) <= limit
    while math.prod(patch) > limit:
        shrinkable = [i for i in range(spatial_dims) if patch[i] > size_multiple]
        axis = max(shrinkable, key=lambda i: (patch[i] * spacing[i], patch[i]))
        patch[axis] -= size_multiple
    batch = int(min(max(budget // math.prod(patch), min_batch), max_batch))
    return PatchPlan(tuple(patch), batch, covers, budget)


def plan_width(default_width: int, macs_per_voxel: Callable[[int], float], device_memory_bytes: int | None, *,
               budget: float = CPU_MACS_PER_VOXEL, min_width: int = MIN_BASE_CHANNELS) -> int:
    """The base width (``base_channels``) to train at.

    ``macs_per_voxel(width)``: forward multiply-adds per voxel of the network at that base width.
    With a device memory figure (a GPU) the architecture's ``default_width``; otherwise (CPU) the default
    halved until ``macs_per_voxel`` is at most ``budget``, never below ``min_width``.
    """
    width = int(default_width)
    if device_memory_bytes:
        return width
    while width // 2 >= min_width and macs_per_voxel(width) > budget:
        width //= 2
    return width
