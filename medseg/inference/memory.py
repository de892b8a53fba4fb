"""Where to accumulate probabilities: on the network's device when they fit, else on the CPU.

A pure decision from sizes and free memory (:func:`accumulate_on_device`), plus the two facts it needs
(:func:`accumulation_bytes`, :func:`free_device_memory`). When the CPU is chosen the windows still run
on the device; each batch's probabilities are copied to the CPU and summed there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEVICE_FRACTION = 0.6  # at most this share of the free device memory for the volume-sized buffers


def accumulation_bytes(num_classes: int, spatial_shape: Sequence[int], in_channels: int,
                       scales: Sequence[float] = (1.0,), second_moment: bool = False) -> int:
    """Bytes of the volume-sized float32 buffers one prediction holds on its accumulation device.

    Counts the input image, the largest rescaled copy of it, the probability sum (twice with a second
    moment), one rescaled probability sum per scale pass and the weight map. Per-batch buffers (windows)
    are small and not counted.
    """
    voxels = math.prod(int(s) for s in spatial_shape)
    largest = max(max(scales), 1.0) ** len(spatial_shape)
    moments = 2 if second_moment else 1
    image = in_channels * voxels * (1 + (largest if any(s != 1 for s in scales) else 0))
    probs = num_classes * voxels * moments * (1 + (largest if len(scales) > 1 else 0))
    return int(4 * (image + probs + voxels * largest))


def accumulate_on_device(required_bytes: int, free_bytes: int | None, fraction: float = DEVICE_FRACTION) -> bool:
    """True when ``required_bytes`` fit in ``fraction`` of ``free_bytes``; ``free_bytes=None`` (a CPU,
    or a device that does not report memory) always fits."""
    if free_bytes is None:
        return True
    return required_bytes <= fraction * free_bytes


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (after what PyTorch's cache could release); None for other devices."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def accumulation_device(device, required_bytes: int):
    """The device to accumulate on: ``device`` when the buffers fit there, else the CPU."""
    import torch

    device = torch.device(device)
    return device if accumulate_on_device(required_bytes, free_device_memory(device)) else torch.device("cpu")
