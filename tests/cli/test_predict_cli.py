"""`medseg predict` through CliRunner: outputs in the input geometry, the latest run, shards, DICOM
series and DICOM-SEG, and one test per bad input (exit 1, one line, nothing written)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from dicom_synth import PATIENT, write_series  # noqa: E402
from inference_helpers import ct_plan, save_tiny_checkpoint  # noqa: E402

from medseg.cli import app  # noqa: E402
from medseg.io import read_volume, write_volume  # noqa: E402
from medseg.phantoms import ct_phantom  # noqa: E402

runner = CliRunner()
SHAPE = (24, 20, 10)


def invoke(*args):
    return runner.invoke(app, ["predict", *[str(a) for a in args]])


def assert_one_line_error(result, *mentions, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in mentions:
        assert text in lines[0], lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with models/run1 (a tiny random 3D network) and two phantom scans in inputs/."""
    monkeypatch.chdir(tmp_path)
    save_tiny_checkpoint(tmp_path / "models" / "run1" / "checkpoint_best.pt", ct_plan(spacing=(3.0, 3.0, 3.0)))
    for i, orientation in enumerate(("LPS", "oblique")):
        ct, _ = ct_phantom(seed=i, shape=SHAPE, orientation=orientation)
        write_volume(ct, tmp_path / "inputs" / f"case{i}_0000.nii.gz")
    return tmp_path


def test_predicts_with_the_latest_run_in_the_input_geometry(work):
    result = invoke("inputs", "--no-tta", "--save-probabilities", "--save-uncertainty")
    assert result.exit_code == 0, result.output
    assert "models/run1/checkpoint_best.pt" in result.stdout and "case0" in result.stdout and "case1" in result.stdout
    for i in range(2):
        scan = read_volume(work / "inputs" / f"case{i}_0000.nii.gz")
        labels = read_volume(work / "predictions" / f"case{i}.nii.gz")
        assert labels.same_grid(scan, atol=1e-5) and labels.num_channels == 1
        probs = read_volume(work / "predictions" / f"case{i}_probabilities.nii.gz")
        assert probs.num_channels == 4 and probs.same_grid(scan, atol=1e-5)
        assert probs.meta["dtype_on_disk"] == "float32"  # NIfTI-1 has no float16
        assert read_volume(work / "predictions" / f"case{i}_uncertainty.nii.gz").same_grid(scan, atol=1e-5)
    assert not [p for p in (work / "predictions").iterdir() if p.name.startswith(".")]


def test_no_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ct, _ = ct_phantom(shape=SHAPE)
    write_volume(ct, tmp_path / "scan.nii.gz")
    assert_one_line_error(invoke("scan.nii.gz"), "models", "medseg train", "--model")
    assert not (tmp_path / "predictions").exists()


def test_existing_output_is_refused_before_anything_is_predicted(work):
    (work / "out").mkdir()
    (work / "out" / "case1.nii.gz").write_bytes(b"old")
    assert_one_line_error(invoke("inputs", "-o", "out", "--no-tta"), "out/case1.nii.gz", "--overwrite")
    assert sorted(p.name for p in (work / "out").iterdir()) == ["case1.nii.gz"]  # case0 was not predicted
    assert (work / "out" / "case1.nii.gz").read_bytes() == b"old"
    result = invoke("inputs", "-o", "out", "--no-tta", "--overwrite", "--model", "models/run1")
    assert result.exit_code == 0, result.output
    assert read_volume(work / "out" / "case1.nii.gz").num_channels == 1


def test_no_amp_predicts_in_fp32_and_says_so(work):
    """--no-amp: fp32 throughout, named in the settings line; the default names the precision it used."""
    from medseg.devices import bf16_supported

    fp32 = invoke("inputs", "--no-tta", "--no-amp", "--device", "cpu", "-o", "fp32")
    assert fp32.exit_code == 0, fp32.output
    assert "cpu in fp32, no TTA" in " ".join(fp32.stdout.split())  # rich may wrap the line
    default = invoke("inputs", "--no-tta", "--device", "cpu", "-o", "default")
    precision = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    assert f"cpu in {precision}, no TTA" in " ".join(default.stdout.split())
    for i in range(2):
        a = read_volume(work / "fp32" / f"case{i}.nii.gz").array
        b = read_volume(work / "default" / f"case{i}.nii.gz").array
        assert (a == b).mean() > 0.99  # bf16 may move a few boundary voxels, no more


def test_shards_split_the_cases(work):
    result = invoke("inputs", "--no-tta", "--shard", "1/2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (work / "predictions").iterdir()) == ["case1.nii.gz"]
    assert "shard 1/2: 1 of 2" in result.stdout
    assert_one_line_error(invoke("inputs", "--shard", "2/2"), "--shard", code=2)


def test_bad_inputs_one_line_each(work):
    (work / "notes.txt").write_text("hello")
    assert_one_line_error(invoke("notes.txt"), "notes.txt", "not an image")
    assert_one_line_error(invoke("missing.nii.gz"), "missing.nii.gz", "does not exist")
    ct, _ = ct_phantom(shape=SHAPE)
    two = ct.with_array(np.concatenate([ct.array, ct.array]))
    write_volume(two, work / "two.nii.gz")
    assert_one_line_error(invoke("two.nii.gz"), "two.nii.gz", "2 channel(s) but the model takes 1")
    holes = ct.array.astype(np.float32)
    holes[0, :3, :3, :3] = np.nan  # e.g. outside the field of view after a registration
    write_volume(ct.with_array(holes), work / "holes.nii.gz")
    assert_one_line_error(invoke("holes.nii.gz"), "holes.nii.gz", "27 NaN or infinite values")
    assert_one_line_error(invoke("inputs", "--format", "dicom-seg"), "DICOM-SEG output needs a DICOM series")
    assert_one_line_error(invoke("inputs", "--flips", "diagonal"), "diagonal", code=2)
    assert not (work / "predictions").exists()


def test_incompatible_checkpoint(work):
    path = work / "models" / "run1" / "checkpoint_best.pt"
    torch.save({**torch.load(path, weights_only=True), "format_version": 7}, work / "old.pt")
    assert_one_line_error(invoke("inputs", "--model", "old.pt"), "old.pt", "checkpoint format 7 is not supported")


def test_dicom_series_several_series_and_dicom_seg(work):
    ct, _ = ct_phantom(seed=3, shape=(20, 16, 6), spacing=(1.0, 1.0, 3.0))
    pixels = np.transpose(ct.array[0], (2, 1, 0)).astype(np.int16)  # (slices, rows, cols)
    positions = np.array([[0.0, 0.0, 3.0 * s] for s in range(pixels.shape[0])])
    axial = np.array([1.0, 0, 0, 0, 1.0, 0])
    study = work / "study"
    write_series(study / "a", pixels, positions, axial, spacing=(1.0, 1.0), slope=1.0, intercept=0.0,
                 description="first", series_uid="1.2.3.4.1")
    write_series(study / "b", pixels, positions, axial, spacing=(1.0, 1.0), slope=1.0, intercept=0.0,
                 description="second", series_uid="1.2.3.4.2")
    result = invoke("study", "--no-tta")
    assert_one_line_error(result, "1.2.3.4.1", "1.2.3.4.2")
    result = invoke("study", "--no-tta", "--series-uid", "1.2.3.4.2", "--format", "dicom-seg")
    assert result.exit_code == 0, result.output
    for secret in PATIENT.values():
        assert secret not in result.output
    seg_path = work / "predictions" / "study.dcm"
    import highdicom as hd
    import pydicom

    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SeriesInstanceUID != "1.2.3.4.2"
    seg = hd.seg.Segmentation.from_dataset(ds)
    assert seg.number_of_segments >= 1
    assert (work / "predictions").is_dir() and [p.name for p in (work / "predictions").iterdir()] == ["study.dcm"]
    nifti = invoke("study/b", "--no-tta")
    assert nifti.exit_code == 0, nifti.output
    scan = read_volume(work / "study" / "b")
    assert read_volume(work / "predictions" / "b.nii.gz").same_grid(scan, atol=1e-4)


def test_2d_images_and_crf(tmp_path, monkeypatch):
    from medseg.phantoms import image2d_phantom

    monkeypatch.chdir(tmp_path)
    plan = {"dims": 2, "modality": "2D", "channel_names": ["R", "G", "B"], "num_channels": 3,
            "labels": {"background": 0, "polyp": 1}, "num_classes": 2, "canonical": "RAS",
            "target_spacing": [1.0, 1.0], "normalization": [{"scheme": "rgb"}] * 3, "crop_nonzero": False,
            "median_shape": [48, 40]}
    save_tiny_checkpoint(tmp_path / "models" / "r2d" / "checkpoint_last.pt", plan, arch="unet_tiny",
                         patch_size=(32, 32))
    image, _ = image2d_phantom(seed=1, size=(48, 40))
    write_volume(image, tmp_path / "img.png")
    result = invoke("img.png", "--crf", "--crf-iterations", "2", "--flips", "inplane", "--save-probabilities")
    assert result.exit_code == 0, result.output
    labels = read_volume(tmp_path / "predictions" / "img.png", as_label=True)
    assert labels.spatial_shape == (48, 40)
    probs = read_volume(tmp_path / "predictions" / "img_probabilities.nii.gz")
    assert probs.num_channels == 2 and probs.spatial_shape == (48, 40, 1)
    assert_one_line_error(invoke("img.png", "--crf-mode", "4d", "--overwrite"), "4d", code=2)


def test_overlay_pictures_and_index(work):
    result = invoke("inputs", "--no-tta", "--overlay", "overlays")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (work / "overlays").glob("*.png")) == ["case0.png", "case1.png"]
    index = (work / "overlays" / "index.html").read_text()
    assert 'src="case0.png"' in index and 'src="case1.png"' in index
    again = invoke("inputs", "--no-tta", "--overlay", "overlays", "-o", "other")
    assert_one_line_error(again, "--overwrite")
