"""Ingest every shared real dataset (small subsets; nothing is copied: ``max_cases`` or symlinks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.ingest import find_cases, ingest


def load(out: Path, case_id: str | None = None):
    """(image, label, properties, plan) of one ingested case (the first when ``case_id`` is None)."""
    dataset = json.loads((out / "dataset.json").read_text())
    case_id = case_id or dataset["training"][0]["case_id"]
    pre = out / "preprocessed"
    return (np.load(pre / f"{case_id}_image.npy", mmap_mode="r"), np.load(pre / f"{case_id}_label.npy"),
            json.loads((pre / f"{case_id}.json").read_text()), json.loads((out / "plan.json").read_text()))


def within_label_spread(image: np.ndarray, label: np.ndarray) -> float:
    """Voxel-weighted std of the intensity inside each label: lowest when the label lines up."""
    total = sum(image[label == c].std() * np.sum(label == c) for c in np.unique(label) if c)
    return float(total / np.sum(label > 0))


def test_kvasir_subset(shared_data, tmp_path):
    out = ingest(shared_data / "2d" / "kvasir_seg", "kvasir", data_root=tmp_path, max_cases=20, workers=2)
    image, label, props, plan = load(out)
    assert plan["dims"] == 2 and plan["modality"] == "2D" and plan["num_channels"] == 3
    assert [n["scheme"] for n in plan["normalization"]] == ["rgb"] * 3
    assert image.shape == (3, 256, 256) and 0.0 <= image.min() and image.max() <= 1.0
    assert set(np.unique(label)) == {0, 1} and 0.01 < label.mean() < 0.9
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 20


def test_drive_differing_stems(shared_data, tmp_path):
    root = shared_data / "2d" / "drive" / "training"
    info = find_cases(root, images="images", labels="1st_manual")
    assert len(info.cases) == 20 and not info.problems
    assert all(c.label.name.split("_")[0] == c.case_id.split("_")[0] for c in info.cases)
    out = ingest(root, "drive", data_root=tmp_path, images="images", labels="1st_manual", max_cases=3)
    image, label, _, plan = load(out, "21_training")
    assert image.shape == (3, 565, 584) and label.shape == (1, 565, 584)
    assert set(np.unique(label)) == {0, 1} and 0.03 < label.mean() < 0.3  # thin vessels
    from medseg.io import read_volume

    fov = read_volume(root / "mask" / "21_training_mask.gif", as_label=True).array[0] > 0
    green, vessels = np.asarray(image[1]), label[0] == 1
    # vessels are darker than the rest of the field of view in the green channel; a mirrored mask is not
    assert green[vessels & fov].mean() < green[~vessels & fov].mean() - 0.02
    assert green[vessels & fov].mean() < green[vessels[::-1] & fov].mean() - 0.01


def test_brats_two_channels_float_labels(shared_data, tmp_path):
    names = {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3, "enhancing": 4}
    out = ingest(shared_data / "3d" / "brats2013_subset", "brats", data_root=tmp_path, max_cases=1,
                 channels=["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"], label_file="OTMultiClass", label_names=names)
    image, label, props, plan = load(out)
    assert plan["num_channels"] == 2 and plan["modality"] == "MR" and plan["labels"] == names
    # already z-scored: the background is a nonzero constant, so there is no zero border to crop (as nnU-Net)
    assert not plan["crop_nonzero"] and props["shape_after_crop"] == props["shape_after_reorient"] == [240, 240, 155]
    assert props["orientation_transform"] == [[0, -1], [1, -1], [2, 1]]  # stored LPS
    assert image.shape[0] == 2 and label.dtype == np.uint8 and set(np.unique(label)) <= set(range(5))
    flair = image[0]
    assert flair[label[0] == 2].mean() > flair[label[0] == 0].mean() + 0.5  # edema is bright on FLAIR


@pytest.mark.parametrize("scan,seg,modality", [("example_ct_sm", "example_seg", "CT"), ("example_mr_sm", "example_seg_mr", "MR")])
def test_totalsegmentator_examples(shared_data, tmp_path, scan, seg, modality):
    out = ingest(shared_data / "3d" / "totalseg_examples", "ts", data_root=tmp_path, channels=[scan], label_file=seg)
    image, label, props, plan = load(out)
    assert plan["modality"] == modality and plan["target_spacing"] == pytest.approx([3.0, 3.0, 3.0], abs=1e-3)
    assert len(plan["labels"]) > 20 and plan["num_classes"] == max(plan["labels"].values()) + 1
    assert within_label_spread(np.asarray(image[0]), label[0]) < within_label_spread(np.asarray(image[0]), label[0, ::-1])


def test_spleen_crop_ct(shared_data, tmp_path):
    out = ingest(shared_data / "3d" / "spleen_crop", "spleen", data_root=tmp_path, channels=["image"], label_file="label",
                 label_names={"background": 0, "spleen": 1})
    image, label, props, plan = load(out)
    assert plan["modality"] == "CT" and plan["normalization"][0]["scheme"] == "ct"
    assert plan["target_spacing"] == pytest.approx([0.7949, 0.7949, 5.0], abs=1e-3)
    spleen = np.asarray(image[0])[label[0] == 1]
    assert abs(spleen.mean()) < 1.0 and spleen.std() < 1.0  # z-scored with the foreground's own stats


@pytest.mark.slow
def test_ct_20slice_series_with_flipped_nifti_label(shared_data, tmp_path):
    """seg.nii.gz is stored LAS with a flipped row axis: the ingested label must line up with the series."""
    import torch

    from medseg.io import read_volume
    from medseg.io.grid import reorient_to_match
    from medseg.preprocessing import restore_probabilities

    root = shared_data / "dicom" / "ct_20slice"
    out = ingest(root, "ct20", data_root=tmp_path, channels=["series"], label_file="seg")
    image, label, props, plan = load(out)
    assert plan["modality"] == "CT"
    x = np.asarray(image[0])
    assert within_label_spread(x, label[0]) < 0.6 * within_label_spread(x, label[0, :, ::-1])
    assert x[label[0] > 0].mean() > x[label[0] == 0].mean() + 1.0  # organs vs air and fat
    # Back on the series grid: the foreground equals seg.nii.gz put on that grid by an exact flip.
    fg = torch.from_numpy(label[0] > 0)
    restored = restore_probabilities(torch.stack([~fg, fg]).float(), props).argmax(0).numpy()
    series = read_volume(root / "series")
    reference = reorient_to_match(read_volume(root / "seg.nii.gz", as_label=True), series, atol=1e-2)
    assert reference is not None
    np.testing.assert_array_equal(restored, reference.array[0] > 0)


def test_dicom_seg_liver_matches_the_nrrd_mask(shared_data, tmp_path):
    root = shared_data / "dicom" / "ct_3slice_seg"
    seg = ingest(root, "seg", data_root=tmp_path, channels=["series"], label_file="liver_seg.dcm")
    nrrd = ingest(root, "nrrd", data_root=tmp_path, channels=["series"], label_file="liver_seg.nrrd")
    _, from_seg, _, plan = load(seg)
    _, from_nrrd, _, _ = load(nrrd)
    assert plan["modality"] == "CT" and from_seg.sum() > 1000
    np.testing.assert_array_equal(from_seg, from_nrrd)


def test_pgbm_study_with_mask_series(shared_data, tmp_path):
    root = shared_data / "dicom" / "mr_brain_tumor_pgbm001"
    out = ingest(root, "pgbm", data_root=tmp_path, channels=["T1post", "FLAIRreg"], label_file="MaskTumor",
                 label_names={"background": 0, "tumour": 1})
    image, label, props, plan = load(out)
    assert plan["modality"] == "MR" and plan["num_channels"] == 2 and image.shape[0] == 2
    assert set(np.unique(label)) == {0, 1}
    written = "".join(p.read_text() for p in out.rglob("*.json"))
    assert "PGBM-001" not in written  # the DICOM PatientName / PatientID never reach the dataset
    flair = np.asarray(image[1])
    inside = flair[label[0] == 1].mean()
    assert inside > flair[label[0] == 0].mean() + 0.5  # the tumour region is bright on FLAIR
    assert inside > flair[label[0, ::-1] == 1].mean()  # and a mirrored mask does worse


def test_hippocampus_subset(shared_data, tmp_path):
    out = ingest(shared_data / "3d" / "hippocampus", "hippo", data_root=tmp_path, max_cases=5, folds=5)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert dataset["channel_names"] == {"0": "MRI"} and dataset["modality"] == "MR"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["target_spacing"] == [1.0, 1.0, 1.0] and plan["normalization"] == [{"scheme": "zscore"}]
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits) == 5 and all(len(s["val"]) == 1 for s in splits)
    for entry in dataset["training"]:
        _, label, props, _ = load(out, entry["case_id"])
        assert set(np.unique(label)) == {0, 1, 2} and len(props["class_locations"]["1"]) > 0


@pytest.mark.slow
def test_hippocampus_full_with_two_workers(shared_data, tmp_path):
    out = ingest(shared_data / "3d" / "hippocampus", "hippo", data_root=tmp_path, workers=2)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 195 and dataset["skipped"] == []
    assert len(list((out / "preprocessed").glob("*_image.npy"))) == 195
