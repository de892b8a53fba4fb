"""NIfTI reading/writing: geometry round trips, header variants and broken files (nibabel's own test files)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError, OutputExistsError
from medseg.io import Volume, read_volume, write_volume
from medseg.io.nifti import read_nifti, write_nifti
from medseg.phantoms import orientation_affine

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
NIB_FILES = [
    "anatomical.nii",  # big-endian NIfTI-1
    "example4d.nii.gz",  # oblique, 4D (2 volumes)
    "example_nifti2.nii.gz",  # NIfTI-2, 4D
    "functional.nii",  # 4D, 20 volumes, scaled
    "standard.nii.gz",  # qform_code 0, sform_code 2
    "reoriented_anat_moved.nii",  # big-endian float
]


def _check_round_trip(volume: Volume, tmp_path: Path, name: str = "out.nii.gz") -> Volume:
    write_nifti(volume, tmp_path / name)
    back = read_nifti(tmp_path / name)
    assert back.array.dtype == volume.array.dtype
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.affine, volume.affine, atol=1e-5, rtol=0)
    return back


@pytest.mark.parametrize("name", NIB_FILES)
def test_nibabel_files_read_like_nibabel_and_round_trip(tmp_path, name):
    ref = nib.load(str(NIB_DATA / name))
    vol = read_nifti(NIB_DATA / name)
    data = np.asanyarray(ref.dataobj)
    expected = data[None] if data.ndim == 3 else np.moveaxis(data, 3, 0)
    assert np.array_equal(vol.array, expected)
    assert vol.array.dtype.isnative
    assert np.allclose(vol.affine, ref.affine)
    _check_round_trip(vol, tmp_path)
    _check_round_trip(vol, tmp_path, "out.nii")


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAI", "oblique"])
def test_synthetic_orientations_round_trip(tmp_path, orientation):
    rng = np.random.default_rng(0)
    affine = orientation_affine((0.7, 1.3, 4.0), orientation, shape=(6, 5, 4))
    vol = Volume(rng.integers(-1000, 1000, (1, 6, 5, 4)).astype(np.int16), affine)
    back = _check_round_trip(vol, tmp_path)
    assert back.axcodes() == vol.axcodes()
    assert back.spacing == pytest.approx((0.7, 1.3, 4.0))


def test_big_endian_becomes_native():
    hdr = nib.load(str(NIB_DATA / "anatomical.nii")).header
    assert hdr.endianness == ">"
    vol = read_volume(NIB_DATA / "anatomical.nii")
    assert vol.array.dtype.isnative and vol.array.dtype == np.int16


def test_nifti2_is_read_as_channels():
    vol = read_volume(NIB_DATA / "example_nifti2.nii.gz")
    assert isinstance(nib.load(str(NIB_DATA / "example_nifti2.nii.gz")), nib.Nifti2Image)
    assert vol.num_channels == 2 and vol.spatial_shape == (32, 20, 12)


def test_4d_oblique_is_channels_first():
    ref = nib.load(str(NIB_DATA / "example4d.nii.gz"))
    vol = read_volume(NIB_DATA / "example4d.nii.gz")
    assert vol.num_channels == 2
    assert np.array_equal(vol.array[1], np.asanyarray(ref.dataobj)[..., 1])
    rot = vol.direction_ras
    assert not np.allclose(np.abs(rot), np.round(np.abs(rot)), atol=1e-3)  # truly oblique


def _write_with_codes(path: Path, qform: np.ndarray, qcode: int, sform: np.ndarray, scode: int) -> None:
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), None)
    img.set_qform(qform, code=qcode)
    img.set_sform(sform, code=scode)
    nib.save(img, str(path))


def test_sform_wins_over_qform_and_qform_used_without_sform(tmp_path):
    q = orientation_affine((1.0, 2.0, 3.0), "LPS")
    s = orientation_affine((1.5, 1.5, 1.5), "RAS")
    _write_with_codes(tmp_path / "both.nii", q, 1, s, 2)
    _write_with_codes(tmp_path / "qonly.nii", q, 1, s, 0)
    assert np.allclose(read_nifti(tmp_path / "both.nii").affine, s)
    qonly = read_nifti(tmp_path / "qonly.nii")
    assert np.allclose(qonly.affine, q)
    assert qonly.meta["sform_code"] == 0 and qonly.meta["qform_code"] == 1
    standard = read_nifti(NIB_DATA / "standard.nii.gz")  # qform 0, sform 2
    assert np.allclose(standard.affine, nib.load(str(NIB_DATA / "standard.nii.gz")).header.get_sform())


@pytest.mark.parametrize("name", ["nifti1.hdr", "nifti2.hdr", "analyze.hdr"])
def test_header_without_data_file_names_the_missing_file(name):
    with pytest.raises(InputError) as err:
        read_volume(NIB_DATA / name)
    message = str(err.value)
    assert name in message and name.replace(".hdr", ".img") in message and "missing" in message


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii"])
def test_truncated_file_is_an_input_error(tmp_path, name):
    raw = (NIB_DATA / name).read_bytes()
    target = tmp_path / name
    target.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_volume(target)
    assert target.read_bytes() == raw[: len(raw) // 2]  # input untouched


def test_int64_labels_are_written_as_int32(tmp_path):
    vol = Volume(np.arange(8, dtype=np.int64).reshape(1, 2, 2, 2), np.eye(4))
    write_volume(vol, tmp_path / "lab.nii.gz")
    back = read_volume(tmp_path / "lab.nii.gz")
    assert back.array.dtype == np.int32 and np.array_equal(back.array, vol.array)


def test_overwrite_false_refuses_existing_output(tmp_path):
    vol = Volume(np.zeros((1, 2, 2, 2), np.uint8), np.eye(4))
    target = tmp_path / "x.nii.gz"
    write_volume(vol, target)
    before = target.read_bytes()
    with pytest.raises(OutputExistsError):
        write_volume(vol, target, overwrite=False)
    assert target.read_bytes() == before
