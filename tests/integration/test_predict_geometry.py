"""Geometry round trips of `predict`: an oracle 'network' that returns the preprocessed reference must give
the reference back on the scan's own grid (Dice 1.0 when the target spacing is the scan's, >= 0.95
otherwise), for phantoms in several orientations, nibabel's oblique 4D file, the shared 20-slice CT
series with its flipped label map, and the PGBM MR study with its MaskTumor series."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference_helpers import Oracle, ct_plan, dice  # noqa: E402

from medseg.inference.export import write_prediction  # noqa: E402
from medseg.inference.inputs import Case  # noqa: E402
from medseg.inference.predictor import Predictor  # noqa: E402
from medseg.io import read_volume, reorient_to_match  # noqa: E402
from medseg.io.volume import Volume  # noqa: E402
from medseg.phantoms import ct_phantom  # noqa: E402
from medseg.preprocessing import preprocess  # noqa: E402

NIBABEL_OBLIQUE = Path(__import__("nibabel").__file__).parent / "tests" / "data" / "example4d.nii.gz"


def _scan_spacing(volume: Volume, plan: dict) -> list[float]:
    """The scan's own spacing in canonical (RAS) axis order, as preprocessing sees it."""
    _, _, props = preprocess(volume, {**plan, "target_spacing": [1.0] * plan["dims"]})
    return props["spacing_after_reorient"]


def _round_trip(scan: Volume, reference: Volume, plan: dict, tmp_path: Path, name: str) -> Volume:
    """Predict ``scan`` with the oracle holding the preprocessed ``reference``, write it as NIfTI, read it back."""
    oracle = Oracle(int(plan["num_classes"]))
    _, label, _ = preprocess(scan, plan, label=reference)
    oracle.set_reference(label)
    predictor = Predictor.from_model(oracle, plan, patch_size=None, tta=False)
    prediction = predictor.predict(scan, case=name)
    assert prediction.labels.same_grid(scan, atol=0)
    case = Case(name, (Path(scan.source),), "volume")
    write_prediction(prediction, {"labels": tmp_path / f"{name}.nii.gz"}, case, plan["labels"])
    written = read_volume(tmp_path / f"{name}.nii.gz")
    assert written.same_grid(scan, atol=1e-5)
    return written


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAS", "oblique"])
def test_phantoms_exact_at_the_scan_spacing_and_close_at_another(orientation, tmp_path):
    ct, seg = ct_phantom(seed=7, shape=(48, 48, 20), orientation=orientation)
    plan = ct_plan()
    plan["target_spacing"] = _scan_spacing(ct, plan)
    written = _round_trip(ct, seg, plan, tmp_path, "same")
    assert np.array_equal(written.array, seg.array)
    plan["target_spacing"] = [1.2, 1.2, 2.4]
    written = _round_trip(ct, seg, plan, tmp_path, "other")
    for label in (1, 2, 3):
        assert dice(written.array, seg.array, label) >= 0.95


def test_nibabel_oblique_4d_file_as_two_channels(tmp_path):
    scan = read_volume(NIBABEL_OBLIQUE)
    assert scan.num_channels == 2 and scan.axcodes() != "RAS"
    i, j, k = np.indices(scan.spatial_shape)
    mask = np.zeros(scan.spatial_shape, np.uint8)
    mask[((i - 50) / 20.0) ** 2 + ((j - 40) / 15.0) ** 2 + ((k - 10) / 6.0) ** 2 <= 1] = 1
    mask[(i > 90) & (i < 110) & (j > 20) & (j < 70) & (k > 4) & (k < 14)] = 2
    mask *= (scan.array != 0).any(0)  # inside the nonzero box that crop_nonzero keeps
    assert (mask == 1).sum() > 500 and (mask == 2).sum() > 500
    reference = scan.with_array(mask[None])
    plan = {"dims": 3, "modality": "MR", "channel_names": ["t0", "t1"], "num_channels": 2,
            "labels": {"background": 0, "ball": 1, "box": 2}, "num_classes": 3,
            "normalization": [{"scheme": "zscore"}] * 2, "crop_nonzero": True, "target_spacing": [1.0, 1.0, 1.0]}
    plan["target_spacing"] = _scan_spacing(scan, plan)
    assert np.array_equal(_round_trip(scan, reference, plan, tmp_path, "ex4d").array, reference.array)
    plan["target_spacing"] = [1.6, 1.6, 1.8]
    written = _round_trip(scan, reference, plan, tmp_path, "ex4d_resampled")
    assert min(dice(written.array, mask[None], v) for v in (1, 2)) >= 0.95


@pytest.mark.slow
def test_shared_20_slice_ct_series_with_its_flipped_label_map(shared_data, tmp_path):
    folder = shared_data / "dicom" / "ct_20slice"
    ct = read_volume(folder / "series")
    seg_file = read_volume(folder / "seg.nii.gz")
    assert seg_file.axcodes() != ct.axcodes()  # stored LAS against the LPS series
    # Three organs, label values kept (class index = label value; 2..4 absent on purpose).
    keep = np.isin(seg_file.array, (1, 5, 6))
    seg_kept = seg_file.with_array(np.where(keep, seg_file.array, 0).astype(np.uint8))
    reference = reorient_to_match(seg_kept, ct)
    assert reference is not None
    plan = {**ct_plan(), "labels": {"background": 0, "spleen": 1, "liver": 5, "stomach": 6}, "num_classes": 7}
    plan["target_spacing"] = _scan_spacing(ct, plan)
    written = _round_trip(ct, reference, plan, tmp_path, "ct20")
    assert np.array_equal(written.array, reference.array)
    # In world space: the written NIfTI overlays the original label file exactly.
    back = reorient_to_match(written, seg_file)
    assert back is not None and np.array_equal(back.array, seg_kept.array)
    for value in (1, 5, 6):
        assert dice(back.array, seg_kept.array, value) == 1.0


@pytest.mark.slow
def test_pgbm_t1post_with_its_mask_series_and_dicom_seg(shared_data, tmp_path):
    import highdicom as hd
    import pydicom

    study = shared_data / "dicom" / "mr_brain_tumor_pgbm001"
    t1_folder = next(study.glob("*T1post*"))
    t1 = read_volume(t1_folder)
    mask = read_volume(next(study.glob("*MaskTumor*")))
    assert np.allclose(mask.affine, t1.affine, atol=1e-3)
    reference = t1.with_array(mask.array.astype(np.uint8))  # the mask series is on the T1post grid
    plan = {"dims": 3, "modality": "MR", "channel_names": ["T1post"], "num_channels": 1,
            "labels": {"background": 0, "tumour": 1}, "num_classes": 2,
            "normalization": [{"scheme": "zscore"}], "crop_nonzero": False, "target_spacing": [1.0, 1.0, 1.0]}
    plan["target_spacing"] = _scan_spacing(t1, plan)
    written = _round_trip(t1, reference, plan, tmp_path, "pgbm")
    assert dice(written.array, reference.array, 1) == 1.0
    # DICOM-SEG of the same prediction, referencing the T1post series.
    case = Case("pgbm", (t1_folder,), "dicom")
    write_prediction(type("P", (), {"labels": written, "probabilities": None, "uncertainty": None})(),
                     {"labels": tmp_path / "pgbm.dcm"}, case, plan["labels"])
    ds = pydicom.dcmread(tmp_path / "pgbm.dcm")
    assert ds.Modality == "SEG"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == t1.meta["series_uid"]  # references the T1post series
    seg = hd.seg.Segmentation.from_dataset(ds)
    assert seg.number_of_segments == 1
    back = read_volume(tmp_path / "pgbm.dcm", reference=t1)
    aligned = reorient_to_match(back, t1) if not back.same_grid(t1, atol=1e-3) else back
    assert aligned is not None and dice(aligned.array, reference.array, 1) == 1.0
