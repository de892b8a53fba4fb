"""`medseg ingest` through CliRunner: success, reuse, and one test per bad input (exit 1, one line naming
the file, nothing left under data/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.io import Volume, write_nifti
from medseg.phantoms import ct_phantom, write_ct_dataset

runner = CliRunner()
SHAPE = (16, 16, 8)


def invoke(*args):
    return runner.invoke(app, ["ingest", *[str(a) for a in args]])


def assert_one_line_error(result, data: Path, name: str, mentions: str, problem: str):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and mentions in lines[0] and problem in lines[0], lines[0]
    assert not (data / name).exists()
    assert not data.exists() or not any(p.name.startswith(f".{name}") for p in data.iterdir())  # no partial build


@pytest.fixture
def source(tmp_path):
    return write_ct_dataset(tmp_path / "raw", n_cases=2, shape=SHAPE)


def test_ingest_succeeds_and_reuses(source, tmp_path):
    data = tmp_path / "data"
    result = invoke(source, "--name", "ph", "--data-dir", data, "--folds", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(data / "ph")
    assert "ingested ph" in result.stderr  # the summary table
    assert json.loads((data / "ph" / "dataset.json").read_text())["numTraining"] == 2
    again = invoke(source, "--name", "ph", "--data-dir", data, "--folds", "2")
    assert again.exit_code == 0 and "up to date" in again.stderr
    other = invoke(source, "--name", "ph", "--data-dir", data, "--folds", "3")
    assert other.exit_code == 1 and "--overwrite" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert invoke(source, "--name", "ph", "--data-dir", data, "--folds", "3", "--overwrite").exit_code == 0
    assert len(json.loads((data / "ph" / "splits.json").read_text())) == 2  # 2 cases: leave one out


def test_usage_errors_exit_2(source, tmp_path):
    data = tmp_path / "data"
    assert invoke(source, "--name", "x", "--data-dir", data, "--modality", "PET").exit_code == 2
    assert invoke(source, "--name", "x", "--data-dir", data, "--target-spacing", "1,2").exit_code == 2
    assert invoke("--name", "x", "--data-dir", data).exit_code == 2
    assert invoke(source, "--name", "../x", "--data-dir", data).exit_code == 2
    assert invoke(source, "--name", "x", "--data-dir", data, "--images", source / "imagesTr").exit_code == 2
    assert not (data / "x").exists()


def test_skip_bad_goes_on_and_lists_the_case(source, tmp_path):
    ct, seg = ct_phantom(seed=1, shape=SHAPE)
    write_nifti(ct.with_array(np.full_like(ct.array, 7)), source / "imagesTr" / "phantom_001_0000.nii.gz")
    data = tmp_path / "data"
    result = invoke(source, "--name", "ph", "--data-dir", data, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "phantom_001" in result.stderr and "constant" in result.stderr
    dataset = json.loads((data / "ph" / "dataset.json").read_text())
    assert [e["case_id"] for e in dataset["training"]] == ["phantom_000"]
    assert dataset["skipped"][0]["case_id"] == "phantom_001"


# --- bad NIfTI inputs: each corrupts case phantom_001 of a good 2-case dataset ---------------------------
def _label_path(src: Path) -> Path:
    return src / "labelsTr" / "phantom_001.nii.gz"


def _image_path(src: Path) -> Path:
    return src / "imagesTr" / "phantom_001_0000.nii.gz"


def _phantom():
    return ct_phantom(seed=1, shape=SHAPE)


def grid_mismatch(src):
    _, seg = _phantom()
    write_nifti(Volume(seg.array[:, :, :, :7], seg.affine), _label_path(src))
    return _label_path(src), "does not match the image grid"


def shifted_grid(src):
    _, seg = _phantom()
    affine = seg.affine.copy()
    affine[:3, 3] += 5.0
    write_nifti(Volume(seg.array, affine), _label_path(src))
    return _label_path(src), "does not overlay the image"


def non_integer_label(src):
    _, seg = _phantom()
    write_nifti(seg.with_array(seg.array.astype(np.float32) * 0.5), _label_path(src))
    return _label_path(src), "not integers"


def undeclared_label(src):
    _, seg = _phantom()
    array = seg.array.copy()
    array[0, 0, 0, 0] = 9
    write_nifti(seg.with_array(array), _label_path(src))
    return _label_path(src), "label value(s) 9 not declared"


def nan_image(src):
    ct, _ = _phantom()
    array = ct.array.astype(np.float32)
    array[0, 3, 3, 3] = np.nan
    write_nifti(ct.with_array(array), _image_path(src))
    return _image_path(src), "NaN"


def constant_image(src):
    ct, _ = _phantom()
    write_nifti(ct.with_array(np.zeros_like(ct.array)), _image_path(src))
    return _image_path(src), "constant"


def empty_image(src):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((16, 16, 0), np.int16), np.eye(4)), str(_image_path(src)))
    return _image_path(src), "dimensionality"  # nibabel drops the zero-length axis


def truncated_gzip(src):
    raw = _image_path(src).read_bytes()
    _image_path(src).write_bytes(raw[: len(raw) // 2])
    return _image_path(src), "truncated"


def header_without_data(src):
    import nibabel as nib

    ct, _ = _phantom()
    _image_path(src).unlink()
    hdr = src / "imagesTr" / "phantom_001_0000.hdr"
    nib.save(nib.Nifti1Pair(ct.array[0], ct.affine), str(hdr))
    hdr.with_suffix(".img").unlink()
    return hdr, "missing"


@pytest.mark.parametrize("corrupt", [grid_mismatch, shifted_grid, non_integer_label, undeclared_label, nan_image,
                                     constant_image, empty_image, truncated_gzip, header_without_data])
def test_bad_nifti_input_exits_1_naming_the_file(corrupt, source, tmp_path):
    bad_file, problem = corrupt(source)
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    data = tmp_path / "data"
    result = invoke(source, "--name", "bad", "--data-dir", data, "--workers", "1")
    assert_one_line_error(result, data, "bad", bad_file.name, problem)
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before  # inputs untouched


# --- DICOM series folders (one per case) with NIfTI labels --------------------------------------------
def write_dicom_series(folder: Path, volume: np.ndarray, spacing=(0.8, 0.8, 2.0), series_uid: str | None = None,
                       positions: list[float] | None = None) -> None:
    """A CT series of int16 ``volume`` ``(columns, rows, slices)``, axial, one file per slice."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    positions = positions if positions is not None else [k * spacing[2] for k in range(volume.shape[2])]
    for k, z in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{series_uid[-6:]}_{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Doe^Jane", "SECRET123"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"{series_uid[-6:]}_{k:03d}.dcm", enforce_file_format=True)


@pytest.fixture
def dicom_source(tmp_path):
    """images/c1, images/c2: DICOM series; labels/c1.nii.gz, labels/c2.nii.gz on their grids."""
    from medseg.io.dicom import read_dicom_series

    root = tmp_path / "dicom_src"
    for i, case in enumerate(("c1", "c2")):
        ct, seg = ct_phantom(seed=i, shape=SHAPE, spacing=(0.8, 0.8, 2.0))
        write_dicom_series(root / "images" / case, ct.array[0])
        grid = read_dicom_series(root / "images" / case)
        write_nifti(grid.with_array(seg.array), root / "labels" / f"{case}.nii.gz")
    return root


def test_dicom_series_folders_ingest(dicom_source, tmp_path):
    data = tmp_path / "data"
    result = invoke(dicom_source, "--images", "images", "--labels", "labels", "--name", "dcm", "--data-dir", data)
    assert result.exit_code == 0, result.output
    out = data / "dcm"
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["modality"] == "CT" and [e["case_id"] for e in dataset["training"]] == ["c1", "c2"]
    everything = "".join(p.read_text() for p in out.rglob("*.json")) + result.output
    assert "Doe" not in everything and "SECRET123" not in everything  # no patient data anywhere


def no_dicom_images(root):
    folder = root / "images" / "c2"
    for f in folder.iterdir():
        f.unlink()
    (folder / "readme.txt").write_text("not dicom")
    return folder, "no DICOM images"


def mixed_series(root):
    ct, _ = ct_phantom(seed=5, shape=SHAPE, spacing=(0.8, 0.8, 2.0))
    write_dicom_series(root / "images" / "c2", ct.array[0])  # a second series in the same folder
    return root / "images" / "c2", "2 DICOM series"


def missing_slice(root):
    folder = root / "images" / "c2"
    sorted(folder.iterdir())[3].unlink()
    return folder, "uneven slice spacing"


@pytest.mark.parametrize("corrupt", [no_dicom_images, mixed_series, missing_slice])
def test_bad_dicom_input_exits_1_naming_the_folder(corrupt, dicom_source, tmp_path):
    bad, problem = corrupt(dicom_source)
    data = tmp_path / "data"
    result = invoke(dicom_source, "--images", "images", "--labels", "labels", "--name", "bad", "--data-dir", data)
    assert_one_line_error(result, data, "bad", str(bad), problem)
    assert "Doe" not in result.output and "SECRET123" not in result.output


def test_series_uid_picks_one_series_of_a_study_folder(dicom_source, tmp_path):
    """A single case folder (SOURCE itself) whose image folder holds two series on one grid."""
    from medseg.io.dicom import list_series

    mixed_series(dicom_source)
    study = tmp_path / "study"
    study.mkdir()
    (study / "ct").symlink_to(dicom_source / "images" / "c2", target_is_directory=True)
    (study / "seg.nii.gz").symlink_to(dicom_source / "labels" / "c2.nii.gz")
    data = tmp_path / "data"
    result = invoke(study, "--name", "any", "--data-dir", data, "--channels", "ct", "--label-file", "seg")
    assert result.exit_code == 1 and "choose one by SeriesInstanceUID" in result.stderr
    images = []
    for i, series in enumerate(list_series(study / "ct")):
        result = invoke(study, "--name", f"pick{i}", "--data-dir", data, "--channels", "ct", "--label-file", "seg",
                        "--series-uid", series.uid)
        assert result.exit_code == 0, result.output
        images.append(np.load(data / f"pick{i}" / "preprocessed" / "study_image.npy"))
    assert len(images) == 2 and not np.array_equal(images[0], images[1])
