"""Evaluation on the shared real files: the spleen crop against MONAI, and a DICOM-SEG against its NRRD."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from medseg.io import Volume, read_volume, write_nifti
from medseg.metrics import evaluate


def test_spleen_eroded_and_shifted_matches_monai(shared_data, tmp_path):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    ref_path = shared_data / "3d" / "spleen_crop" / "label.nii.gz"
    ref = read_volume(ref_path, as_label=True)
    mask = ref.array[0] > 0
    moved = np.roll(ndimage.binary_erosion(mask), (2, -1, 0), axis=(0, 1, 2))
    pred_path = write_nifti(ref.with_array(moved.astype(np.uint8)[None]), tmp_path / "label.nii.gz")
    report = evaluate(pred_path, ref_path, labels={"spleen": 1}, tolerances_mm=(1.0, 2.0))
    (row,) = report.rows
    assert row["status"] == "ok" and 0.5 < row["dice"] < 1.0

    p, r = torch.as_tensor(moved)[None, None].float(), torch.as_tensor(mask)[None, None].float()
    spacing = list(ref.spacing)  # anisotropic: 0.79 × 0.79 × 5 mm
    kw = {"include_background": True, "spacing": spacing}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "hd": compute_hausdorff_distance(p, r, **kw).item(),
            "hd95": compute_hausdorff_distance(p, r, percentile=95, **kw).item(),
            "assd": compute_average_surface_distance(p, r, symmetric=True, **kw).item(),
            "nsd_1mm": compute_surface_dice(p, r, [1.0], **kw).item(),
            "nsd_2mm": compute_surface_dice(p, r, [2.0], **kw).item(),
        }
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-5), key


def test_dicom_seg_against_nrrd_is_perfect(shared_data):
    folder = shared_data / "dicom" / "ct_3slice_seg"
    report = evaluate(folder / "liver_seg.dcm", folder / "liver_seg.nrrd")
    (row,) = report.rows
    assert row["case"] == "liver_seg" and row["status"] == "ok" and row["tp"] > 1000
    assert (row["dice"], row["hd"], row["nsd_1mm"]) == (1.0, 0.0, 1.0)


def test_volume_roundtrip_identity_prediction(shared_data, tmp_path):
    """A prediction that copies the reference scores Dice 1 after a write/read round trip (hippocampus, Decathlon dataset.json)."""
    labels = sorted((shared_data / "3d" / "hippocampus" / "labelsTr").glob("*.nii.gz"))[:2]
    for path in labels:
        ref = read_volume(path, as_label=True)
        write_nifti(Volume(ref.array.copy(), ref.affine), tmp_path / path.name)
    report = evaluate(tmp_path, labels[0].parent, labels=shared_data / "3d" / "hippocampus" / "dataset.json")
    assert report.labels == {"Anterior": 1, "Posterior": 2}
    assert len(report.rows) == 4 and {row["dice"] for row in report.rows} == {1.0}
    assert len(report.missing) > 100 and report.extra == []
