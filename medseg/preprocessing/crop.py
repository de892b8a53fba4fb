"""Cropping to the nonzero region (nnU-Net style) and its bounding boxes."""

from __future__ import annotations

import numpy as np


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with enclosed background filled (as ``scipy.ndimage.binary_fill_holes``, in one labelling
    pass instead of iterated dilations): background components that do not touch the border are holes."""
    from scipy import ndimage

    components, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    border = np.zeros(count + 1, bool)
    for axis in range(mask.ndim):
        for index in (0, -1):
            border[np.take(components, index, axis=axis)] = True
    border[0] = True  # label 0 is the mask itself
    return ~border[components] | mask


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """``(*spatial)`` bool: voxels where any channel of ``image`` ``(C, *spatial)`` is nonzero, holes filled."""
    return fill_holes(np.any(image != 0, axis=0))


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """``[[lo, hi), ...]`` per spatial axis of the True voxels of ``mask``; the whole array when empty."""
    if not mask.any():
        return [[0, int(n)] for n in mask.shape]
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def box_slices(box: list[list[int]]) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)


def crop(array: np.ndarray, box: list[list[int]]) -> np.ndarray:
    """Crop the spatial axes of ``array`` ``(C, *spatial)`` to ``box``."""
    return array[(slice(None), *box_slices(box))]
