"""Writing a :class:`~medseg.inference.predictor.Prediction` to files (each one atomically).

Label maps are written with the scan's exact affine (NIfTI), as a 2D image for 2D inputs, or as
DICOM-SEG referencing the source series; probabilities as NIfTI with K channels (a 2D image's get a
singleton third axis so the channels stay on the 4th) and uncertainty as NIfTI, both float32 on disk:
NIfTI-1 has no float16 data type (nibabel refuses it), so the in-memory float16 is widened.
"""

from __future__ import annotations

from pathlib import Path

from medseg.inference.inputs import Case
from medseg.inference.predictor import Prediction
from medseg.io.volume import Volume


def _as_3d(volume: Volume) -> Volume:
    """A 2D volume ``(C, W, H)`` as ``(C, W, H, 1)`` so that NIfTI keeps channels on the 4th axis."""
    if volume.ndim == 3:
        return volume
    return Volume(array=volume.array[..., None], affine=volume.affine, source=volume.source, meta=volume.meta)


def write_prediction(prediction: Prediction, paths: dict[str, Path], case: Case, label_names: dict[str, int],
                     overwrite: bool = False, series_uid: str | None = None) -> list[Path]:
    """Write the parts of ``prediction`` named in ``paths`` (from ``inputs.output_paths``); returns them."""
    from medseg.io import write_volume

    written = []
    labels_path = Path(paths["labels"])
    if labels_path.suffix.lower() == ".dcm":
        from medseg.io.dicom import write_dicom_seg

        write_dicom_seg(prediction.labels, case.source, labels_path, dict(label_names), series_uid=series_uid,
                        overwrite=overwrite)
    else:
        write_volume(prediction.labels, labels_path, overwrite=overwrite)
    written.append(labels_path)
    for kind in ("probabilities", "uncertainty"):
        volume = getattr(prediction, kind)
        if kind in paths and volume is not None:
            write_volume(_as_3d(volume), paths[kind], dtype="float32", overwrite=overwrite)
            written.append(Path(paths[kind]))
    return written
