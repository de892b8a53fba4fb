"""``predict_files``: what ``medseg predict`` does, as a library call (the CLI only parses options).

Order of work, so that a bad run fails before it writes anything: resolve the model (the latest run in
``models_dir`` unless given) and load it → gather the cases from the inputs → take this process's
shard → plan every output path and refuse existing ones (unless ``overwrite``) → check that each DICOM
folder holds one series (or the one ``series_uid`` names) → predict and write
each case (each file atomically).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.inference.crf import CRFConfig


@dataclass
class PredictSummary:
    """What was written: the checkpoint used, the settings line, one row per case."""

    checkpoint: Path
    settings: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    shard: tuple[int, int] | None = None
    total_cases: int = 0
    seconds: float = 0.0
    overlay_index: Path | None = None


def resolve_model(model: str | Path | None, models_dir: str | Path = "models") -> Path:
    """``model`` as given, else the most recent run in ``models_dir``; a clear error when there is none."""
    from medseg.runs import find_latest_run

    if model is not None:
        return Path(model)
    latest = find_latest_run(models_dir)
    if latest is None:
        raise ConfigError("no trained model found: train one with `medseg train DATASET` or pass --model models/RUN",
                          models_dir)
    return latest


def check_dicom_series(cases: Sequence[Any], series_uid: str | None) -> None:
    """Before predicting: each DICOM case must hold one image series, or the one ``series_uid`` names
    (the error lists the series: UID, description, slice count; never patient data)."""
    from medseg import progress
    from medseg.errors import InputError

    dicom_cases = [c for c in cases if c.kind == "dicom"]
    if not dicom_cases:
        return
    from medseg.io.dicom import list_series

    was_enabled = progress.enabled()
    progress.enable(False)  # a header scan: no bar before the run starts
    try:
        for case in dicom_cases:
            series = list_series(case.source)
            listing = "; ".join(f"{s.uid} '{s.description}' ({s.num_slices} slices)" for s in series)
            if not series:
                raise InputError("no DICOM image series found in this folder", case.source)
            if series_uid is None and len(series) > 1:
                raise InputError(f"holds {len(series)} DICOM series; choose one with --series-uid: {listing}",
                                 case.source)
            if series_uid is not None and series_uid not in {s.uid for s in series}:
                raise InputError(f"no series with SeriesInstanceUID {series_uid}; found: {listing}", case.source)
    finally:
        progress.enable(was_enabled)


def predict_files(
    inputs: Sequence[str | Path],
    output: str | Path = "predictions",
    *,
    model: str | Path | None = None,
    models_dir: str | Path = "models",
    device: str = "auto",
    tta: bool = True,
    scales: Sequence[float] | str = (1.0,),
    flips: str = "all",
    crf: bool = False,
    crf_config: CRFConfig | None = None,
    overlap: float = 0.5,
    batch_size: int | None = None,
    keep_largest: bool = False,
    save_probabilities: bool = False,
    save_uncertainty: bool = False,
    uncertainty: str = "entropy",
    fmt: str = "nifti",
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
    series_uid: str | None = None,
    channels: Sequence[str] | None = None,
    whole_image_factor: float = 0.0,
    overlay: str | Path | None = None,
    amp: bool = True,
) -> PredictSummary:
    """Predict every input into ``output`` and return a :class:`PredictSummary` (see ``medseg predict``).

    ``overlay``: a folder for one PNG per case (prediction contours on the scan) and an ``index.html``.
    """
    from medseg import progress
    from medseg.inference.inputs import check_outputs, gather_cases, output_paths, parse_shard, shard_cases
    from medseg.inference.predictor import Predictor

    start = time.perf_counter()
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else tuple(shard)
    run = resolve_model(model, models_dir)
    predictor = Predictor(run, device=device, tta=tta, scales=scales, flips=flips, crf=crf, crf_config=crf_config,
                          overlap=overlap, batch_size=batch_size, keep_largest=keep_largest, uncertainty=uncertainty,
                          whole_image_factor=whole_image_factor, amp=amp)
    summary = PredictSummary(checkpoint=predictor.checkpoint_path, settings=predictor.describe(), shard=shard)
    all_cases = gather_cases(inputs, predictor.num_channels, channels)
    summary.total_cases = len(all_cases)
    cases = shard_cases(all_cases, shard)
    planned = {c.name: output_paths(c, output, fmt, save_probabilities, save_uncertainty) for c in cases}
    check_outputs(planned, cases, overwrite)
    check_dicom_series(cases, series_uid)
    if overlay is not None:
        from medseg.overlays import check_overlay_folder

        check_overlay_folder(overlay, overwrite)
    with progress.bar("cases", len(cases)) as advance:
        for case in cases:
            summary.rows.append(_predict_case(predictor, case, planned[case.name], probabilities=save_probabilities,
                                              uncertainty=save_uncertainty, series_uid=series_uid, overwrite=overwrite,
                                              overlay=overlay))
            advance(1)
    if overlay is not None:
        from medseg.overlays import write_index

        entries = [{"case": row["case"], "png": Path(overlay) / f"{row['case']}.png"} for row in summary.rows]
        summary.overlay_index = write_index(entries, overlay, title="medseg predictions")
    summary.seconds = time.perf_counter() - start
    return summary


def _predict_case(predictor, case, paths: dict[str, Path], *, probabilities: bool, uncertainty: bool,
                  series_uid: str | None, overwrite: bool, overlay: str | Path | None = None) -> dict[str, Any]:
    """Predict one case and write its files; returns its summary row."""
    from medseg.inference.export import write_prediction

    source = case.paths if case.kind != "dicom" else case.source
    prediction = predictor.predict(source, probabilities=probabilities, uncertainty=uncertainty,
                                   series_uid=series_uid, case=case.name)
    written = write_prediction(prediction, paths, case, predictor.labels, overwrite=overwrite, series_uid=series_uid)
    if overlay is not None:
        from medseg.overlays import render_overlay

        names = {name: value for name, value in predictor.labels.items() if value != 0}
        written.append(render_overlay(prediction.image, Path(overlay) / f"{case.name}.png", prediction=prediction.labels,
                                      title=case.name, label_names=names))
    counts = np.bincount(prediction.labels.array.ravel().astype(np.int64))
    present = {name: int(counts[v]) for name, v in predictor.labels.items() if 0 < v < len(counts) and counts[v]}
    return {"case": case.name, "outputs": [str(p) for p in written], "shape": list(prediction.labels.spatial_shape),
            "voxels": present, "seconds": round(prediction.seconds, 3)}
