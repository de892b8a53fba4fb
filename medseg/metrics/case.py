"""All metrics of every structure of one case, from two label maps on the same grid.

One pass over each label map (``scipy.ndimage.find_objects``) gives every label's bounding box; each
structure is then evaluated inside the union of its two boxes only: voxel counts, borders, and the
two directed surface-distance arrays from which every boundary metric is derived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medseg.metrics.labels import check_declared, default_label_name
from medseg.metrics.overlap import OVERLAP_METRICS, Confusion, overlap_metrics
from medseg.metrics.surface import BOUNDARY_METRICS, boundary_metrics, border_distances, nsd_column

STATUSES = ("ok", "ref_empty", "pred_empty", "both_empty")


def metric_names(tolerances_mm: Sequence[float]) -> list[str]:
    """Metric columns in report order: overlap, boundary, then NSD per tolerance."""
    return [*OVERLAP_METRICS, *BOUNDARY_METRICS, *(nsd_column(t) for t in tolerances_mm)]


def status_of(c: Confusion) -> str:
    """``ok``, ``ref_empty``, ``pred_empty`` or ``both_empty`` from the voxel counts."""
    has_ref, has_pred = c.tp + c.fn > 0, c.tp + c.fp > 0
    return "ok" if has_ref and has_pred else "pred_empty" if has_ref else "ref_empty" if has_pred else "both_empty"


@dataclass
class StructureResult:
    """The metrics of one structure (label value) in one case."""

    label: str
    value: int
    confusion: Confusion
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return status_of(self.confusion)

    def row(self, case: str) -> dict:
        """A flat report row: case, label, value, status, TP/FP/FN/TN, then the metrics."""
        c = self.confusion
        return {"case": case, "label": self.label, "value": self.value, "status": self.status,
                "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn, **self.metrics}


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def present_values(boxes: list) -> set[int]:
    """Label values that ``find_objects`` found (index + 1 of each non-None box)."""
    return {i + 1 for i, box in enumerate(boxes) if box is not None}


def both_empty(label: str, value: int, n_voxels: int, tolerances_mm: Sequence[float]) -> StructureResult:
    """The result of a structure absent from both prediction and reference."""
    c = Confusion(0, 0, 0, n_voxels)
    return StructureResult(label, value, c, {**overlap_metrics(c), **boundary_metrics(np.zeros(0), np.zeros(0), tolerances_mm)})


def evaluate_structures(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                        labels: Mapping[str, int] | None = None, tolerances_mm: Sequence[float] = (1.0, 2.0),
                        device="cpu", backend: str | None = None,
                        sources: tuple[str, str] = ("prediction", "reference")) -> list[StructureResult]:
    """Evaluate every structure of one case.

    pred, ref: non-negative integer label maps ``(*spatial)`` (2D or 3D) on the same grid.
    spacing: voxel size in mm per spatial axis (the reference's). labels: ``{name: value}`` to evaluate;
    a map holding a nonzero value that ``labels`` does not declare raises LabelError naming its source
    (``sources``: names of pred and ref for messages). None evaluates every nonzero value present in
    either map (named ``label_<value>``). Returns one :class:`StructureResult` per label, ordered by value.
    """
    from scipy import ndimage

    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {ref.shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    pred, ref = (a.view(np.uint8) if a.dtype == np.bool_ else a for a in (pred, ref))
    if pred.flags.f_contiguous and ref.flags.f_contiguous and not ref.flags.c_contiguous:
        # Fortran-ordered maps (as NIfTI stores them): scan their C-ordered transposes, which is several
        # times faster; every metric is unchanged when axes and spacing are permuted together.
        pred, ref, spacing = pred.T, ref.T, spacing[::-1].copy()
    pred_boxes, ref_boxes = ndimage.find_objects(pred), ndimage.find_objects(ref)
    if labels is None:
        values = sorted(present_values(pred_boxes) | present_values(ref_boxes))
        labels = {default_label_name(v): v for v in values}
    elif any(int(v) <= 0 for v in labels.values()):
        raise ValueError(f"label values must be positive integers, got {dict(labels)}")
    else:
        for boxes, source in zip((pred_boxes, ref_boxes), sources):
            check_declared(present_values(boxes), labels, source)
    results = []
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        box = _union_box(pred_boxes[value - 1] if value <= len(pred_boxes) else None,
                         ref_boxes[value - 1] if value <= len(ref_boxes) else None)
        if box is None:
            results.append(both_empty(name, value, ref.size, tolerances_mm))
            continue
        p, r = pred[box] == value, ref[box] == value
        n_pred, n_ref, n_both = np.count_nonzero(p), np.count_nonzero(r), np.count_nonzero(p & r)
        c = Confusion.from_counts(n_pred, n_ref, n_both, ref.size)
        distances = border_distances(p, r, spacing, device=device, backend=backend)
        results.append(StructureResult(name, value, c, {**overlap_metrics(c), **boundary_metrics(*distances, tolerances_mm)}))
    return results
