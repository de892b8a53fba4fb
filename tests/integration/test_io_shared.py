"""Readers on the real shared data: DICOM series vs NIfTI/NRRD/SEG labels, multi-series studies, 2D masks."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.io import read_volume, reorient_to_match, resample_to_grid
from medseg.io.dicom import SEG_SOP_CLASS_UID, list_series, read_dicom_file, read_dicom_series, write_dicom_seg
from medseg.io.sitk_io import read_sitk

PGBM = "dicom/mr_brain_tumor_pgbm001"


@pytest.fixture(scope="module")
def ct20(shared_data):
    return read_dicom_series(shared_data / "dicom/ct_20slice/series"), read_volume(shared_data / "dicom/ct_20slice/seg.nii.gz")


def test_ct20_series_geometry(ct20):
    ct, seg = ct20
    assert ct.spatial_shape == (512, 512, 20) and ct.axcodes() == "LPS"
    assert ct.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert ct.array.dtype == np.int16 and ct.array.min() == -1024  # rescaled to HU
    assert seg.axcodes() == "LAS" and not seg.same_grid(ct)  # stored with the second axis flipped


def test_ct20_labelled_voxels_map_to_integer_series_indices(ct20):
    ct, seg = ct20
    labelled = np.argwhere(seg.array[0] > 0)
    picks = labelled[np.random.default_rng(0).choice(len(labelled), 50, replace=False)]
    world = seg.affine @ np.c_[picks, np.ones(len(picks))].T
    index = np.linalg.solve(ct.affine, world)[:3].T
    assert np.allclose(index, np.round(index), atol=1e-4)
    assert (index > -0.5).all() and (index < np.array(ct.spatial_shape) - 0.5).all()


def test_ct20_seg_lines_up_with_the_body(ct20):
    ct, seg = ct20
    exact = reorient_to_match(seg, ct)
    assert exact is not None and exact.same_grid(ct)
    assert np.array_equal(exact.array, seg.array[:, :, ::-1, :])  # the flipped row axis, nothing else
    resampled = resample_to_grid(seg, ct, order=0)
    assert np.array_equal(resampled.array, exact.array)
    inside = exact.array[0] > 0
    assert inside.sum() == (seg.array > 0).sum()
    hu_in, hu_out = ct.array[0][inside].mean(), ct.array[0][~inside].mean()
    assert hu_in > -200 and hu_in - hu_out > 300
    # the wrong (unflipped) overlay lands largely outside the body
    assert ct.array[0][seg.array[0] > 0].mean() < hu_in - 100


def test_pgbm_mask_series_on_t1post_grid(shared_data):
    t1 = read_dicom_series(shared_data / PGBM / "11-T1post-80644")
    mask = read_volume(shared_data / PGBM / "5388-MaskTumor-63335", as_label=True)
    assert t1.spatial_shape == (260, 320, 24)
    assert mask.same_grid(t1, atol=1e-3)
    assert set(np.unique(mask.array)) == {0, 1}
    assert not np.allclose(np.abs(t1.direction_ras), np.round(np.abs(t1.direction_ras)), atol=1e-3)  # oblique
    assert t1.array[0][mask.array[0] > 0].mean() != pytest.approx(t1.array[0][mask.array[0] == 0].mean(), rel=0.05)


def test_pgbm_study_folder_lists_three_series_and_selects_one(shared_data):
    series = list_series(shared_data / PGBM)
    assert sorted(s.description for s in series) == ["FLAIR_reg", "Mask_Tumor", "T1post"]
    assert all(s.num_slices == 24 for s in series)
    with pytest.raises(InputError) as err:
        read_volume(shared_data / PGBM)
    message = str(err.value)
    assert "3 DICOM series" in message and all(s.uid in message for s in series)
    for value in ("PatientName", "PatientID"):
        tag = pydicom.dcmread(next((shared_data / PGBM / "11-T1post-80644").iterdir()), stop_before_pixels=True).get(value)
        if tag:
            assert str(tag) not in message
    flair = next(s for s in series if s.description == "FLAIR_reg")
    vol = read_volume(shared_data / PGBM, series_uid=flair.uid)
    assert vol.meta["series_uid"] == flair.uid and vol.spatial_shape == (260, 320, 24)


def test_dicom_seg_matches_nrrd_and_series(shared_data):
    root = shared_data / "dicom/ct_3slice_seg"
    series = read_dicom_series(root / "series")
    seg = read_dicom_file(root / "liver_seg.dcm", reference=series)
    own = read_dicom_file(root / "liver_seg.dcm")
    nrrd = read_sitk(root / "liver_seg.nrrd")
    assert seg.same_grid(series) and own.same_grid(series, atol=1e-3) and nrrd.same_grid(series, atol=1e-3)
    assert seg.meta["segment_labels"] == {"Liver": 1}
    assert set(seg.meta["referenced_sop_instance_uids"]) == set(series.meta["sop_instance_uids"])
    assert seg.array.sum() > 1000
    assert np.array_equal(seg.array > 0, nrrd.array > 0) and np.array_equal(own.array, seg.array)


def test_write_dicom_seg_for_shared_series(shared_data, tmp_path):
    import highdicom as hd

    root = shared_data / "dicom/ct_3slice_seg"
    series = read_dicom_series(root / "series")
    label = np.zeros(series.array.shape, np.uint8)
    label[0, 100:300, 150:350, 0:2] = 1
    label[0, 350:400, 200:260, 1:3] = 2
    label_vol = series.with_array(label)
    out = write_dicom_seg(label_vol, root / "series", tmp_path / "pred.dcm", {"background": 0, "liver": 1, "lesion": 2})
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SEG_SOP_CLASS_UID and len(ds.SegmentSequence) == 2
    segd = hd.seg.segread(out)
    assert segd.number_of_segments == 2
    assert {uid for _, _, uid in segd.get_source_image_uids()} == set(series.meta["sop_instance_uids"])
    assert segd.get_segment_description(1).algorithm_identification[0].AlgorithmName == "medseg"
    back = read_dicom_file(out, reference=series)
    assert back.same_grid(series) and np.array_equal(back.array, label)


def test_kvasir_and_drive_masks(shared_data):
    kvasir = shared_data / "2d/kvasir_seg"
    name = sorted((kvasir / "masks").glob("*.jpg"))[0].name
    image = read_volume(kvasir / "images" / name)
    mask = read_volume(kvasir / "masks" / name, as_label=True)
    assert image.array.shape == (3, 256, 256) and image.array.dtype == np.uint8
    assert mask.array.shape == (1, 256, 256) and set(np.unique(mask.array)) == {0, 1}
    assert 0.01 < mask.array.mean() < 0.9

    drive = shared_data / "2d/drive/training"
    fundus = read_volume(drive / "images/21_training.tif")
    vessels = read_volume(drive / "1st_manual/21_manual1.gif", as_label=True)
    fov = read_volume(drive / "mask/21_training_mask.gif", as_label=True)
    assert fundus.array.shape == (3, 565, 584)  # (C, W, H): 565 columns, 584 rows
    assert vessels.array.shape == fov.array.shape == (1, 565, 584)
    assert set(np.unique(vessels.array)) == {0, 1} and set(np.unique(fov.array)) == {0, 1}
    assert vessels.array[fov.array == 0].mean() < 0.01  # vessels lie inside the field of view
    assert fundus.array[:, fov.array[0] == 1].mean() > fundus.array[:, fov.array[0] == 0].mean() + 20


@pytest.mark.parametrize("folder", [f"{PGBM}/11-T1post-80644", "dicom/ct_20slice/series"])
def test_series_matches_simpleitk(shared_data, folder):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(shared_data / folder)))
    image = reader.Execute()
    ours = read_dicom_series(shared_data / folder)
    assert np.array_equal(ours.array[0], sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    origin, spacing, direction = ours.itk_geometry()
    assert np.allclose(origin, image.GetOrigin(), atol=1e-3)
    assert np.allclose(spacing, image.GetSpacing(), atol=1e-4)
    assert np.allclose(direction, image.GetDirection(), atol=1e-4)
