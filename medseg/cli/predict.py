"""`medseg predict`: label maps for scans with a trained run (sliding window, TTA, dense CRF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medseg.cli import app, run_command

INPUT_HELP = (
    "NIfTI/NRRD files, 2D images, folders of them, or DICOM series folders. Multi-channel models: "
    "CASE_0000.nii.gz, CASE_0001.nii.gz... are grouped by case, a single 4D file holds all channels, "
    "or --channels picks each channel's file in case folders."
)


@app.command("predict")
def predict_command(
    inputs: Annotated[list[Path], typer.Argument(help=INPUT_HELP, show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o",
        help="Output folder: OUT/<case>.nii.gz (.png for 2D images).")] = Path("predictions"),
    model: Annotated[Optional[Path], typer.Option(
        help="Run folder (models/RUN) or checkpoint file. Default: the latest run in --models-dir.")] = None,
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Where runs live.")] = Path("models"),
    device: Annotated[str, typer.Option(help="auto (CUDA, MPS, CPU) | cpu | cuda | cuda:N | mps.")] = "auto",
    tta: Annotated[bool, typer.Option("--tta/--no-tta",
        help="Test-time augmentation: --scales × --flips, probabilities averaged.")] = True,
    scales: Annotated[str, typer.Option(help="TTA scales of the preprocessed image, e.g. 0.75,1,1.25.")] = "1",
    flips: Annotated[str, typer.Option(
        help="TTA flips: all (every axis combination) | inplane (first two axes) | none.")] = "all",
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Dense-CRF refinement of uncertain regions.")] = False,
    crf_iterations: Annotated[Optional[int], typer.Option("--crf-iterations", help="Mean-field iterations.")] = None,
    crf_mode: Annotated[str, typer.Option("--crf-mode",
        help="auto (3D for volumes) | 2d (per axial slice) | 3d.")] = "auto",
    crf_gaussian_mm: Annotated[Optional[float], typer.Option("--crf-gaussian-mm",
        help="Smoothness kernel width (mm).")] = None,
    crf_gaussian_weight: Annotated[Optional[float], typer.Option("--crf-gaussian-weight",
        help="Smoothness kernel weight.")] = None,
    crf_bilateral_mm: Annotated[Optional[float], typer.Option("--crf-bilateral-mm",
        help="Appearance kernel width (mm).")] = None,
    crf_schan: Annotated[Optional[float], typer.Option("--crf-schan",
        help="Appearance kernel intensity width (channel standard deviations).")] = None,
    crf_bilateral_weight: Annotated[Optional[float], typer.Option("--crf-bilateral-weight",
        help="Appearance kernel weight.")] = None,
    keep_largest: Annotated[bool, typer.Option("--keep-largest",
        help="Keep only the largest connected component of each label.")] = False,
    save_probabilities: Annotated[bool, typer.Option("--save-probabilities",
        help="Also write <case>_probabilities.nii.gz (one channel per label).")] = False,
    save_uncertainty: Annotated[bool, typer.Option("--save-uncertainty",
        help="Also write <case>_uncertainty.nii.gz (see --uncertainty).")] = False,
    uncertainty: Annotated[str, typer.Option(
        help="entropy (of the mean probabilities, normalised to [0, 1]) | variance (across TTA members).")] = "entropy",
    fmt: Annotated[str, typer.Option("--format", help="nifti | dicom-seg (DICOM series inputs only).")] = "nifti",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    shard: Annotated[Optional[str], typer.Option(
        help="I/N: predict every N-th case of the name-sorted inputs starting at I (0-based), to split "
             "work across processes or GPUs.")] = None,
    series_uid: Annotated[Optional[str], typer.Option("--series-uid",
        help="Pick this SeriesInstanceUID in DICOM folders that hold several series.")] = None,
    channels: Annotated[Optional[str], typer.Option(
        help="Case folders: comma-separated globs giving each channel's file, e.g. 'Flair*,T1c*'.")] = None,
    overlap: Annotated[float, typer.Option(help="Sliding-window overlap in [0, 1).")] = 0.5,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size",
        help="Windows per forward pass (default 2 for 3D networks, 16 for 2D).")] = None,
    whole_image_factor: Annotated[float, typer.Option("--whole-image-factor",
        help="Predict a scan in one window when it holds at most this many patches' voxels, e.g. 4 "
             "(faster on small scans; 0: always patch windows).")] = 0.0,
    overlay: Annotated[Optional[Path], typer.Option("--overlay",
        help="Folder for overlay PNGs (prediction contours on axial, coronal and sagittal slices) and an index.html.")] = None,
    amp: Annotated[bool, typer.Option("--amp/--no-amp",
        help="bf16 where the device runs it natively (GPUs, CPUs with AVX512-BF16 or AMX); --no-amp: fp32.")] = True,
) -> None:
    """Predict a label map for each input in the input's exact geometry (same shape, affine, spacing)."""
    import dataclasses

    from medseg.inference.crf import CRFConfig
    from medseg.inference.inputs import parse_channels
    from medseg.inference.runner import predict_files

    crf_options = {"iterations": crf_iterations, "mode": crf_mode, "gaussian_sdims_mm": crf_gaussian_mm,
                   "gaussian_compat": crf_gaussian_weight, "bilateral_sdims_mm": crf_bilateral_mm,
                   "bilateral_schan": crf_schan, "bilateral_compat": crf_bilateral_weight}
    chosen = {k: v for k, v in crf_options.items() if v is not None}
    crf_config = run_command(lambda: dataclasses.replace(CRFConfig(), **chosen))
    summary = run_command(
        predict_files, inputs, output, model=model, models_dir=models_dir, device=device, tta=tta, scales=scales,
        flips=flips, crf=crf, crf_config=crf_config, overlap=overlap, batch_size=batch_size, keep_largest=keep_largest,
        save_probabilities=save_probabilities, save_uncertainty=save_uncertainty, uncertainty=uncertainty, fmt=fmt,
        overwrite=overwrite, shard=shard, series_uid=series_uid, channels=parse_channels(channels),
        whole_image_factor=whole_image_factor, overlay=overlay, amp=amp,
    )
    _print_summary(summary)


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"model: {summary.checkpoint}")
    console.print(f"settings: {summary.settings}")
    if summary.shard is not None:
        i, n = summary.shard
        console.print(f"shard {i}/{n}: {len(summary.rows)} of {summary.total_cases} case(s)")
    table = Table(title=f"{len(summary.rows)} prediction(s) in {summary.seconds:.1f} s")
    for column in ("case", "written", "shape", "labels (voxels)", "seconds"):
        table.add_column(column, overflow="fold")
    for row in summary.rows:
        voxels = ", ".join(f"{name} {count}" for name, count in row["voxels"].items()) or "none"
        table.add_row(row["case"], "\n".join(row["outputs"]), "×".join(map(str, row["shape"])), voxels,
                      f"{row['seconds']:.2f}")
    console.print(table)
    if summary.overlay_index is not None:
        console.print(f"overlays: {summary.overlay_index}")
