"""Reading and writing images with their geometry: NIfTI, DICOM series, DICOM-SEG, 2D images.

``read_volume(path)`` dispatches on what ``path`` is; every reader returns a :class:`Volume`.
"""

from __future__ import annotations

from pathlib import Path

from medseg.errors import InputError
from medseg.io.grid import reorient_to_match, resample_to_grid
from medseg.io.nifti import is_nifti, read_nifti, write_nifti
from medseg.io.volume import Volume

IMAGE2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")

__all__ = ["Volume", "read_volume", "write_volume", "read_nifti", "write_nifti", "is_nifti", "IMAGE2D_SUFFIXES",
           "resample_to_grid", "reorient_to_match"]


def read_volume(path: str | Path, *, as_label: bool = False, series_uid: str | None = None,
                reference: Volume | None = None) -> Volume:
    """Read a NIfTI file, a DICOM series folder, a DICOM-SEG file or a 2D image.

    ``as_label`` reads a mask (2D JPEG masks are thresholded at 127; DICOM-SEG needs ``reference``
    only to place frames when the SEG lacks full geometry).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file or folder does not exist", path)
    if path.is_dir():
        from medseg.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    if is_nifti(path):
        return read_nifti(path)
    if path.suffix.lower() in IMAGE2D_SUFFIXES:
        from medseg.io.image2d import read_image2d

        return read_image2d(path, as_label=as_label)
    if path.suffix.lower() in (".nrrd", ".nhdr", ".mha", ".mhd"):
        from medseg.io.sitk_io import read_sitk

        return read_sitk(path)
    from medseg.io.dicom import is_dicom_file, read_dicom_file

    if is_dicom_file(path):
        return read_dicom_file(path, reference=reference)
    raise InputError("not a recognised image (expected NIfTI, DICOM, NRRD/MHA or a 2D image)", path)


def write_volume(volume: Volume, path: str | Path, dtype=None, *, overwrite: bool = True) -> Path:
    """Write ``volume``; the format follows the suffix (NIfTI, or a 2D image for 2D volumes).

    Written atomically; ``overwrite=False`` raises ``OutputExistsError`` for an existing ``path``.
    """
    path = Path(path)
    if is_nifti(path):
        return write_nifti(volume, path, dtype=dtype, overwrite=overwrite)
    if path.suffix.lower() in IMAGE2D_SUFFIXES:
        from medseg.io.image2d import write_image2d

        if dtype is not None:
            volume = volume.with_array(volume.array.astype(dtype))
        return write_image2d(volume, path, overwrite=overwrite)
    raise InputError("unsupported output format (use .nii.gz, .nii or a 2D image suffix)", path)
