"""`medseg ingest`: turn a folder of scans and label maps into a training dataset under data/NAME/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medseg.cli import app, run_command


def _split_names(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


@app.command("ingest")
def ingest_command(
    source: Annotated[Optional[Path], typer.Argument(
        help="Dataset folder: Decathlon/nnU-Net raw (dataset.json, imagesTr, labelsTr), a folder with images/ "
             "and masks/, a folder of case folders (with --channels), or one DICOM study/case folder.")] = None,
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name: writes DATA_DIR/NAME/.")] = ...,
    images: Annotated[Optional[Path], typer.Option(
        help="Image folder (files or DICOM series folders), relative to SOURCE when given.")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Label folder matched to --images by file stem (or shared leading name part, e.g. 21_training ↔ 21_manual1).")] = None,
    channels: Annotated[Optional[str], typer.Option(
        help="Per-case folders: comma-separated entry names (file, stem, glob or unique part) giving the "
             "channels, e.g. Flair_subtrMeanDivStd,T1c_subtrMeanDivStd or T1post,FLAIRreg.")] = None,
    label_file: Annotated[Optional[str], typer.Option(
        "--label-file", help="Per-case folders: the entry holding the label map, e.g. OTMultiClass or MaskTumor.")] = None,
    modality: Annotated[Optional[str], typer.Option(help="CT | MR | 2D (default: detected).")] = None,
    labels_json: Annotated[Optional[Path], typer.Option(
        "--labels-json", help='Label names: {"background": 0, "liver": 1} or {"0": "background", "1": "liver"}.')] = None,
    target_spacing: Annotated[str, typer.Option(
        "--target-spacing", help="'auto' (median; 10th percentile on a thick axis) or X,Y,Z in mm (RAS order).")] = "auto",
    folds: Annotated[int, typer.Option(help="Cross-validation folds in splits.json.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes over cases.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild an existing dataset of this name.")] = False,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Leave out cases that fail a check (listed in the summary) instead of stopping.")] = False,
    series_uid: Annotated[Optional[str], typer.Option(
        "--series-uid", help="Pick this SeriesInstanceUID in DICOM folders that hold several series.")] = None,
    max_cases: Annotated[Optional[int], typer.Option(
        "--max-cases", help="Ingest only the first N cases (sorted by case id).")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where datasets live.")] = Path("data"),
) -> None:
    """Check every image/label pair, fingerprint the dataset, plan its preprocessing, split it into folds,
    and write preprocessed arrays under DATA_DIR/NAME/."""
    from medseg.ingest import ingest

    out = run_command(
        ingest, source, name, data_root=data_dir, images=images, labels=labels, channels=_split_names(channels),
        label_file=label_file, modality=modality, target_spacing=target_spacing, label_names=labels_json,
        folds=folds, seed=seed, workers=workers, overwrite=overwrite, skip_bad=skip_bad, series_uid=series_uid,
        max_cases=max_cases,
    )
    typer.echo(str(out))
