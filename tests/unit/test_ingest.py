"""medseg.ingest: layouts, pairing, planning rules, splits, and the dataset folder it writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medseg.errors import InputError, LabelError, OutputExistsError, UsageError
from medseg.ingest import (
    auto_target_spacing, find_cases, ingest, labels_from_json, make_splits, match_by_stem, parse_target_spacing,
)
from medseg.io import write_nifti
from medseg.phantoms import CT_LABELS, ct_phantom, write_ct_dataset

SMALL = (32, 32, 16)


@pytest.fixture
def phantom_source(tmp_path):
    return write_ct_dataset(tmp_path / "raw", n_cases=4, shape=SMALL)


# --- the dataset folder ---------------------------------------------------------------------------------
def test_ingest_writes_the_dataset_contract(phantom_source, tmp_path):
    out = ingest(phantom_source, "phantom", data_root=tmp_path / "data", folds=2)
    assert out == tmp_path / "data" / "phantom"
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "fingerprint.json", "plan.json", "preprocessed", "splits.json"]
    dataset = json.loads((out / "dataset.json").read_text())
    for key in ("name", "channel_names", "labels", "numTraining", "file_ending", "training", "modality", "medseg_version"):
        assert key in dataset
    assert dataset["labels"] == CT_LABELS and dataset["channel_names"] == {"0": "CT"} and dataset["modality"] == "CT"
    assert dataset["numTraining"] == 4 and dataset["skipped"] == []

    plan = json.loads((out / "plan.json").read_text())
    assert plan["dims"] == 3 and plan["num_channels"] == 1 and plan["num_classes"] == 4 and plan["canonical"] == "RAS"
    assert plan["target_spacing"] == [1.5, 1.5, 3.0] and plan["median_shape"] == list(SMALL)
    norm = plan["normalization"][0]
    assert norm["scheme"] == "ct" and norm["clip"][0] < norm["mean"] < norm["clip"][1]

    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["num_cases"] == 4 and len(fingerprint["spacings"]) == 4 and len(fingerprint["shapes"]) == 4
    assert set(fingerprint["intensity"]["0"]) == {"mean", "std", "min", "max", "median", "p00_5", "p99_5"}
    assert 40 < fingerprint["intensity"]["0"]["median"] < 200  # organ HU, not air: foreground voxels only

    splits = json.loads((out / "splits.json").read_text())
    assert len(splits) == 2
    assert sorted(c for s in splits for c in s["val"]) == sorted(e["case_id"] for e in dataset["training"])

    for entry in dataset["training"]:
        image = np.load(out / entry["image"][0], mmap_mode="r")
        label = np.load(out / entry["label"], mmap_mode="r")
        assert isinstance(image, np.memmap) and image.dtype == np.float32 and image.shape == (1, *SMALL)
        assert label.dtype == np.uint8 and label.shape == (1, *SMALL)
        props = json.loads((out / "preprocessed" / f"{entry['case_id']}.json").read_text())
        assert props["case_id"] == entry["case_id"]
        assert set(props["class_locations"]) == {"1", "2", "3"}
        for c, points in props["class_locations"].items():
            assert points and all(label[(0, *p)] == int(c) for p in points[:50])


def test_rerun_reuses_and_changed_options_need_overwrite(phantom_source, tmp_path):
    data = tmp_path / "data"
    out = ingest(phantom_source, "p", data_root=data)
    stamp = (out / "plan.json").stat().st_mtime_ns
    assert ingest(phantom_source, "p", data_root=data) == out
    assert (out / "plan.json").stat().st_mtime_ns == stamp  # nothing rebuilt
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ingest(phantom_source, "p", data_root=data, target_spacing="2,2,3")
    ingest(phantom_source, "p", data_root=data, target_spacing="2,2,3", overwrite=True)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["target_spacing"] == [2.0, 2.0, 3.0] and plan["median_shape"] == [24, 24, 16]
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_parallel_workers_give_identical_output(phantom_source, tmp_path):
    one = ingest(phantom_source, "one", data_root=tmp_path / "data", workers=1)
    two = ingest(phantom_source, "two", data_root=tmp_path / "data", workers=2)
    assert (one / "plan.json").read_text() == (two / "plan.json").read_text()
    for f in sorted((one / "preprocessed").iterdir()):
        assert f.read_bytes() == (two / "preprocessed" / f.name).read_bytes(), f.name


def test_skip_bad_leaves_out_failing_cases(phantom_source, tmp_path):
    bad = phantom_source / "labelsTr" / "phantom_002.nii.gz"
    ct, seg = ct_phantom(seed=2, shape=SMALL)
    write_nifti(seg.with_array(seg.array.astype(np.float32) + 0.5), bad)
    with pytest.raises(LabelError, match="not integers"):
        ingest(phantom_source, "x", data_root=tmp_path / "data")
    assert not (tmp_path / "data" / "x").exists()
    out = ingest(phantom_source, "x", data_root=tmp_path / "data", skip_bad=True)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 3
    assert dataset["skipped"] == [{"case_id": "phantom_002", "reason": "label values are not integers (e.g. 0.5)"}]
    assert not (out / "preprocessed" / "phantom_002_image.npy").exists()


def test_inferred_labels_and_max_cases(phantom_source, tmp_path):
    (phantom_source / "dataset.json").unlink()
    out = ingest(phantom_source, "p", data_root=tmp_path / "data", max_cases=2, label_names={"0": "bg", "1": "liver",
                                                                                           "2": "spleen", "3": "kidney"})
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"bg": 0, "liver": 1, "spleen": 2, "kidney": 3}
    assert [e["case_id"] for e in dataset["training"]] == ["phantom_000", "phantom_001"]
    out = ingest(phantom_source, "q", data_root=tmp_path / "data", max_cases=1)
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "label_1": 1, "label_2": 2, "label_3": 3}
    assert json.loads((out / "splits.json").read_text()) == [{"train": ["phantom_000"], "val": ["phantom_000"]}]


def test_undeclared_label_value_names_the_file(phantom_source, tmp_path):
    with pytest.raises(LabelError, match="phantom_000.nii.gz: label value.*3 not declared"):
        ingest(phantom_source, "p", data_root=tmp_path / "data", label_names={"background": 0, "liver": 1, "spleen": 2})


# --- layouts --------------------------------------------------------------------------------------------
def test_nnunet_v2_channels_and_decathlon_4d(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "imagesTr").mkdir(parents=True)
    (v2 / "labelsTr").mkdir()
    for i in range(2):
        ct, seg = ct_phantom(seed=i, shape=(16, 16, 8))
        write_nifti(ct, v2 / "imagesTr" / f"case_{i}_0000.nii.gz")
        write_nifti(ct.with_array(ct.array // 2), v2 / "imagesTr" / f"case_{i}_0001.nii.gz")
        write_nifti(seg, v2 / "labelsTr" / f"case_{i}.nii.gz")
    (v2 / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": CT_LABELS,
                                                 "file_ending": ".nii.gz"}))
    info = find_cases(v2)
    assert info.layout == "decathlon" and info.channel_names == ["T1", "T2"]
    assert [(c.case_id, len(c.images)) for c in info.cases] == [("case_0", 2), ("case_1", 2)]
    out = ingest(v2, "v2", data_root=tmp_path / "data")
    plan = json.loads((out / "plan.json").read_text())
    assert plan["num_channels"] == 2 and plan["modality"] == "MR" and [n["scheme"] for n in plan["normalization"]] == ["zscore"] * 2

    old = tmp_path / "msd"
    (old / "imagesTr").mkdir(parents=True)
    (old / "labelsTr").mkdir()
    ct, seg = ct_phantom(seed=0, shape=(16, 16, 8))
    write_nifti(ct.with_array(np.concatenate([ct.array, ct.array // 2])), old / "imagesTr" / "brain_1.nii.gz")  # 4D
    write_nifti(seg, old / "labelsTr" / "brain_1.nii.gz")
    (old / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "a", "2": "b", "3": "c"},
        "training": [{"image": "./imagesTr/brain_1.nii.gz", "label": "./labelsTr/brain_1.nii.gz"}]}))
    out = ingest(old, "msd", data_root=tmp_path / "data")
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert np.load(out / "preprocessed" / "brain_1_image.npy").shape[0] == 2


def test_case_folders_and_single_case_folder(tmp_path):
    root = tmp_path / "cases"
    for i in range(2):
        folder = root / f"pat{i}"
        folder.mkdir(parents=True)
        ct, seg = ct_phantom(seed=i, shape=(16, 16, 8))
        write_nifti(ct, folder / "Flair_scan.nii.gz")
        write_nifti(ct, folder / "T1c_scan.nii.gz")
        write_nifti(seg.with_array(seg.array.astype(np.float32)), folder / "Truth.nii.gz")  # float-stored labels
        (folder / "LICENSE.txt").write_text("x")
    info = find_cases(root, channels=["Flair", "T1c_scan"], label_file="Truth")
    assert info.layout == "case_folders" and [c.case_id for c in info.cases] == ["pat0", "pat1"]
    assert [p.name for p in info.cases[0].images] == ["Flair_scan.nii.gz", "T1c_scan.nii.gz"]
    single = find_cases(root / "pat1", channels=["Flair", "T1c"], label_file="Truth")
    assert [c.case_id for c in single.cases] == ["pat1"]
    with pytest.raises(InputError, match="'scan' matches several entries"):
        find_cases(root / "pat1", channels=["scan"], label_file="Truth")
    out = ingest(root, "c", data_root=tmp_path / "data", channels=["Flair", "T1c"], label_file="Truth")
    assert json.loads((out / "plan.json").read_text())["channel_names"] == ["Flair", "T1c"]


def test_paired_2d_folders_with_differing_stems(tmp_path):
    from PIL import Image

    from medseg.phantoms import image2d_phantom

    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "1st_manual").mkdir()
    for i in (21, 22, 23):
        image, label = image2d_phantom(seed=i, size=(24, 20))
        Image.fromarray(np.moveaxis(image.array, 0, -1).swapaxes(0, 1)).save(tmp_path / "src" / "images" / f"{i}_training.tif")
        Image.fromarray((label.array[0].T * 255).astype(np.uint8)).save(tmp_path / "src" / "1st_manual" / f"{i}_manual1.gif")
    out = ingest(tmp_path / "src", "drive", data_root=tmp_path / "data", images="images", labels="1st_manual")
    plan = json.loads((out / "plan.json").read_text())
    assert plan["dims"] == 2 and plan["modality"] == "2D" and plan["target_spacing"] == [1.0, 1.0]
    assert [n["scheme"] for n in plan["normalization"]] == ["rgb"] * 3
    label = np.load(out / "preprocessed" / "22_training_label.npy")
    _, expected = image2d_phantom(seed=22, size=(24, 20))
    np.testing.assert_array_equal(label, expected.array)


def test_match_by_stem():
    assert match_by_stem(["a", "b"], ["b", "a"]) == {"a": "a", "b": "b"}
    drive = match_by_stem(["21_training", "22_training"], ["22_manual1", "21_manual1"])
    assert drive == {"21_training": "21_manual1", "22_training": "22_manual1"}
    assert match_by_stem(["case_1_t1"], ["case_2_seg", "case_3_seg"]) == {}  # only "case" shared: ambiguous
    assert match_by_stem(["x_1"], ["y_1"]) == {}


def test_missing_label_and_unknown_layout(tmp_path):
    src = write_ct_dataset(tmp_path / "raw", n_cases=2, shape=(16, 16, 8))
    (src / "dataset.json").unlink()
    (src / "labelsTr" / "phantom_001.nii.gz").unlink()
    with pytest.raises(InputError, match="phantom_001_0000.nii.gz: no matching label"):
        ingest(src, "p", data_root=tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="cannot tell the layout"):
        find_cases(tmp_path / "empty")


def test_two_label_folders_are_not_guessed(tmp_path):
    # DRIVE's layout: the field-of-view masks (mask/) beside the vessel labels (1st_manual/)
    for name in ("images", "mask", "1st_manual"):
        (tmp_path / "src" / name).mkdir(parents=True)
    with pytest.raises(UsageError, match=r"several label folders \(mask, 1st_manual\)"):
        find_cases(tmp_path / "src")


# --- labels, spacing, splits ----------------------------------------------------------------------------
def test_labels_from_json_accepts_both_forms():
    assert labels_from_json({"0": "background", "1": "Anterior"}) == {"background": 0, "Anterior": 1}
    assert labels_from_json({"liver": 1, "background": 0}) == {"background": 0, "liver": 1}
    assert labels_from_json({"tumour": 1}) == {"background": 0, "tumour": 1}
    with pytest.raises(InputError, match="region-based"):
        labels_from_json({"background": 0, "whole": [1, 2]})
    with pytest.raises(InputError, match="share one value"):
        labels_from_json({"a": 1, "b": 1})


def test_auto_target_spacing_rules():
    assert auto_target_spacing([[1, 1, 1], [1, 1, 2], [1, 1, 3]]) == [1.0, 1.0, 2.0]
    thick = [[0.7, 0.7, 5.0]] * 5 + [[0.8, 0.8, 1.5], [0.8, 0.8, 1.0]]
    target = auto_target_spacing(thick)
    assert target[:2] == [0.7, 0.7] and target[2] == pytest.approx(np.percentile([5.0] * 5 + [1.5, 1.0], 10))
    assert auto_target_spacing([[1.0, 1.0, 5.0]] * 3 + [[1.2, 1.2, 0.5]]) == pytest.approx([1.0, 1.0, 1.85])
    # never finer than the other axes
    assert auto_target_spacing([[2.0, 2.0, 9.0]] * 9 + [[2.0, 2.0, 0.5]])[2] >= 2.0
    assert parse_target_spacing("auto", 3) is None and parse_target_spacing("1,1,2.5", 3) == [1.0, 1.0, 2.5]
    assert parse_target_spacing("0.5", 2) == [0.5, 0.5]
    with pytest.raises(UsageError):
        parse_target_spacing("1,1", 3)
    with pytest.raises(UsageError):
        parse_target_spacing("a,b,c", 3)


def test_make_splits():
    ids = [f"c{i}" for i in range(11)]
    splits = make_splits(ids, 5, seed=0)
    assert len(splits) == 5 and make_splits(ids, 5, seed=0) == splits and make_splits(ids, 5, seed=1) != splits
    assert sorted(c for s in splits for c in s["val"]) == sorted(ids)
    for s in splits:
        assert not set(s["train"]) & set(s["val"]) and len(s["train"]) + len(s["val"]) == 11
        assert len(s["val"]) in (2, 3)
    assert len(make_splits(ids[:3], 5)) == 3  # fewer cases than folds: leave one out
    assert make_splits(["only"], 5) == [{"train": ["only"], "val": ["only"]}]
    with pytest.raises(UsageError):
        make_splits(ids, 0)


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    src = write_ct_dataset(tmp_path / "raw", n_cases=2, shape=(16, 16, 8))
    (src / "imagesTr" / "._phantom_000_0000.nii.gz").write_bytes(b"mac resource fork")
    (src / "imagesTr" / "notes.txt").write_text("x")
    os.remove(src / "dataset.json")
    assert [c.case_id for c in find_cases(src).cases] == ["phantom_000", "phantom_001"]


def test_check_image_refuses_empty_constant_and_nan():
    from medseg.ingest.checks import check_image
    from medseg.io import Volume

    with pytest.raises(InputError, match="x.nii: image is empty"):
        check_image(Volume(np.zeros((1, 0, 4, 4), np.float32), np.eye(4)), "x.nii")
    with pytest.raises(InputError, match="channel 1 of the image is constant"):
        check_image(Volume(np.stack([np.arange(8.0).reshape(2, 2, 2), np.ones((2, 2, 2))]), np.eye(4)), "x.nii")
    with pytest.raises(InputError, match="1 NaN or infinite"):
        check_image(Volume(np.array([[[[0.0, np.inf]]]]), np.eye(4)), "x.nii")
