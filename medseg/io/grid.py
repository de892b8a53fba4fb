"""Putting one volume onto another's voxel grid, using both affines (world coordinates).

``reorient_to_match`` is exact: when two grids sample the same points and differ only by axis order
and direction (a label stored LAS for an LPS DICOM series, say), the array is transposed and flipped,
never interpolated. ``resample_to_grid`` falls back to ``scipy.ndimage.affine_transform`` otherwise.
"""

from __future__ import annotations

import numpy as np

from medseg.errors import GeometryError
from medseg.io.volume import Volume


def _voxel_map(source: Volume, reference: Volume) -> np.ndarray:
    """``(n+1, n+1)`` matrix mapping reference voxel indices to ``source`` voxel indices (n spatial axes)."""
    if source.ndim != reference.ndim:
        raise ValueError(f"cannot map a {source.ndim}D volume onto a {reference.ndim}D grid")
    full = np.linalg.solve(source.affine, reference.affine)  # ref voxel -> world -> source voxel
    n = reference.ndim
    keep = list(range(n)) + [3]
    return full[np.ix_(keep, keep)]


def reorient_to_match(label: Volume, reference: Volume, atol: float = 1e-3) -> Volume | None:
    """``label`` on ``reference``'s grid by an exact axis permutation/flip, or ``None`` when impossible.

    Returns a Volume ``(C, *reference.spatial_shape)`` with ``reference.affine`` when, after permuting
    and flipping ``label``'s axes, its affine equals ``reference.affine`` within ``atol`` mm and the
    shapes agree (so both sample the same world points); otherwise ``None``.
    """
    if label.ndim != reference.ndim:
        return None
    n = reference.ndim
    m = _voxel_map(reference, label)[:n, :n]  # label voxel -> reference voxel (linear part)
    ref_axis = np.abs(m).argmax(axis=0)  # label axis a lands on reference axis ref_axis[a]
    if sorted(ref_axis.tolist()) != list(range(n)):
        return None
    signs = np.sign(m[ref_axis, np.arange(n)])
    array = label.array
    for a in range(n):
        if signs[a] < 0:
            array = np.flip(array, axis=1 + a)
    order = [int(np.where(ref_axis == r)[0][0]) for r in range(n)]  # reference axis r <- label axis
    array = np.transpose(array, [0] + [1 + a for a in order])
    if tuple(array.shape[1:]) != reference.spatial_shape:
        return None
    # Affine of the reoriented array: reference index q -> label index p.
    index_map = np.zeros((4, 4))
    index_map[3, 3] = 1.0
    for r, a in enumerate(order):
        if signs[a] < 0:
            index_map[a, r] = -1.0
            index_map[a, 3] = label.spatial_shape[a] - 1
        else:
            index_map[a, r] = 1.0
    if n == 2:
        index_map[2, 2] = 1.0
    affine = label.affine @ index_map
    rows = list(range(3))
    cols = list(range(n)) + [3]
    if not np.allclose(affine[np.ix_(rows, cols)], reference.affine[np.ix_(rows, cols)], atol=atol, rtol=0):
        return None
    return Volume(array=np.ascontiguousarray(array), affine=reference.affine.copy(), source=label.source,
                  meta={**label.meta, "reoriented_to": reference.source})


def resample_to_grid(volume: Volume, reference: Volume, order: int = 0) -> Volume:
    """``volume`` sampled at ``reference``'s voxel centres: ``(C, *reference.spatial_shape)``.

    Uses the exact permutation/flip of :func:`reorient_to_match` when the grids sample the same points
    (within 1e-3 mm); otherwise ``scipy.ndimage.affine_transform`` per channel with spline ``order``
    (0 = nearest neighbour, for labels: dtype kept; higher orders give float32). Points outside
    ``volume`` get 0.
    """
    exact = reorient_to_match(volume, reference, atol=1e-3)
    if exact is not None:
        return exact
    from scipy import ndimage

    n = reference.ndim
    voxel_map = _voxel_map(volume, reference)
    out_dtype = volume.array.dtype if order == 0 else np.float32
    channels = [
        ndimage.affine_transform(
            channel if order == 0 else channel.astype(np.float32),
            voxel_map[:n, :n], offset=voxel_map[:n, n], output_shape=reference.spatial_shape,
            order=order, mode="constant", cval=0.0,
        ).astype(out_dtype, copy=False)
        for channel in volume.array
    ]
    return Volume(array=np.stack(channels), affine=reference.affine.copy(), source=volume.source,
                  meta={**volume.meta, "resampled_to": reference.source})


GRID_TOLERANCE_VOXELS = 0.05  # corners of two "same" grids may differ by this fraction of a voxel


def grid_deviation_mm(a: Volume, b: Volume) -> float:
    """Largest distance (mm) between the world positions of matching corner voxels of two grids."""
    n = a.ndim
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in a.spatial_shape], indexing="ij")).reshape(n, -1)
    homogeneous = np.zeros((4, corners.shape[1]))
    homogeneous[:n] = corners
    homogeneous[3] = 1
    return float(np.linalg.norm((a.affine @ homogeneous - b.affine @ homogeneous)[:3], axis=0).max())


def on_same_grid(a: Volume, b: Volume) -> bool:
    """Same shape and corners within ``GRID_TOLERANCE_VOXELS`` of the smaller voxel size."""
    if a.spatial_shape != b.spatial_shape:
        return False
    tolerance = GRID_TOLERANCE_VOXELS * min(min(a.spacing), min(b.spacing))
    return grid_deviation_mm(a, b) <= tolerance


def _shape_text(shape) -> str:
    return "×".join(str(s) for s in shape)


def match_grid(moving: Volume, reference: Volume, what: str) -> Volume:
    """``moving``'s array on ``reference``'s grid: unchanged when the grids agree, exactly permuted or
    flipped when they sample the same points in another axis order; else a GeometryError."""
    if moving.ndim != reference.ndim:
        raise GeometryError(f"{what} is {moving.ndim}D but the image is {reference.ndim}D", moving.source)
    if on_same_grid(moving, reference):
        return reference.with_array(moving.array)
    tolerance = GRID_TOLERANCE_VOXELS * min(min(moving.spacing), min(reference.spacing))
    exact = reorient_to_match(moving, reference, atol=tolerance)
    if exact is not None:
        return reference.with_array(exact.array)
    if sorted(moving.spatial_shape) != sorted(reference.spatial_shape):
        raise GeometryError(f"{what} grid {_shape_text(moving.spatial_shape)} does not match the image grid "
                            f"{_shape_text(reference.spatial_shape)}", moving.source)
    raise GeometryError(f"{what} does not overlay the image: same size but the affines differ by up to "
                        f"{grid_deviation_mm(moving, reference):.3g} mm", moving.source)
