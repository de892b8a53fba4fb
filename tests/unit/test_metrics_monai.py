"""Property tests: every metric equals MONAI's on random 2D and 3D masks with random anisotropic spacing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medseg.metrics import boundary_metrics, confusion, evaluate_structures, overlap_metrics, surface_distances

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")

TOLERANCES = (0.5, 1.0, 2.0)


def monai_values(pred: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    """The same metric set from MONAI's functions (one binary channel, background included)."""
    p = torch.as_tensor(pred)[None, None].float()
    r = torch.as_tensor(ref)[None, None].float()
    kw = {"include_background": True, "spacing": list(spacing)}
    cm = monai_metrics.get_confusion_matrix(p, r, include_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "dice": monai_metrics.compute_dice(p, r, include_background=True).item(),
            "iou": monai_metrics.compute_iou(p, r, include_background=True).item(),
            "sensitivity": monai_metrics.compute_confusion_matrix_metric("sensitivity", cm).item(),
            "specificity": monai_metrics.compute_confusion_matrix_metric("specificity", cm).item(),
            "precision": monai_metrics.compute_confusion_matrix_metric("precision", cm).item(),
            "hd": monai_metrics.compute_hausdorff_distance(p, r, **kw).item(),
            "hd95": monai_metrics.compute_hausdorff_distance(p, r, percentile=95, **kw).item(),
            "assd": monai_metrics.compute_average_surface_distance(p, r, symmetric=True, **kw).item(),
        }
        for tol in TOLERANCES:
            values[f"nsd_{tol:g}mm"] = monai_metrics.compute_surface_dice(p, r, [tol], **kw).item()
    return values


def random_mask(rng: np.random.Generator, shape, kind: str, density: float) -> np.ndarray:
    if kind == "noise":
        return rng.random(shape) < density
    smooth = ndimage.gaussian_filter(rng.random(shape), 1.0)  # blob-like structures
    return smooth > np.quantile(smooth, 1 - density)


masks = st.fixed_dictionaries({
    "ndim": st.sampled_from([2, 3]),
    "sizes": st.lists(st.integers(2, 11), min_size=3, max_size=3),
    "seed": st.integers(0, 2**32 - 1),
    "kind": st.sampled_from(["noise", "blob"]),
    "density": st.floats(0.05, 0.6),
    "spacing": st.lists(st.floats(0.2, 4.0, allow_nan=False), min_size=3, max_size=3),
})


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(masks)
def test_every_metric_matches_monai(case):
    rng = np.random.default_rng(case["seed"])
    shape, spacing = tuple(case["sizes"][: case["ndim"]]), tuple(case["spacing"][: case["ndim"]])
    pred = random_mask(rng, shape, case["kind"], case["density"])
    ref = random_mask(rng, shape, case["kind"], case["density"])
    ours = {**overlap_metrics(confusion(pred, ref)),
            **boundary_metrics(*surface_distances(pred, ref, spacing), tolerances_mm=TOLERANCES)}
    theirs = monai_values(pred, ref, spacing)
    mismatched = {k: (ours[k], theirs[k]) for k in theirs if not same(ours[k], theirs[k])}
    if pred.any() and ref.any():
        assert not mismatched
    else:  # the documented differences for empty structures only
        assert set(mismatched) <= {"dice", "iou", "hd95"}


@settings(max_examples=20, deadline=None)
@given(masks)
def test_label_map_evaluation_matches_monai_per_label(case):
    """Several labels in one map: the bounding-box crops change nothing."""
    rng = np.random.default_rng(case["seed"])
    shape, spacing = tuple(case["sizes"][: case["ndim"]]), tuple(case["spacing"][: case["ndim"]])
    ref = rng.integers(0, 4, shape).astype(np.uint8) * random_mask(rng, shape, case["kind"], 0.7)
    pred = np.where(rng.random(shape) < 0.25, rng.integers(0, 4, shape), ref).astype(np.uint8)
    results = evaluate_structures(pred, ref, spacing, labels={"a": 1, "b": 2, "c": 3}, tolerances_mm=TOLERANCES)
    for res in results:
        if res.status != "ok":
            continue
        theirs = monai_values(pred == res.value, ref == res.value, spacing)
        assert all(same(res.metrics[k], theirs[k]) for k in theirs), (res.label, res.metrics, theirs)


def test_empty_cases_agree_with_monai_where_documented():
    some = np.zeros((6, 5), bool)
    some[1:4, 2:4] = True
    none = np.zeros_like(some)
    for pred, ref in ((some, none), (none, some), (none, none)):
        ours = boundary_metrics(*surface_distances(pred, ref, (1.5, 0.5)), tolerances_mm=TOLERANCES)
        theirs = monai_values(pred, ref, (1.5, 0.5))
        for key in ("hd", "assd", *(f"nsd_{t:g}mm" for t in TOLERANCES)):
            assert same(ours[key], theirs[key]), key
