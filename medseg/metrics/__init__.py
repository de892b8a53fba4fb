"""Segmentation metrics: pure functions on masks, per-case evaluation of label maps, folder evaluation.

Definitions and the empty-structure rule: docs/metrics.md. Distances are in mm from the voxel spacing.

Pure functions (boolean masks ``(*spatial)``, 2D or 3D):
    confusion(pred, ref) -> Confusion;  overlap_metrics(confusion) -> {dice, iou, sensitivity, specificity, precision}
    surface_distances(pred, ref, spacing) -> (d_pred_to_ref, d_ref_to_pred)
    boundary_metrics(d_pred_to_ref, d_ref_to_pred, tolerances_mm) -> {hd, hd95, assd, nsd_<t>mm}
    hausdorff_distance, average_surface_distance, normalized_surface_dice
Label maps and files:
    evaluate_structures(pred, ref, spacing, labels, tolerances_mm) -> [StructureResult]
    evaluate(pred_path_or_folder, ref_path_or_folder, ...) -> EvaluationReport
"""

from medseg.metrics.case import STATUSES, StructureResult, evaluate_structures, metric_names
from medseg.metrics.evaluation import CaseHook, EvaluationReport, evaluate, resolve_device
from medseg.metrics.labels import parse_labels, read_dataset_labels
from medseg.metrics.matching import case_name, match_cases
from medseg.metrics.overlap import Confusion, confusion, overlap_metrics
from medseg.metrics.surface import (
    average_surface_distance,
    border,
    boundary_metrics,
    hausdorff_distance,
    normalized_surface_dice,
    surface_distances,
)

__all__ = [
    "STATUSES", "StructureResult", "evaluate_structures", "metric_names",
    "CaseHook", "EvaluationReport", "evaluate", "resolve_device",
    "parse_labels", "read_dataset_labels", "case_name", "match_cases",
    "Confusion", "confusion", "overlap_metrics",
    "average_surface_distance", "border", "boundary_metrics", "hausdorff_distance", "normalized_surface_dice",
    "surface_distances",
]
