"""medseg.preprocessing: exact reorientation, crop, normalization, resampling, and the round trip
preprocess → restore_probabilities → argmax back onto the scan's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.io import Volume
from medseg.phantoms import CT_LABELS, ct_phantom, image2d_phantom, orientation_affine
from medseg.preprocessing import (
    bounding_box, canonical_ornt, class_locations, normalize, preprocess, reorient, resample, resampled_shape,
    restore_probabilities, thick_axis, undo_reorient,
)

SHAPE = (32, 32, 16)
SPACING = (1.5, 1.5, 3.0)


def ct_plan(target=SPACING, crop=False, scheme=None, labels=CT_LABELS):
    return {
        "dims": 3, "modality": "CT", "channel_names": ["CT"], "num_channels": 1, "labels": dict(labels),
        "num_classes": max(labels.values()) + 1, "canonical": "RAS", "target_spacing": list(target),
        "normalization": [scheme or {"scheme": "ct", "clip": [-200.0, 300.0], "mean": 50.0, "std": 100.0}],
        "crop_nonzero": crop, "median_shape": list(SHAPE),
    }


def round_trip(image: Volume, label: Volume, plan: dict) -> tuple[np.ndarray, dict]:
    """Preprocess, one-hot the preprocessed label, restore it, argmax: the label on the original grid."""
    _, seg, props = preprocess(image, plan, label)
    k = plan["num_classes"]
    onehot = torch.nn.functional.one_hot(torch.from_numpy(seg[0].astype(np.int64)), k).movedim(-1, 0).float()
    restored = restore_probabilities(onehot, props)
    assert tuple(restored.shape) == (k, *label.spatial_shape)
    return restored.argmax(0).numpy(), props


def dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    return 2.0 * np.sum((a == c) & (b == c)) / (np.sum(a == c) + np.sum(b == c))


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAS", "oblique"])
def test_round_trip_is_exact_at_the_original_spacing(orientation):
    ct, seg = ct_phantom(seed=3, shape=SHAPE, spacing=SPACING, orientation=orientation)
    back, props = round_trip(ct, seg, ct_plan())
    assert props["shape_after_resample"] == props["shape_after_reorient"]
    np.testing.assert_array_equal(back, seg.array[0])


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
def test_round_trip_through_a_finer_spacing_keeps_dice(orientation):
    ct, seg = ct_phantom(seed=4, shape=SHAPE, spacing=SPACING, orientation=orientation)
    back, props = round_trip(ct, seg, ct_plan(target=(1.0, 1.0, 2.0)))
    assert props["shape_after_resample"] == [48, 48, 24]
    for c in (1, 2, 3):
        assert dice(back, seg.array[0], c) >= 0.95, c


def test_round_trip_with_nonzero_crop_pads_background_back():
    ct, seg = ct_phantom(seed=5, shape=SHAPE, spacing=SPACING, orientation="LPS")
    array = ct.array.astype(np.float32)
    array[ct.array <= -900] = 0  # an MR-like scan: zero outside the body
    mr = ct.with_array(array)
    plan = ct_plan(crop=True, scheme={"scheme": "zscore"})
    image, _, props = preprocess(mr, plan, seg)
    assert props["shape_after_crop"] != props["shape_after_reorient"]  # the box is smaller than the scan
    assert list(image.shape[1:]) == props["shape_after_crop"]
    back, _ = round_trip(mr, seg, plan)
    np.testing.assert_array_equal(back, seg.array[0])


def test_restore_pads_the_crop_with_background_probability_one():
    props = {"shape_after_crop": [2, 3, 2], "shape_after_reorient": [4, 5, 3], "crop_bbox": [[1, 3], [1, 4], [0, 2]],
             "orientation_transform": [[0, 1], [1, 1], [2, 1]]}
    probs = torch.full((3, 2, 3, 2), 1 / 3)
    out = restore_probabilities(probs, props)
    assert out.shape == (3, 4, 5, 3)
    assert torch.all(out[0, 0] == 1) and torch.all(out[1:, 0] == 0)
    assert torch.allclose(out[:, 1:3, 1:4, 0:2], probs)


def test_reorientation_is_exact_and_identical_across_storage_orders():
    segs = []
    for orientation in ("RAS", "LPS", "LAS", "SAR"):
        ct, seg = ct_phantom(seed=6, shape=(16, 16, 16), spacing=(2.0, 2.0, 2.0), orientation=orientation)
        plan = ct_plan(target=(2.0, 2.0, 2.0))
        _, pre_seg, props = preprocess(ct, plan, seg)
        assert props["original_shape"] == [16, 16, 16]
        segs.append(pre_seg)
    for other in segs[1:]:  # same anatomy in world space → the same canonical array
        np.testing.assert_array_equal(other, segs[0])


@pytest.mark.parametrize("code", ["RAS", "LPS", "ASL", "IPR", "SLA"])
def test_undo_reorient_inverts_reorient(code):
    array = np.random.default_rng(0).random((2, 3, 4, 5)).astype(np.float32)
    ornt = canonical_ornt(orientation_affine((1, 2, 3), code), 3)
    canonical = reorient(array, ornt)
    back = undo_reorient(torch.from_numpy(np.ascontiguousarray(canonical)), ornt).numpy()
    np.testing.assert_array_equal(back, array)


def test_2d_rgb_round_trip_and_scaling():
    image, label = image2d_phantom(seed=1, size=(40, 30))
    plan = {"dims": 2, "modality": "2D", "channel_names": ["R", "G", "B"], "num_channels": 3,
            "labels": {"background": 0, "polyp": 1}, "num_classes": 2, "canonical": "RAS", "target_spacing": [1.0, 1.0],
            "normalization": [{"scheme": "rgb"}] * 3, "crop_nonzero": False, "median_shape": [40, 30]}
    pre, _, props = preprocess(image, plan, label)
    assert pre.dtype == np.float32 and pre.shape == (3, 40, 30)
    np.testing.assert_allclose(pre, image.array / 255.0, rtol=1e-6)
    back, _ = round_trip(image, label, plan)
    np.testing.assert_array_equal(back, label.array[0])
    assert props["orientation_transform"] == [[0, 1], [1, 1]]


def test_plan_checks_channels_and_dims():
    ct, _ = ct_phantom(seed=0, shape=(8, 8, 4))
    with pytest.raises(Exception, match="channel"):
        preprocess(ct, {**ct_plan(), "num_channels": 2})
    with pytest.raises(Exception, match="spatial dimensions"):
        preprocess(ct, {**ct_plan(), "dims": 2})


def test_ct_normalization_clips_then_uses_dataset_stats():
    x = np.array([[-1000.0, 0.0, 100.0, 5000.0]], dtype=np.float32)
    out = normalize(x, [{"scheme": "ct", "clip": [-100.0, 400.0], "mean": 100.0, "std": 50.0}])
    np.testing.assert_allclose(out[0], [(-100 - 100) / 50, (0 - 100) / 50, 0.0, (400 - 100) / 50])


def test_zscore_over_the_mask_and_zero_outside():
    x = np.array([[0.0, 0.0, 2.0, 4.0, 6.0]], dtype=np.float32)
    mask = x[0] != 0
    out = normalize(x, [{"scheme": "zscore"}], mask)[0]
    np.testing.assert_allclose(out[2:], (np.array([2, 4, 6]) - 4) / np.std([2, 4, 6]), rtol=1e-6)
    assert out[0] == 0 and out[1] == 0
    whole = normalize(x, [{"scheme": "zscore"}])[0]
    assert abs(whole.mean()) < 1e-6 and abs(whole.std() - 1) < 1e-5


def test_normalization_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(np.zeros((1, 2), np.float32), [{"scheme": "minmax"}])


def test_resampled_shape_and_thick_axis():
    assert resampled_shape((100, 100, 20), (0.8, 0.8, 5.0), (1.0, 1.0, 2.5)) == (80, 80, 40)
    assert thick_axis((0.8, 0.8, 5.0), (0.8, 0.8, 5.0)) == 2
    assert thick_axis((1.0, 1.0, 1.2), (1.0, 1.0, 1.0)) is None
    assert thick_axis((1.0, 1.0, 1.0), (4.0, 1.0, 1.0)) == 0  # the target decides too


def test_resample_labels_stay_labels_and_images_keep_constants():
    label = np.zeros((1, 8, 8, 4), np.uint8)
    label[0, 2:6, 2:6, 1:3] = 3
    out = resample(label, (16, 16, 8), is_label=True, spacing=(1, 1, 4), target_spacing=(0.5, 0.5, 2))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 3}
    assert np.sum(out == 3) == 8 * np.sum(label == 3)
    flat = np.full((1, 8, 8, 4), 7.0, np.float32)
    np.testing.assert_allclose(resample(flat, (5, 5, 3), is_label=False, spacing=(1, 1, 1), target_spacing=(1.6, 1.6, 1.3)), 7.0,
                               rtol=1e-5)


def test_bounding_box_and_class_locations():
    mask = np.zeros((6, 7, 5), bool)
    mask[1:3, 2:6, 4] = True
    assert bounding_box(mask) == [[1, 3], [2, 6], [4, 5]]
    assert bounding_box(np.zeros((3, 3), bool)) == [[0, 3], [0, 3]]
    label = np.zeros((1, 40, 40, 2), np.uint8)
    label[0, :30, :, :] = 1
    label[0, 35, 5, 1] = 2
    locations = class_locations(label, [1, 2, 3])
    assert len(locations["1"]) == 1000 and locations["2"] == [[35, 5, 1]] and locations["3"] == []
    assert all(label[(0, *p)] == 1 for p in locations["1"])


def test_preprocess_properties_are_json_ready():
    import json

    ct, seg = ct_phantom(seed=0, shape=(16, 16, 8), orientation="oblique")
    image, label, props = preprocess(ct, ct_plan(target=(2.0, 2.0, 3.0)), seg)
    json.dumps(props)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and label.shape[0] == 1
    assert image.flags["C_CONTIGUOUS"] and label.flags["C_CONTIGUOUS"]
    for key in ("original_shape", "original_affine", "original_spacing", "orientation_transform", "shape_after_reorient",
                "crop_bbox", "shape_after_crop", "shape_after_resample", "spacing_after_resample", "class_locations"):
        assert key in props
    np.testing.assert_allclose(props["original_affine"], ct.affine)


def test_fill_holes_matches_scipy():
    from scipy.ndimage import binary_fill_holes

    from medseg.preprocessing.crop import fill_holes

    rng = np.random.default_rng(0)
    for shape in ((12, 10, 8), (9, 7)):
        for p in (0.3, 0.7, 0.95):
            mask = rng.random(shape) < p
            np.testing.assert_array_equal(fill_holes(mask), binary_fill_holes(mask))


def test_separable_resample_equals_scipy_zoom():
    from scipy.ndimage import zoom

    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 13, 11, 7)).astype(np.float32)
    new = (20, 8, 7)
    ours = resample(image, new, is_label=False, spacing=(1, 1, 1), target_spacing=(0.65, 1.4, 1))
    theirs = zoom(image[0], [n / s for n, s in zip(new, image.shape[1:])], order=3, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(ours[0], theirs, atol=1e-5)
    # a thick axis (5 mm vs 1 mm) is interpolated linearly, the others with cubic splines
    new = (13, 11, 14)
    ours = resample(image, new, is_label=False, spacing=(1, 1, 5), target_spacing=(1, 1, 2.5))
    np.testing.assert_allclose(ours[0], zoom(image[0], (1, 1, 2), order=1, mode="nearest", grid_mode=True), atol=1e-5)
    label = rng.integers(0, 4, (1, 9, 10, 3)).astype(np.uint8)
    ours = resample(label, (14, 5, 3), is_label=True, spacing=(1, 1, 1), target_spacing=(1, 1, 1))
    np.testing.assert_array_equal(ours[0], zoom(label[0], (14 / 9, 0.5, 1), order=0, mode="nearest", grid_mode=True))
