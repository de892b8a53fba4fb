"""Exact reorientation to the canonical RAS axis order (axis permutations and flips only, no resampling).

An orientation transform is nibabel's ``io_orientation`` array ``ornt`` of shape ``(n, 2)``: input
spatial axis ``i`` becomes output axis ``ornt[i, 0]``, flipped when ``ornt[i, 1] == -1``. 2D images
(``n == 2``) are never reoriented: their transform is the identity.
"""

from __future__ import annotations

import numpy as np


def identity_ornt(ndim: int) -> np.ndarray:
    """The do-nothing transform for ``ndim`` spatial axes, shape ``(ndim, 2)``."""
    return np.stack([np.arange(ndim), np.ones(ndim)], axis=1).astype(np.float64)


def canonical_ornt(affine: np.ndarray, ndim: int = 3) -> np.ndarray:
    """The transform taking voxel axes with this ``affine`` (4×4) to RAS order; identity for 2D.

    For an oblique affine each voxel axis goes to the world axis it is closest to (nibabel's rule).
    """
    if ndim == 2:
        return identity_ornt(2)
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    if np.isnan(ornt).any():
        raise ValueError("degenerate affine: cannot find the orientation of every voxel axis")
    return ornt


def reorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply ``ornt`` to the spatial axes of a channel-first array ``(C, *spatial)`` (returns a view)."""
    import nibabel as nib

    ornt = np.asarray(ornt)
    if (ornt == identity_ornt(len(ornt))).all():
        return array
    return np.moveaxis(nib.orientations.apply_orientation(np.moveaxis(array, 0, -1), ornt), -1, 0)


def reoriented_shape(shape: tuple[int, ...], ornt: np.ndarray) -> tuple[int, ...]:
    """Spatial shape after applying ``ornt`` to an array of spatial ``shape``."""
    out = [0] * len(shape)
    for axis, (target, _) in enumerate(np.asarray(ornt)):
        out[int(target)] = int(shape[axis])
    return tuple(out)


def reorder_to_canonical(values, ornt: np.ndarray) -> list[float]:
    """Per-axis values (spacing...) in original axis order → canonical axis order."""
    out = [0.0] * len(values)
    for axis, (target, _) in enumerate(np.asarray(ornt)):
        out[int(target)] = float(values[axis])
    return out


def undo_reorient(tensor, ornt):
    """Inverse of :func:`reorient` for a channel-first torch tensor ``(K, *canonical spatial)``.

    Returns ``(K, *original spatial)`` on the same device (permute + flip: exact)."""
    ornt = np.asarray(ornt)
    perm = [0] + [int(t) + 1 for t in ornt[:, 0]]
    out = tensor.permute(*perm)
    flips = [axis + 1 for axis, flip in enumerate(ornt[:, 1]) if flip == -1]
    return out.flip(flips) if flips else out
