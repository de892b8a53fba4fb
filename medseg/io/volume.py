"""The one image type: a channel-first array with its exact geometry and provenance.

Conventions (the whole package follows them):

* ``array`` is ``(C, *spatial)``. Spatial axes are the file's voxel index axes ``(i, j, k)`` in the
  order nibabel uses (NIfTI storage order; for DICOM series: column, row, slice; for 2D images:
  column, row, so that ``array[c, x, y]`` is pixel ``(row=y, col=x)``).
* ``affine`` is a 4×4 matrix mapping voxel indices ``(i, j, k, 1)`` to RAS+ world millimetres, as in
  nibabel. 2D images use the top-left 3×3 block for their two axes (identity spacing unless known);
  the third row/column are kept so that the matrix is always 4×4.
* ``source`` names where the data came from (a path and a format) for messages; ``meta`` holds
  non-identifying facts (dtype on disk, NIfTI header fields, DICOM SeriesInstanceUID...). Never patient
  names, IDs or birth dates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# RAS <-> LPS: flip the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be (C, *spatial) with 2 or 3 spatial axes, got shape {self.array.shape}")

    # --- shape ---------------------------------------------------------------------------------
    def count_nonfinite(self) -> int:
        """How many voxels are NaN or infinite (always 0 for integer pixel types)."""
        return int(np.count_nonzero(~np.isfinite(self.array))) if self.array.dtype.kind in "fc" else 0

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.array.ndim - 1

    # --- geometry ------------------------------------------------------------------------------
    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial array axis."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in norms[: self.ndim])

    @property
    def origin_ras(self) -> np.ndarray:
        return self.affine[:3, 3].copy()

    @property
    def direction_ras(self) -> np.ndarray:
        """3×3 matrix whose columns are the unit direction of each voxel axis in RAS."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return self.affine[:3, :3] / np.where(norms == 0, 1.0, norms)

    def itk_geometry(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """(origin, spacing, direction) in ITK's LPS convention for a 3D volume."""
        lps = LPS_TO_RAS @ self.affine
        norms = np.linalg.norm(lps[:3, :3], axis=0)
        direction = lps[:3, :3] / np.where(norms == 0, 1.0, norms)
        return tuple(lps[:3, 3]), tuple(norms), tuple(direction.ravel())

    def axcodes(self) -> str:
        """Orientation letters of the voxel axes, e.g. ``'RAS'`` or ``'LPS'``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine)[: self.ndim])

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when both volumes sample the same points (shape and affine within ``atol`` mm)."""
        return self.spatial_shape == other.spatial_shape and bool(
            np.allclose(self.affine, other.affine, atol=atol, rtol=0)
        )

    def with_array(self, array: np.ndarray, **meta: Any) -> "Volume":
        """The same geometry holding another array (e.g. a label map for this scan)."""
        if array.ndim == self.array.ndim - 1:
            array = array[None]
        if tuple(array.shape[1:]) != self.spatial_shape:
            raise ValueError(f"array spatial shape {array.shape[1:]} != {self.spatial_shape}")
        return replace(self, array=array, meta={**self.meta, **meta})

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing)
        try:
            codes = self.axcodes()
        except Exception:  # pragma: no cover - degenerate affine
            codes = "?"
        return (
            f"Volume(channels={self.num_channels}, shape={self.spatial_shape}, spacing=({spacing}) mm, "
            f"orientation={codes}, dtype={self.array.dtype}, source={self.source!r})"
        )
