"""Pad inputs to a model's ``size_multiple`` and crop its outputs back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(
    x: torch.Tensor, multiple: int, spatial_dims: int | None = None, mode: str = "constant", value: float = 0.0
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial sides of ``x`` ``(B, C, *spatial)`` up to multiples of ``multiple``.

    The padding is split evenly before/after each side (odd amounts put the extra voxel after).
    ``mode`` is a ``torch.nn.functional.pad`` mode (``constant``, ``reflect``, ``replicate``);
    ``spatial_dims`` defaults to ``x.dim() - 2``. Returns ``(padded, crop)`` where
    ``padded[(..., *crop)]`` is ``x`` again: ``crop`` holds one slice per spatial side.
    """
    spatial_dims = x.dim() - 2 if spatial_dims is None else spatial_dims
    sides = x.shape[x.dim() - spatial_dims:]
    before = [((-s) % multiple) // 2 for s in sides]
    after = [(-s) % multiple - b for s, b in zip(sides, before)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, sides))
    if not any(before) and not any(after):
        return x, crop
    pads = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]  # last side first
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=value), crop
    return F.pad(x, pads, mode=mode), crop


def crop_output(y: torch.Tensor, crop: tuple[slice, ...], padded_sides: tuple[int, ...]) -> torch.Tensor:
    """Crop ``y`` ``(B, K, *sides)`` back to the region ``crop`` of a padded input of ``padded_sides``.

    ``y`` may be at a lower resolution (a deep-supervision output with sides ``padded / f``): the crop is
    scaled by each side's factor ``f``, keeping ``ceil(side / f)`` voxels from ``start // f``.
    """
    slices = []
    for s, out_side, full_side in zip(crop, y.shape[2:], padded_sides):
        f = max(full_side // out_side, 1)
        start = s.start // f
        slices.append(slice(start, min(start - (-(s.stop - s.start) // f), out_side)))
    return y[(slice(None), slice(None), *slices)]


def forward_padded(model: torch.nn.Module, x: torch.Tensor, mode: str = "constant", value: float = 0.0):
    """``model(x)`` for any spatial size: pad to ``model.size_multiple``, run, crop the output(s) back.

    ``x``: ``(B, C, *spatial)``. Returns logits ``(B, K, *spatial)``, or a list of logits (finest first,
    lower resolutions cropped proportionally) for a deep-supervision model in train mode.
    """
    padded, crop = pad_to_multiple(x, getattr(model, "size_multiple", 1), getattr(model, "spatial_dims", None), mode, value)
    out = model(padded)
    sides = tuple(padded.shape[2:])
    if isinstance(out, (list, tuple)):
        return [crop_output(o, crop, sides) for o in out]
    return crop_output(out, crop, sides)
