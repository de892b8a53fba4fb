"""Evaluating prediction files against reference files: matching, loading, checking, metrics per case.

``evaluate(pred, ref)`` takes two files or two folders and returns an :class:`EvaluationReport` holding
one row per case and structure, the cases found on one side only, and the summary (``report.py``).
Cases run in parallel processes with ``workers > 1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg import progress
from medseg.errors import ConfigError, GeometryError
from medseg.io.volume import Volume
from medseg.metrics.case import StructureResult, both_empty, evaluate_structures, metric_names
from medseg.metrics.labels import label_array, parse_labels
from medseg.metrics.matching import list_cases, match_cases

GRID_ATOL_MM = 1e-3
"""Two grids are the same when shapes agree and affines agree within this many mm."""

CaseHook = Callable[[str, Volume, Volume, "Volume | None"], None]
"""``hook(case, pred, ref, image)`` called once per case with the volumes as evaluated (the prediction
already on the reference grid; ``image`` when an images folder was given). Runs in the worker
process, so with ``workers > 1`` it must be picklable (a module-level function). The hook for
overlay pictures (``evaluate --overlay``) plugs in here."""


@dataclass
class EvaluationReport:
    """Per-case, per-structure rows and what did not match. ``summary()`` gives the statistics."""

    pred: str
    ref: str
    labels: dict[str, int]
    tolerances_mm: tuple[float, ...]
    rows: list[dict]
    missing: list[str] = field(default_factory=list)  # references without a prediction
    extra: list[str] = field(default_factory=list)  # predictions without a reference

    @property
    def metrics(self) -> list[str]:
        return metric_names(self.tolerances_mm)

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(row["case"] for row in self.rows))

    def summary(self) -> dict:
        from medseg.metrics.report import summarize

        return summarize(self)


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a CUDA GPU is usable, else ``cpu``; ``cpu`` and ``cuda[:N]`` as given,
    checked against the machine by ``medseg.devices.resolve_device`` (training's and prediction's rules).

    Surface distances need float64, so other torch devices (MPS) are refused. ``auto`` imports torch
    only where an NVIDIA driver is present, so the CPU path starts fast.
    """
    device = str(device).lower()
    if device == "cpu":
        return device
    if device == "auto":
        if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")):
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        from medseg.devices import resolve_device as checked_device

        return str(checked_device(device))
    raise ConfigError(f"device {device!r} is not supported for metrics (use auto, cpu or cuda)")


def to_reference_grid(pred: Volume, ref: Volume) -> Volume:
    """``pred`` resampled with nearest neighbour onto ``ref``'s grid (an exact permutation/flip when
    both grids sample the same points)."""
    from medseg.io import resample_to_grid

    return resample_to_grid(pred, ref, order=0)


def _grid_mismatch(pred: Volume, ref: Volume) -> str:
    spacing = lambda v: "×".join(f"{s:.4g}" for s in v.spacing)  # noqa: E731
    if pred.spatial_shape != ref.spatial_shape:
        what = f"shape {pred.spatial_shape} vs {ref.spatial_shape}"
    elif not np.allclose(pred.spacing, ref.spacing, atol=GRID_ATOL_MM):
        what = f"spacing {spacing(pred)} vs {spacing(ref)} mm"
    else:
        what = f"orientation/origin differ ({pred.axcodes()} vs {ref.axcodes()})"
    return f"grid differs from the reference {ref.source}: {what} (--resample-pred resamples the prediction)"


@dataclass(frozen=True)
class _CaseJob:
    case: str
    pred: Path
    ref: Path
    labels: Mapping[str, int] | None
    tolerances_mm: tuple[float, ...]
    device: str
    backend: str | None
    resample_pred: bool
    image: Path | None = None
    hook: CaseHook | None = None


def _run_case(job: _CaseJob) -> tuple[str, list[StructureResult], int]:
    """Load, check and evaluate one case; returns (case, results, number of voxels)."""
    from medseg.io import read_volume

    ref_vol = read_volume(job.ref, as_label=True)
    pred_vol = read_volume(job.pred, as_label=True, reference=ref_vol)
    if not pred_vol.same_grid(ref_vol, atol=GRID_ATOL_MM):
        if not job.resample_pred:
            raise GeometryError(_grid_mismatch(pred_vol, ref_vol), job.pred)
        pred_vol = to_reference_grid(pred_vol, ref_vol)
    ref, pred = label_array(ref_vol), label_array(pred_vol)
    results = evaluate_structures(pred, ref, ref_vol.spacing, job.labels, job.tolerances_mm, device=job.device,
                                  backend=job.backend, sources=(str(job.pred), str(job.ref)))
    if job.hook is not None:
        image = read_volume(job.image) if job.image is not None else None
        job.hook(job.case, pred_vol, ref_vol, image)
    return job.case, results, int(ref.size)


def _process_context():
    """``fork`` (workers start at once, modules already loaded) while torch is not loaded: torch starts
    thread pools and CUDA, which a forked child must not inherit; then ``forkserver`` (or ``spawn``)."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    method = "fork" if "fork" in methods and "torch" not in sys.modules else "forkserver" if "forkserver" in methods else "spawn"
    return multiprocessing.get_context(method)


def _run_all(jobs: list[_CaseJob], workers: int) -> list[tuple[str, list[StructureResult], int]]:
    """Run the jobs (in ``workers`` processes when > 1), in job order; the first error stops the rest."""
    with progress.bar("evaluating", len(jobs)) as advance:
        if workers <= 1 or len(jobs) <= 1:
            outcomes = []
            for job in jobs:
                outcomes.append(_run_case(job))
                advance(1)
            return outcomes
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_process_context()) as pool:
            futures = [pool.submit(_run_case, job) for job in jobs]
            for future in futures:
                future.add_done_callback(lambda _: advance(1))
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                for future in pending:
                    future.cancel()
                raise failed[0].exception()
            return [future.result() for future in futures]


def evaluate(pred: str | Path, ref: str | Path, labels: Mapping[str, int] | str | Path | None = None,
             tolerances_mm: Sequence[float] = (1.0, 2.0), workers: int = 1, device: str = "cpu",
             backend: str | None = None, resample_pred: bool = False, images: str | Path | None = None,
             case_hook: CaseHook | None = None) -> EvaluationReport:
    """Evaluate predictions against references.

    pred, ref: two label files, or two folders whose files are paired by case name (missing and extra
    cases are listed in the report). labels: ``{name: value}``, a dataset.json path or ``"liver=1,..."``;
    None evaluates every nonzero value found in any file. tolerances_mm: NSD tolerances. device:
    ``cpu``, ``cuda`` or ``auto`` (surface distances on the GPU). resample_pred: resample a prediction
    whose grid differs from its reference (nearest neighbour) instead of refusing it. images, case_hook:
    see :data:`CaseHook`. Distances use the reference's spacing.
    """
    tolerances = tuple(float(t) for t in tolerances_mm)
    if not tolerances or not all(np.isfinite(t) and t >= 0 for t in tolerances):
        raise ConfigError(f"NSD tolerances must be finite numbers >= 0 mm, got {list(tolerances_mm)}")
    label_map = parse_labels(labels) if labels is None or isinstance(labels, (str, Path)) else dict(labels)
    match = match_cases(pred, ref)
    image_files: dict[str, Path] = {}
    if images is not None:  # a folder of scans paired by case name, or the one scan of a file pair
        images = Path(images)
        image_files = list_cases(images) if images.is_dir() else {case: images for case, _, _ in match.pairs}
    device = resolve_device(device)
    jobs = [_CaseJob(case, p, r, label_map, tolerances, device, backend, resample_pred, image_files.get(case), case_hook)
            for case, p, r in match.pairs]
    outcomes = _run_all(jobs, workers)
    if label_map is None:  # every value found anywhere; cases without it get both-empty rows
        label_map = {res.label: res.value for _, results, _ in outcomes for res in results}
        label_map = dict(sorted(label_map.items(), key=lambda kv: kv[1]))
    rows = []
    for case, results, n_voxels in outcomes:
        by_value = {res.value: res for res in results}
        for name, value in label_map.items():
            res = by_value.get(value) or both_empty(name, value, n_voxels, tolerances)
            rows.append(res.row(case))
    return EvaluationReport(str(pred), str(ref), label_map, tolerances, rows, match.missing, match.extra)


__all__ = ["EvaluationReport", "CaseHook", "evaluate", "resolve_device", "to_reference_grid"]
