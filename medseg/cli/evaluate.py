"""`medseg evaluate PRED GT`: overlap and boundary metrics per case and structure, with a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli import app, run_command


def _tolerances(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of millimetres (e.g. 1,2)") from None
    if not values or any(not (v >= 0 and v != float("inf")) for v in values):
        raise typer.BadParameter(f"{text!r}: tolerances must be finite numbers >= 0")
    return values


def _evaluate(pred: Path, gt: Path, labels: Optional[str], tolerances: list[float], output: Optional[Path],
              plots: Optional[Path], workers: int, device: str, resample_pred: bool, overwrite: bool,
              images: Optional[Path] = None, overlay: Optional[Path] = None) -> None:
    from medseg.metrics.case import metric_names
    from medseg.metrics.evaluation import evaluate
    from medseg.metrics.report import check_outputs, output_paths, print_table, write_outputs

    from medseg import progress
    from medseg.metrics.labels import parse_labels
    from medseg.overlays import OverlayHook, check_overlay_folder, index_from_report

    check_outputs(output_paths(output, plots, metric_names(tolerances)), overwrite)  # fail before the work
    hook = None
    if overlay is not None:
        check_overlay_folder(overlay, overwrite)
        hook = OverlayHook(overlay, parse_labels(labels) if labels else None)
    report = evaluate(pred, gt, labels=labels, tolerances_mm=tolerances, workers=workers, device=device,
                      resample_pred=resample_pred, images=images, case_hook=hook)
    print_table(report)
    for path in write_outputs(report, output, plots, overwrite=overwrite):
        progress.info(f"wrote {path}")
    if overlay is not None:
        progress.info(f"wrote overlays: {index_from_report(report, overlay)}")


@app.command("evaluate")
def evaluate_command(
    pred: Path = typer.Argument(..., help="Predicted label map, or a folder of them (paired with GT by case name)."),
    gt: Path = typer.Argument(..., help="Reference label map, or a folder of them."),
    labels: Optional[str] = typer.Option(
        None, "--labels", help="dataset.json, or NAME=VALUE pairs like liver=1,spleen=2 (default: every nonzero label found)."
    ),
    nsd_tolerance: str = typer.Option("1,2", "--nsd-tolerance", help="NSD tolerance(s) in mm, comma-separated."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="report.csv (rows, plus a sibling .json summary) or report.json (summary and rows)."
    ),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for box plots (one PNG per metric)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases evaluated in parallel processes."),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, cuda or auto (CUDA when available): where surface distances are computed. "
        "The CPU is the default: importing torch alone takes longer than the CPU needs for a whole CT."
    ),
    resample_pred: bool = typer.Option(
        False, "--resample-pred", help="Resample predictions onto the reference grid (nearest neighbour) instead of refusing them."
    ),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Scan(s) matching GT by case name (CASE.nii.gz or CASE_0000.nii.gz), drawn under --overlay contours."
    ),
    overlay: Optional[Path] = typer.Option(
        None, "--overlay", help="Folder for overlay PNGs (prediction and reference contours) and an index.html."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing report files."),
) -> None:
    """Score predictions against references: Dice, IoU, sensitivity, specificity, precision, HD, HD95, ASSD, NSD.

    Distances are in mm (the reference's spacing). Empty structures are reported by a status column
    (ok, ref_empty, pred_empty, both_empty); summary statistics use finite values only.
    """
    run_command(_evaluate, pred, gt, labels, _tolerances(nsd_tolerance), output, plots, workers, device,
                resample_pred, overwrite, images, overlay)
