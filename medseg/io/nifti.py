"""NIfTI-1 / NIfTI-2 reading and writing with exact geometry (nibabel).

Affine precedence follows nibabel (and ITK for the common cases): the sform when ``sform_code > 0``,
else the qform when ``qform_code > 0``, else the scaled identity of the ANALYZE fallback.
4D images become channels; 5D with a singleton 4th axis is squeezed.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from medseg.errors import InputError, OutputExistsError
from medseg.io.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img", ".img.gz")


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | Path) -> Volume:
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError as exc:
        raise InputError(f"image data file is missing ({Path(exc.filename or '').name or 'data file'})", path) from None
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(f"unreadable or truncated NIfTI file ({type(exc).__name__})", path) from None
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", path) from None
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        array = data[None]
    elif data.ndim == 4:
        array = np.moveaxis(data, 3, 0)
    else:
        raise InputError(f"unsupported NIfTI dimensionality {data.shape}", path)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    hdr = img.header
    meta = {
        "format": "nifti",
        "dtype_on_disk": str(hdr.get_data_dtype()),
        "qform_code": int(hdr["qform_code"]) if "qform_code" in hdr else 0,
        "sform_code": int(hdr["sform_code"]) if "sform_code" in hdr else 0,
    }
    return Volume(array=array, affine=np.asarray(img.affine, dtype=np.float64), source=str(path), meta=meta)


def write_nifti(volume: Volume, path: str | Path, dtype: np.dtype | str | None = None, *,
                overwrite: bool = True) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) with its exact affine as both sform and qform.

    ``array`` ``(C, *spatial)`` is stored as ``(*spatial)`` for one channel, else ``(*spatial, C)``.
    64-bit integers are stored as int32 when the values fit (nibabel refuses int64 without a header);
    NIfTI-2 is used when an axis exceeds the NIfTI-1 limit of 32767. The file is written to a temporary
    name beside the target and renamed into place; ``overwrite=False`` refuses an existing ``path``.
    """
    import nibabel as nib

    from medseg.io.atomic import atomic_path

    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError("output exists (pass overwrite=True to replace it)", path)
    array = volume.array
    if dtype is not None:
        array = array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype in (np.int64, np.uint64) and array.size:
        if array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max:
            raise InputError("integer values outside the int32 range cannot be written to NIfTI", path)
        array = array.astype(np.int32)
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    if volume.ndim == 2 and data.ndim == 2:
        data = data[:, :, None]
    image_class = nib.Nifti2Image if max(data.shape) > 32767 else nib.Nifti1Image
    img = image_class(np.ascontiguousarray(data), volume.affine)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
