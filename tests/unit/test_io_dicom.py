"""DICOM series / multi-frame / DICOM-SEG on tiny synthetic files written with pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_synth import PATIENT, oblique_orientation, write_multiframe, write_series

from medseg.errors import GeometryError, InputError, LabelError, MedsegError
from medseg.io import Volume, read_volume
from medseg.io.dicom import is_dicom_file, list_series, read_dicom_file, read_dicom_series, write_dicom_seg
from medseg.io.volume import LPS_TO_RAS

ROWS, COLS, N = 6, 8, 5
STEP = 2.5
SPACING = (0.8, 0.6)  # (between rows, between columns)
ORIGIN = np.array([10.0, -20.0, 30.0])
PERM = [3, 0, 4, 1, 2]  # file s holds slice PERM[s]: file-name order is not slice order
INSTANCE_NUMBERS = [2, 5, 1, 4, 3]  # nor is InstanceNumber order


def _geometry(orientation=None):
    orientation = oblique_orientation() if orientation is None else orientation
    normal = np.cross(orientation[:3], orientation[3:])
    positions = ORIGIN + np.arange(N)[:, None] * STEP * normal
    return orientation, normal, positions


def _raw(k: int) -> np.ndarray:
    r, c = np.mgrid[:ROWS, :COLS]
    return (100 * k + 10 * r + c).astype(np.int16)


def _write(folder, slope=2.0, intercept=-1024.0, drop=None, orientation=None, **kw):
    orientation, _, positions = _geometry(orientation)
    slices = [k for k in PERM if k != drop]
    return write_series(folder, np.stack([_raw(k) for k in slices]), positions[slices], orientation,
                        spacing=SPACING, slope=slope, intercept=intercept,
                        names=[f"{s:02d}.dcm" for s in range(len(slices))],
                        instance_numbers=INSTANCE_NUMBERS[: len(slices)], **kw)


def _expected_affine(orientation=None):
    orientation, normal, _ = _geometry(orientation)
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * SPACING[1]
    lps[:3, 1] = orientation[3:] * SPACING[0]
    lps[:3, 2] = normal * STEP
    lps[:3, 3] = ORIGIN
    return LPS_TO_RAS @ lps


def _expected_array(slope=2.0, intercept=-1024.0):
    return np.stack([_raw(k).T for k in range(N)], axis=-1)[None] * slope + intercept


def test_series_ordered_by_position_rescaled_with_oblique_affine(tmp_path):
    paths = _write(tmp_path / "s")
    vol = read_volume(tmp_path / "s")
    assert vol.array.shape == (1, COLS, ROWS, N)
    assert vol.array.dtype == np.int16  # integral slope/intercept
    assert np.array_equal(vol.array, _expected_array())
    assert vol.array[0, 7, 2, 3] == 2 * (300 + 20 + 7) - 1024  # column 7, row 2, slice 3
    assert np.allclose(vol.affine, _expected_affine(), atol=1e-5)
    # each slice's ImagePositionPatient is voxel (0, 0, k) in LPS
    uid_at = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        k = int(round(np.linalg.solve(LPS_TO_RAS @ vol.affine, [*map(float, ds.ImagePositionPatient), 1])[2]))
        uid_at[k] = ds.SOPInstanceUID
    assert vol.meta["sop_instance_uids"] == [uid_at[k] for k in range(N)]
    assert vol.meta["format"] == "dicom" and vol.meta["modality"] == "CT"
    assert not any(value in repr(vol.meta) for value in PATIENT.values())


def test_non_integer_rescale_gives_float32(tmp_path):
    _write(tmp_path / "s", slope=0.5, intercept=-3.25)
    vol = read_dicom_series(tmp_path / "s")
    assert vol.array.dtype == np.float32
    assert np.allclose(vol.array, _expected_array(0.5, -3.25))


def test_missing_slice_is_refused(tmp_path):
    _write(tmp_path / "s", drop=2)
    with pytest.raises(InputError, match="uneven slice spacing.*missing"):
        read_dicom_series(tmp_path / "s")


def test_mixed_orientation_is_refused(tmp_path):
    orientation, _, positions = _geometry()
    tilted = np.tile(orientation, (N, 1))
    tilted[2] = oblique_orientation(26.0)
    write_series(tmp_path / "s", np.stack([_raw(k) for k in range(N)]), positions, tilted)
    with pytest.raises(InputError, match="mixed ImageOrientationPatient"):
        read_dicom_series(tmp_path / "s")


def test_inconsistent_size_and_duplicate_position_are_refused(tmp_path):
    orientation, _, positions = _geometry()
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "a", np.stack([_raw(k) for k in range(3)]), positions[:3], orientation, series_uid=uid)
    write_series(tmp_path / "a", np.zeros((1, ROWS + 1, COLS), np.int16), positions[3:4], orientation,
                 series_uid=uid, names=["odd.dcm"])
    with pytest.raises(InputError, match="inconsistent image size"):
        read_dicom_series(tmp_path / "a")
    write_series(tmp_path / "b", np.stack([_raw(k) for k in range(3)]), positions[[0, 1, 1]], orientation)
    with pytest.raises(InputError, match="same position"):
        read_dicom_series(tmp_path / "b")


def test_multiframe_file_matches_single_frame_series(tmp_path):
    orientation, _, positions = _geometry()
    order = PERM
    path = write_multiframe(tmp_path / "mf" / "enhanced.dcm", np.stack([_raw(k) for k in order]), positions[order],
                            orientation, spacing=SPACING)
    for vol in (read_volume(path), read_volume(tmp_path / "mf")):
        assert np.array_equal(vol.array, _expected_array())
        assert np.allclose(vol.affine, _expected_affine(), atol=1e-5)
        assert vol.meta["frame_numbers"] == [order.index(k) + 1 for k in range(N)]


def test_single_slice_uses_slice_thickness(tmp_path):
    orientation, normal, positions = _geometry()
    path = write_series(tmp_path / "one", _raw(0)[None], positions[:1], orientation, thickness=3.0)[0]
    for vol in (read_dicom_series(tmp_path / "one"), read_volume(path)):
        assert vol.spatial_shape == (COLS, ROWS, 1)
        assert np.allclose(vol.affine[:3, 2], (LPS_TO_RAS[:3, :3] @ normal) * 3.0)


def test_several_series_listed_and_selected(tmp_path):
    _write(tmp_path / "study" / "ct", description="arterial")
    orientation, _, positions = _geometry(np.array([1.0, 0, 0, 0, 1, 0]))
    write_series(tmp_path / "study" / "nested" / "pv", np.stack([_raw(k) for k in range(3)]), positions[:3],
                 orientation, description="venous")
    series = list_series(tmp_path / "study")
    assert sorted((s.description, s.num_slices, s.modality) for s in series) == [("arterial", 5, "CT"), ("venous", 3, "CT")]
    with pytest.raises(InputError) as err:
        read_dicom_series(tmp_path / "study")
    message = str(err.value)
    assert "2 DICOM series" in message and "arterial" in message and "venous" in message
    assert all(s.uid in message for s in series) and "\n" not in message
    venous = next(s for s in series if s.description == "venous")
    vol = read_volume(tmp_path / "study", series_uid=venous.uid)
    assert vol.spatial_shape == (COLS, ROWS, 3) and vol.meta["series_uid"] == venous.uid
    with pytest.raises(InputError, match="no series with"):
        read_dicom_series(tmp_path / "study", series_uid="1.2.3.4")


def test_series_split_over_subfolders(tmp_path):
    orientation, _, positions = _geometry()
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "s" / "part1", np.stack([_raw(k) for k in (0, 2, 4)]), positions[[0, 2, 4]], orientation,
                 spacing=SPACING, series_uid=uid, names=["a.dcm", "b.dcm", "c.dcm"])
    write_series(tmp_path / "s" / "part2", np.stack([_raw(k) for k in (1, 3)]), positions[[1, 3]], orientation,
                 spacing=SPACING, series_uid=uid, names=["a.dcm", "b.dcm"])
    (info,) = list_series(tmp_path / "s")
    assert info.folder == tmp_path / "s" and info.num_slices == N
    assert np.array_equal(read_dicom_series(tmp_path / "s").array, _expected_array())


def test_patient_data_never_in_error_messages(tmp_path):
    _write(tmp_path / "missing", drop=1)
    orientation, _, positions = _geometry()
    tilted = np.tile(orientation, (N, 1))
    tilted[0] = np.array([1.0, 0, 0, 0, 1, 0])
    write_series(tmp_path / "mixed", np.stack([_raw(k) for k in range(N)]), positions, tilted)
    _write(tmp_path / "two" / "a")
    _write(tmp_path / "two" / "b")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    messages = []
    for folder in ("missing", "mixed", "two", "bad"):
        with pytest.raises(MedsegError) as err:
            read_dicom_series(tmp_path / folder)
        messages.append(str(err.value))
    vol = Volume(np.zeros((1, COLS, ROWS, N), np.uint8), np.eye(4))
    with pytest.raises(MedsegError) as err:
        write_dicom_seg(vol, tmp_path / "two" / "a", tmp_path / "seg.dcm", {"organ": 1})
    messages.append(str(err.value))
    for message in messages:
        for value in (*PATIENT.values(), "Secretname", "Jane"):
            assert value not in message, message


def test_not_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert not is_dicom_file(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no DICOM images"):
        read_dicom_series(tmp_path)
    paths = _write(tmp_path / "s")
    assert is_dicom_file(paths[0])


def _series_label(vol: Volume) -> Volume:
    label = np.zeros(vol.array.shape, np.uint8)
    label[0, 1:4, 2:5, 1:3] = 1
    label[0, 5:7, 0:2, 3] = 2
    return vol.with_array(label)


def test_dicom_seg_round_trip_on_synthetic_series(tmp_path):
    paths = _write(tmp_path / "s")
    vol = read_dicom_series(tmp_path / "s")
    label = _series_label(vol)
    out = write_dicom_seg(label, tmp_path / "s", tmp_path / "out" / "seg.dcm", {"background": 0, "a": 1, "b": 2})
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["a", "b"]
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"AUTOMATIC"}
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "medseg"
    referenced = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    for back in (read_dicom_file(out, reference=vol), read_volume(out, reference=vol)):
        assert back.same_grid(vol) and np.array_equal(back.array, label.array)
    own = read_dicom_file(out)  # on the SEG's own (sparse-frame) grid: slices 1..3 only
    assert np.allclose(own.affine[:3, :3], vol.affine[:3, :3], atol=1e-4)
    k0 = int(round(np.linalg.solve(vol.affine, own.affine[:, 3])[2]))
    assert np.array_equal(own.array, label.array[..., k0:k0 + own.spatial_shape[2]])
    assert not any(v in repr(own.meta) for v in PATIENT.values())


def test_dicom_seg_refuses_bad_labels_grid_and_existing(tmp_path):
    _write(tmp_path / "s")
    vol = read_dicom_series(tmp_path / "s")
    label = _series_label(vol)
    with pytest.raises(LabelError, match=r"\[2\]"):
        write_dicom_seg(label, tmp_path / "s", tmp_path / "seg.dcm", {"a": 1})
    shifted = Volume(label.array, label.affine + _shift(5.0))
    with pytest.raises(GeometryError):
        write_dicom_seg(shifted, tmp_path / "s", tmp_path / "seg.dcm", {"a": 1, "b": 2})
    assert not (tmp_path / "seg.dcm").exists()
    flipped = Volume(label.array[:, ::-1].copy(), vol.affine @ _flip_x(COLS))  # same points, x reversed
    write_dicom_seg(flipped, tmp_path / "s", tmp_path / "seg.dcm", {"a": 1, "b": 2})
    assert np.array_equal(read_dicom_file(tmp_path / "seg.dcm", reference=vol).array, label.array)
    with pytest.raises(MedsegError, match="exists"):
        write_dicom_seg(label, tmp_path / "s", tmp_path / "seg.dcm", {"a": 1, "b": 2}, overwrite=False)


def test_dicom_seg_keeps_non_contiguous_label_values(tmp_path):
    _write(tmp_path / "s")
    vol = read_dicom_series(tmp_path / "s")
    label = _series_label(vol)
    label = label.with_array(np.where(label.array == 2, 7, label.array * 3).astype(np.uint8))
    out = write_dicom_seg(label, tmp_path / "s", tmp_path / "seg.dcm", {"bg": 0, "liver": 3, "spleen": 7})
    back = read_dicom_file(out, reference=vol)
    assert np.array_equal(back.array, label.array)
    assert back.meta["segment_labels"] == {"liver": 3, "spleen": 7}


def test_seg_off_the_reference_grid_is_a_geometry_error(tmp_path):
    _write(tmp_path / "s")
    vol = read_dicom_series(tmp_path / "s")
    out = write_dicom_seg(_series_label(vol), tmp_path / "s", tmp_path / "seg.dcm", {"a": 1, "b": 2})
    moved = Volume(vol.array, vol.affine @ _shift_voxels(0.5))
    with pytest.raises(GeometryError, match="does not lie on the reference grid"):
        read_dicom_file(out, reference=moved)


def _shift(mm: float) -> np.ndarray:
    m = np.zeros((4, 4))
    m[0, 3] = mm
    return m


def _shift_voxels(v: float) -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = v
    return m


def _flip_x(n: int) -> np.ndarray:
    m = np.eye(4)
    m[0, 0] = -1
    m[0, 3] = n - 1
    return m
