"""Benchmark: the whole metric set, medseg vs MONAI, in one run.

Metrics: Dice, IoU, sensitivity, specificity, precision, HD, HD95, ASSD, NSD at 1 and 2 mm, per label.
Cases:
  big      one synthetic 512×512×300 pair (0.8×0.8×1.5 mm) with a large irregular organ and a small one,
           prediction = perturbed reference; each side as a whole process (imports, reading both
           .nii.gz files, computing): ``python -m medseg evaluate`` vs a script calling MONAI's functions.
  folder   20 smaller synthetic pairs (192×192×96): ``medseg evaluate --workers 2`` vs a MONAI loop.
  spleen   the shared spleen crop, prediction = label eroded and shifted; compute only, in process.
Values must agree (max relative difference recorded, asserted ≤ 1e-5). ``--gpu`` adds medseg on CUDA.

    .venv/bin/python benchmarks/metrics.py [--gpu] [--quick]

Writes benchmarks/results/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "metrics.json"
METRICS = ["dice", "iou", "sensitivity", "specificity", "precision", "hd", "hd95", "assd", "nsd_1mm", "nsd_2mm"]
# MONAI's get_confusion_matrix stores counts in float32 and derives FP = (N - P) - TN: on a 78 M-voxel grid
# that is off by a few voxels (FP 19592 instead of 19598), which moves precision by up to ~4e-5 relative.
# medseg's counts are exact integers, so these two are compared separately, with a looser bound.
FLOAT32_COUNT_METRICS = ("specificity", "precision")

# The peer: what a MONAI user writes for the same metric set (one binary channel per label).
MONAI_SCRIPT = r'''
import json, sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import nibabel as nib, numpy as np, torch
from monai.metrics import (compute_average_surface_distance, compute_confusion_matrix_metric, compute_dice,
                           compute_hausdorff_distance, compute_iou, compute_surface_dice, get_confusion_matrix)

def monai_metrics(pred, ref, spacing, device="cpu"):
    rows = {}
    for value in sorted(set(np.unique(ref).tolist()) - {0}):
        p = torch.as_tensor(pred == value, device=device)[None, None].float()
        r = torch.as_tensor(ref == value, device=device)[None, None].float()
        cm = get_confusion_matrix(p, r, include_background=True)
        rows[str(value)] = {
            "dice": compute_dice(p, r, include_background=True).item(),
            "iou": compute_iou(p, r, include_background=True).item(),
            "sensitivity": compute_confusion_matrix_metric("sensitivity", cm).item(),
            "specificity": compute_confusion_matrix_metric("specificity", cm).item(),
            "precision": compute_confusion_matrix_metric("precision", cm).item(),
            "hd": compute_hausdorff_distance(p, r, include_background=True, spacing=spacing).item(),
            "hd95": compute_hausdorff_distance(p, r, include_background=True, spacing=spacing, percentile=95).item(),
            "assd": compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=spacing).item(),
            "nsd_1mm": compute_surface_dice(p, r, [1.0], include_background=True, spacing=spacing).item(),
            "nsd_2mm": compute_surface_dice(p, r, [2.0], include_background=True, spacing=spacing).item(),
        }
    return rows

if __name__ == "__main__":
    pred_dir, ref_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out = {}
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        ref_img = nib.load(ref_path)
        ref = np.asarray(ref_img.dataobj)
        pred = np.asarray(nib.load(pred_dir / ref_path.name).dataobj)
        spacing = [float(s) for s in ref_img.header.get_zooms()[:3]]
        out[ref_path.name[:-7]] = monai_metrics(pred, ref, spacing)
    print(json.dumps(out))
'''


from common import machine  # noqa: E402  (benchmarks/common.py)


# --- synthetic pairs ------------------------------------------------------------------------------

def _noise(shape, rng, coarse=(16, 16, 10)) -> np.ndarray:
    from scipy import ndimage

    n = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.5)
    return ndimage.zoom(n / n.std(), [s / c for s, c in zip(shape, coarse)], order=1)


def synthetic_pair(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ref, pred) uint8 ``shape``: a large irregular blob (1) and a small ellipsoid (2); the prediction
    has a perturbed large border and a shifted, slightly larger small structure."""
    rng = np.random.default_rng(seed)
    x, y, z = (np.linspace(-1, 1, s, dtype=np.float32).reshape([-1 if i == a else 1 for i in range(3)])
               for a, s in enumerate(shape))
    c = rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    big = ((x - 0.1 - c[0]) / 0.45) ** 2 + ((y + 0.05 - c[1]) / 0.35) ** 2 + ((z - c[2]) / 0.5) ** 2 + 0.2 * _noise(shape, rng)
    small = ((x + 0.5) / 0.06) ** 2 + ((y - 0.4) / 0.07) ** 2 + ((z - 0.1) / 0.12) ** 2
    ref = np.zeros(shape, np.uint8)
    ref[big < 1] = 1
    ref[small < 1] = 2
    pred = np.zeros(shape, np.uint8)
    pred[big + 0.04 * _noise(shape, rng) < 1] = 1
    pred[np.roll(small, (2, -1, 1), axis=(0, 1, 2)) < 1.1] = 2
    return ref, pred


def write_pair(ref, pred, spacing, ref_dir: Path, pred_dir: Path, name: str) -> None:
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    for array, folder in ((ref, ref_dir), (pred, pred_dir)):
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), folder / f"{name}.nii.gz")


# --- runners -----------------------------------------------------------------------------------------

def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def run_medseg(pred: Path, ref: Path, out_json: Path, workers: int = 1) -> tuple[float, dict]:
    seconds, _ = _timed([sys.executable, "-m", "medseg", "evaluate", str(pred), str(ref), "-o", str(out_json),
                         "--device", "cpu", "--workers", str(workers), "--overwrite"])
    rows = json.loads(out_json.read_text())["cases"]
    values = {}
    for row in rows:
        values.setdefault(row["case"], {})[str(row["value"])] = {m: row[m] for m in METRICS}
    return seconds, values


def run_monai(pred_dir: Path, ref_dir: Path, script: Path) -> tuple[float, dict]:
    seconds, stdout = _timed([sys.executable, str(script), str(pred_dir), str(ref_dir)])
    return seconds, json.loads(stdout)


def max_rel_diff(a: dict, b: dict, metrics=tuple(m for m in METRICS if m not in FLOAT32_COUNT_METRICS)) -> float:
    """Largest relative difference over every case, label and metric (both non-finite counts as equal)."""
    worst = 0.0
    for case, labels in b.items():
        for label, values in labels.items():
            for m in metrics:
                x, y = a[case][label][m], values[m]
                x = float("nan") if x is None else x  # JSON null: NaN or inf in medseg's report
                if not (np.isfinite(x) and np.isfinite(y)):
                    assert not np.isfinite(x) and not np.isfinite(y), (case, label, m, x, y)
                    continue
                worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return worst


def agreement(ours: dict, theirs: dict) -> dict:
    """Max relative differences (asserted): ≤ 1e-5 for every metric, ≤ 1e-4 where MONAI counts in float32."""
    diff = max_rel_diff(ours, theirs)
    count_diff = max_rel_diff(ours, theirs, FLOAT32_COUNT_METRICS)
    assert diff <= 1e-5 and count_diff <= 1e-4, (diff, count_diff)
    return {"max_rel_diff": diff, "max_rel_diff_specificity_precision": count_diff}


def compute_only(pred, ref, spacing, device="cpu", repeats=3) -> tuple[float, dict]:
    """Best of ``repeats`` in-process timings of medseg's metric set; returns (seconds, values)."""
    from medseg.metrics import evaluate_structures

    best, values = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        results = evaluate_structures(pred, ref, spacing, tolerances_mm=(1.0, 2.0), device=device)
        if device != "cpu":
            import torch

            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        values = {str(r.value): {m: r.metrics[m] for m in METRICS} for r in results}
    return best, values


def spleen_pair(shared: Path):
    """The shared spleen label and a prediction made from it (eroded once, shifted 2, -1, 0 voxels)."""
    import nibabel as nib
    from scipy import ndimage

    img = nib.load(shared / "3d" / "spleen_crop" / "label.nii.gz")
    ref = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    pred = np.roll(ndimage.binary_erosion(ref, iterations=1), (2, -1, 0), axis=(0, 1, 2)).astype(np.uint8)
    return ref, pred, [float(s) for s in img.header.get_zooms()[:3]]


def whole_process(tmp: Path, script: Path, name: str, workers: int) -> dict:
    """Both tools on the folder pair ``tmp/name/{pred,ref}`` as whole processes."""
    pred, ref = tmp / name / "pred", tmp / name / "ref"
    files = sorted(pred.iterdir())
    medseg_pred, medseg_ref = (pred, ref) if len(files) > 1 else (files[0], ref / files[0].name)
    t_medseg, v_medseg = run_medseg(medseg_pred, medseg_ref, tmp / f"{name}.json", workers=workers)
    t_monai, v_monai = run_monai(pred, ref, script)
    return {"cases": len(files), "medseg_workers": workers, "medseg_s": round(t_medseg, 3), "monai_s": round(t_monai, 3),
            "ratio": round(t_monai / t_medseg, 2), **agreement(v_medseg, v_monai), "values": v_medseg if len(files) == 1 else "omitted"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="also time medseg on CUDA (compute only)")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke test (no results file)")
    args = parser.parse_args()
    big_shape, small_shape, n_small = ((128, 128, 75), (48, 48, 24), 4) if args.quick else ((512, 512, 300), (192, 192, 96), 20)
    spacing = (0.8, 0.8, 1.5)
    results: dict = {"machine": machine(), "metrics": METRICS,
                     "note": "ratio = MONAI seconds / medseg seconds in the same run; whole_process includes "
                             "interpreter start, imports and reading the .nii.gz files"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        tmp = Path(tmp)
        script = tmp / "monai_metrics.py"
        script.write_text(MONAI_SCRIPT)
        ref, pred = synthetic_pair(big_shape, seed=0)
        write_pair(ref, pred, spacing, tmp / "big" / "ref", tmp / "big" / "pred", "big")
        del ref, pred
        for i in range(n_small):
            ref, pred = synthetic_pair(small_shape, seed=100 + i)
            write_pair(ref, pred, spacing, tmp / "folder" / "ref", tmp / "folder" / "pred", f"case_{i:03d}")

        results["big_pair"] = {"shape": list(big_shape), "spacing_mm": list(spacing), **whole_process(tmp, script, "big", 1)}
        print("big pair:", {k: v for k, v in results["big_pair"].items() if k != "values"}, flush=True)
        results["folder"] = {"shape": list(small_shape), **whole_process(tmp, script, "folder", 2)}
        print("folder:", {k: v for k, v in results["folder"].items() if k != "values"}, flush=True)

    shared = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
    if (shared / "3d" / "spleen_crop" / "label.nii.gz").exists():
        namespace: dict = {"__name__": "monai_peer"}
        exec(compile(MONAI_SCRIPT, "monai_metrics", "exec"), namespace)  # the same peer function, in process
        ref, pred, sp = spleen_pair(shared)
        t_medseg, v_medseg = compute_only(pred, ref, sp)
        t0 = time.perf_counter()
        v_monai = namespace["monai_metrics"](pred, ref, sp)
        t_monai = time.perf_counter() - t0
        results["spleen_compute_only"] = {"shape": list(ref.shape), "spacing_mm": sp, "medseg_s": round(t_medseg, 4),
                                          "monai_s": round(t_monai, 3), "ratio": round(t_monai / t_medseg, 1),
                                          **agreement({"s": v_medseg}, {"s": v_monai}), "values": v_medseg}
        print("spleen:", {k: v for k, v in results["spleen_compute_only"].items() if k != "values"}, flush=True)
    else:
        results["spleen_compute_only"] = f"skipped: {shared} not found"

    if args.gpu:
        import torch

        if torch.cuda.is_available():
            big_ref, big_pred = synthetic_pair(big_shape, seed=0)
            t_cpu, v_cpu = compute_only(big_pred, big_ref, spacing, device="cpu", repeats=1)
            compute_only(big_pred[:64, :64, :64], big_ref[:64, :64, :64], spacing, device="cuda", repeats=1)  # warm-up
            t_gpu, v_gpu = compute_only(big_pred, big_ref, spacing, device="cuda")
            results["gpu_big_compute_only"] = {"medseg_cpu_s": round(t_cpu, 3), "medseg_cuda_s": round(t_gpu, 3),
                                               "max_rel_diff_cuda_vs_cpu": max_rel_diff({"b": v_gpu}, {"b": v_cpu}, METRICS)}
        else:
            results["gpu_big_compute_only"] = "requested, but no CUDA device"
        print("gpu:", results["gpu_big_compute_only"], flush=True)

    results["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
