"""NRRD / MetaImage (and anything else SimpleITK reads) as :class:`Volume`.

ITK geometry is LPS: ``world_lps = origin + direction @ diag(spacing) @ index`` with ``index = (x, y, z)``;
``sitk.GetArrayFromImage`` returns ``(z, y, x[, components])``. The Volume gets ``array``
``(components, x, y, z)`` and ``affine = diag(-1, -1, 1, 1) @ affine_lps`` (RAS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.volume import LPS_TO_RAS, Volume


def read_sitk(path: str | Path) -> Volume:
    """Read a 2D or 3D image with SimpleITK; vector components become channels."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"unreadable image ({first[:200]})", path) from None
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise InputError(f"unsupported {dim}D image (expected 2D or 3D)", path)
    data = sitk.GetArrayFromImage(image)  # (z, y, x[, c]) / (y, x[, c])
    if image.GetNumberOfComponentsPerPixel() == 1:
        data = data[..., None]
    array = np.ascontiguousarray(np.moveaxis(data, -1, 0).transpose(0, *range(dim, 0, -1)))  # (c, x, y[, z])
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine_lps = np.eye(4)
    affine_lps[:dim, :dim] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine_lps[:dim, 3] = image.GetOrigin()
    meta = {"format": "sitk", "pixel_type": image.GetPixelIDTypeAsString()}
    return Volume(array=array, affine=LPS_TO_RAS @ affine_lps, source=str(path), meta=meta)
