"""Metric values computed by hand on tiny arrays, including anisotropic spacing and empty structures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medseg.metrics import (
    Confusion,
    average_surface_distance,
    border,
    boundary_metrics,
    confusion,
    evaluate_structures,
    hausdorff_distance,
    normalized_surface_dice,
    overlap_metrics,
    surface_distances,
)
from medseg.metrics.case import status_of


def strip(n: int, on: range) -> np.ndarray:
    """A 2D mask (n, 1): a one-voxel-wide strip, so every voxel is a border voxel."""
    mask = np.zeros((n, 1), bool)
    mask[list(on), 0] = True
    return mask


def test_overlap_by_hand():
    pred = np.array([[1, 1], [0, 0]], bool)
    ref = np.array([[1, 0], [1, 0]], bool)
    c = confusion(pred, ref)
    assert c == Confusion(tp=1, fp=1, fn=1, tn=1)
    m = overlap_metrics(c)
    assert m == {"dice": 0.5, "iou": 1 / 3, "sensitivity": 0.5, "specificity": 0.5, "precision": 0.5}


def test_border_is_mask_minus_erosion_including_image_edges():
    mask = np.zeros((5, 5, 4), bool)
    mask[1:4, 1:4, 0:3] = True  # touches the image at z = 0
    expected = mask & ~ndimage.binary_erosion(mask)
    np.testing.assert_array_equal(border(mask), expected)
    assert border(mask).sum() == 27 - 1 + 0  # only the centre (2, 2, 1) is interior
    assert not border(mask)[2, 2, 1]
    full = np.ones((2, 3), bool)
    assert border(full).all()  # every voxel touches the image edge


def test_strip_all_metrics_by_hand_anisotropic():
    # reference voxels 0..1, prediction 0..4 along axis 0 with 2 mm spacing (axis 1: 1 mm)
    ref, pred = strip(10, range(0, 2)), strip(10, range(0, 5))
    d_pr, d_rp = surface_distances(pred, ref, spacing=(2.0, 1.0))
    np.testing.assert_allclose(d_pr, [0, 0, 2, 4, 6])
    np.testing.assert_allclose(d_rp, [0, 0])
    m = boundary_metrics(d_pr, d_rp, tolerances_mm=(1.0, 2.0))
    assert m["hd"] == 6.0
    assert m["hd95"] == pytest.approx(5.6)  # 95th percentile of [0,0,2,4,6]: 4 + 0.8 * (6 - 4)
    assert m["assd"] == pytest.approx(12 / 7)
    assert m["nsd_1mm"] == pytest.approx(4 / 7)
    assert m["nsd_2mm"] == pytest.approx(5 / 7)
    o = overlap_metrics(confusion(pred, ref))  # TP 2, FP 3, FN 0, TN 5
    assert o == pytest.approx({"dice": 4 / 7, "iou": 2 / 5, "sensitivity": 1.0, "specificity": 5 / 8, "precision": 2 / 5})


def test_single_voxels_3d_anisotropic():
    ref, pred = np.zeros((3, 4, 5), bool), np.zeros((3, 4, 5), bool)
    ref[0, 0, 0] = pred[1, 2, 3] = True
    spacing = (0.5, 1.0, 2.5)
    expected = math.sqrt(0.5**2 + 2.0**2 + 7.5**2)
    assert hausdorff_distance(pred, ref, spacing) == pytest.approx(expected, rel=1e-6)
    assert hausdorff_distance(pred, ref, spacing, percentile=95) == pytest.approx(expected, rel=1e-6)
    assert average_surface_distance(pred, ref, spacing) == pytest.approx(expected, rel=1e-6)
    assert normalized_surface_dice(pred, ref, 7.0, spacing) == 0.0
    assert normalized_surface_dice(pred, ref, 8.0, spacing) == 1.0
    # swapping the axes' spacings changes the distance: spacing is applied per axis
    assert hausdorff_distance(pred, ref, (2.5, 1.0, 0.5)) == pytest.approx(math.sqrt(2.5**2 + 2**2 + 1.5**2), rel=1e-6)


def test_cube_shifted_along_thick_axis():
    ref = np.zeros((5, 5, 6), bool)
    ref[1:4, 1:4, 1:4] = True
    pred = np.roll(ref, 1, axis=2)
    # each side: 26 border voxels; 18 of them lie on the other's border (distance 0), the 9 of one
    # face are one 3 mm slice away from the other cube's border... except the face centre, whose nearest
    # border voxel of the other cube is 1 voxel (1 mm) away sideways in-plane or 3 mm away along z.
    d_pr, d_rp = surface_distances(pred, ref, spacing=(1.0, 1.0, 3.0))
    # Per side, 26 border voxels: the 8 + 8 ring voxels of the two shared slices lie on the other
    # border (0 mm); the shared slice's centre, interior to one cube but a face centre of the other, is
    # 1 mm from the ring in-plane; the 9 voxels of the non-shared face are one 3 mm slice away.
    assert len(d_pr) == len(d_rp) == 26
    assert sorted(d_pr.tolist()) == sorted(d_rp.tolist())
    assert (np.count_nonzero(d_pr == 0), np.count_nonzero(d_pr == 1), np.count_nonzero(d_pr == 3)) == (16, 1, 9)
    m = boundary_metrics(d_pr, d_rp, (1.0, 2.9, 3.0))
    assert m["hd"] == 3.0 and m["hd95"] == 3.0 and m["assd"] == pytest.approx(28 / 26)
    assert m["nsd_1mm"] == pytest.approx(17 / 26) and m["nsd_2.9mm"] == pytest.approx(17 / 26) and m["nsd_3mm"] == 1.0


def test_nsd_tolerance_compared_in_float32_like_monai():
    # 3 voxels at 0.1 mm = 0.30000000000000004 mm in float64, 0.3 in float32: within a 0.3 mm tolerance
    ref, pred = strip(8, [0]), strip(8, [3])
    assert normalized_surface_dice(pred, ref, 0.3, spacing=(0.1, 1.0)) == 1.0


def test_empty_structure_rule():
    some, none = strip(6, range(1, 3)), strip(6, [])
    cases = {
        "ref_empty": (some, none),
        "pred_empty": (none, some),
        "both_empty": (none, none),
    }
    for status, (pred, ref) in cases.items():
        c = confusion(pred, ref)
        assert status_of(c) == status
        o = overlap_metrics(c)
        b = boundary_metrics(*surface_distances(pred, ref, (1.0, 1.0)), tolerances_mm=(1.0,))
        if status == "both_empty":
            assert all(math.isnan(o[k]) for k in ("dice", "iou", "sensitivity", "precision"))
            assert o["specificity"] == 1.0
            assert all(math.isnan(v) for v in b.values())
        else:
            assert o["dice"] == 0.0 and o["iou"] == 0.0
            assert b["hd"] == b["hd95"] == b["assd"] == math.inf and b["nsd_1mm"] == 0.0
        if status == "ref_empty":
            assert math.isnan(o["sensitivity"]) and o["precision"] == 0.0 and o["specificity"] == 4 / 6
        if status == "pred_empty":
            assert o["sensitivity"] == 0.0 and math.isnan(o["precision"]) and o["specificity"] == 1.0


def test_evaluate_structures_multilabel_and_statuses():
    ref = np.zeros((8, 8, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4, 1:3] = 1
    pred[1:4, 2:5, 1:3] = 1  # label 1 shifted by one voxel along y
    ref[5:7, 5:7, 0:2] = 2  # label 2 only in the reference
    pred[0, 7, 3] = 3  # label 3 only in the prediction
    results = evaluate_structures(pred, ref, spacing=(1.0, 2.0, 3.0),
                                  labels={"a": 1, "b": 2, "c": 3, "d": 4}, tolerances_mm=(2.0,))
    assert [(r.label, r.value, r.status) for r in results] == [
        ("a", 1, "ok"), ("b", 2, "pred_empty"), ("c", 3, "ref_empty"), ("d", 4, "both_empty")]
    a = results[0]
    assert (a.confusion.tp, a.confusion.fp, a.confusion.fn) == (12, 6, 6)
    assert a.confusion.tn == ref.size - 24
    assert a.metrics["dice"] == pytest.approx(24 / 36)
    # the same values as the single-structure functions on the full masks
    assert a.metrics["hd"] == pytest.approx(hausdorff_distance(pred == 1, ref == 1, (1.0, 2.0, 3.0)))
    assert a.metrics["assd"] == pytest.approx(average_surface_distance(pred == 1, ref == 1, (1.0, 2.0, 3.0)))
    assert a.metrics["hd"] == 2.0  # shifted one voxel of 2 mm
    assert results[1].metrics["hd"] == math.inf and results[1].metrics["nsd_2mm"] == 0.0
    assert math.isnan(results[3].metrics["dice"]) and results[3].confusion.tn == ref.size
    row = a.row("case_1")
    assert list(row)[:8] == ["case", "label", "value", "status", "tp", "fp", "fn", "tn"]


def test_evaluate_structures_default_labels_and_undeclared_values():
    from medseg.errors import LabelError

    ref = np.zeros((6, 6), np.uint8)
    ref[1:3, 1:3] = 2
    pred = ref.copy()
    pred[4, 4] = 5
    results = evaluate_structures(pred, ref, spacing=(1.0, 1.0))
    assert [(r.label, r.status) for r in results] == [("label_2", "ok"), ("label_5", "ref_empty")]
    assert results[0].metrics["dice"] == 1.0 and results[0].metrics["hd"] == 0.0
    with pytest.raises(LabelError, match=r"pred.nii.gz: label values \[5\] are not in the label list \(x=2\)"):
        evaluate_structures(pred, ref, (1.0, 1.0), labels={"x": 2}, sources=("pred.nii.gz", "ref.nii.gz"))


def test_torch_path_matches_scipy_on_cpu():
    rng = np.random.default_rng(3)
    pred = ndimage.gaussian_filter(rng.random((14, 12, 9)), 1.5) > 0.5
    ref = ndimage.gaussian_filter(rng.random((14, 12, 9)), 1.5) > 0.5
    spacing = (0.7, 1.3, 2.9)
    scipy_d = surface_distances(pred, ref, spacing, backend="scipy")
    torch_d = surface_distances(pred, ref, spacing, device="cpu", backend="torch")
    for a, b in zip(scipy_d, torch_d):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # chunking (several query chunks) gives the same nearest distances
    import torch

    from medseg.metrics.surface import _nearest_torch

    q, t = torch.rand(50, 3, dtype=torch.float64), torch.rand(40, 3, dtype=torch.float64)
    np.testing.assert_allclose(_nearest_torch(q, t, max_pairs=100).numpy(), torch.cdist(q, t).amin(1).numpy(), rtol=1e-12)


def test_invalid_arguments():
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        surface_distances(a, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(a, a, percentile=101)
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(a, a, -1.0)
    with pytest.raises(ValueError, match="backend"):
        surface_distances(a, a, backend="gpu")


def test_fortran_ordered_maps_give_the_same_results():
    """NIfTI arrays arrive Fortran-ordered and are scanned transposed: nothing may change."""
    rng = np.random.default_rng(5)
    ref = (ndimage.gaussian_filter(rng.random((9, 11, 7)), 1.2) * 20).astype(np.uint8) % 3
    pred = np.where(rng.random(ref.shape) < 0.2, 1, ref).astype(np.uint8)
    spacing = (0.6, 1.1, 3.0)
    c_order = evaluate_structures(pred, ref, spacing, tolerances_mm=(1.0,))
    f_order = evaluate_structures(np.asfortranarray(pred), np.asfortranarray(ref), spacing, tolerances_mm=(1.0,))
    assert [r.row("x") for r in c_order] == [r.row("x") for r in f_order]
    assert len(c_order) == 2 and all(r.status == "ok" for r in c_order)
