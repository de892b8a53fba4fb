"""CPU inference with a long-trained checkpoint: subnormal weights, flushing them, and bf16.

Run from the repository root, e.g. ``.venv/bin/python benchmarks/subnormals.py
models/hippocampus_unet3d_fold0/checkpoint_last.pt --images VAL/images --labels VAL/labels``.
Writes ``benchmarks/results/subnormals_cpu.json`` with the machine it ran on.

A checkpoint trained for hundreds of epochs holds many fp32 subnormals (below 1.2e-38: the moving average
of weights the optimizer keeps at zero decays geometrically under the fp32 range), and x86 CPUs compute
on them through a slow path. Each variant runs in a fresh process (the flush setting belongs to a
process's threads) on the same cases, predicting with the default TTA (8 flips):

- ``medseg_fp32``: ``Predictor(amp=False)``, subnormals flushed (``medseg.devices.flush_denormals``);
- ``medseg_fp32_no_flush``: the same with the flush disabled (medseg before it flushed);
- ``monai``: MONAI's ``sliding_window_inference`` (Gaussian, overlap 0.5) per flip on the same network and
  the same preprocessed image in fp32, as a MONAI user would run it (MONAI does not flush);
- ``medseg``: ``Predictor`` as shipped: bf16 where the CPU runs it natively (AVX512-BF16 or AMX), else
  the same as ``medseg_fp32``.

Seconds are per case from reading the scan to the label map (the MONAI variant reads and preprocesses with
medseg's functions); the slow variants (``medseg_fp32_no_flush``, ``monai``) run on the first
``--slow-cases``. Label maps are compared voxel by voxel with ``medseg_fp32``'s, times are divided by
``medseg_fp32``'s and ``medseg``'s on the same cases; with ``--labels``, pooled Dice per structure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("medseg_fp32", "medseg_fp32_no_flush", "monai", "medseg")
SLOW = ("medseg_fp32_no_flush", "monai")


def subnormal_fraction(checkpoint: Path) -> dict:
    from medseg.runs import load_checkpoint

    state = load_checkpoint(checkpoint, map_location="cpu")["model"]
    floats = [t for t in state.values() if t.is_floating_point()]
    tiny = sum(int(((t != 0) & (t.abs() < 1.1754944e-38)).sum()) for t in floats)
    total = sum(t.numel() for t in floats)
    return {"subnormal_values": tiny, "float_values": total, "fraction": tiny / total}


def worker(variant: str, checkpoint: Path, images: list[Path], out: Path, threads: int) -> None:
    """One variant in this (fresh) process: per-case seconds to ``out/times.json``, labels to ``out/*.npy``."""
    import torch

    import medseg.devices as device

    if variant in SLOW:
        device.flush_denormals = lambda: False  # medseg before the change; MONAI has no such setting
    torch.set_num_threads(threads)
    from medseg.inference.predictor import Predictor

    predictor = Predictor(checkpoint, device="cpu", amp=variant == "medseg")
    run = _monai(predictor) if variant == "monai" else (lambda path: predictor.predict(path).labels.array[0])
    run(images[0])  # warm
    times = {}
    for path in images:
        start = time.perf_counter()
        labels = run(path)
        times[path.name] = time.perf_counter() - start
        np.save(out / f"{path.name}.npy", np.asarray(labels, dtype=np.uint8))
    (out / "times.json").write_text(json.dumps(times))


def _monai(predictor):
    """Read and preprocess with medseg, then MONAI's sliding windows per flip, then medseg's restore."""
    import torch
    from monai.inferers import sliding_window_inference

    from medseg.inference.tta import flip_combinations
    from medseg.io import read_volume
    from medseg.preprocessing import preprocess, restore_probabilities

    flips = flip_combinations("all", 3)

    def run(path: Path):
        image, _, properties = preprocess(read_volume(path), predictor.plan)
        x = torch.from_numpy(image)[None].contiguous(memory_format=torch.channels_last_3d)
        probs = 0
        with torch.no_grad():
            for f in flips:
                dims = [2 + a for a in f]
                xf = torch.flip(x, dims) if f else x
                out = torch.softmax(sliding_window_inference(xf, predictor.patch_size, 2, predictor.network,
                                                             overlap=0.5, mode="gaussian"), 1)
                probs = probs + (torch.flip(out, dims) if f else out)
        return restore_probabilities(probs[0] / len(flips), properties).argmax(0).numpy()

    return run


def pooled_dice(preds: dict[str, np.ndarray], labels: Path, classes: int) -> list[float]:
    import torch

    from medseg.io import read_volume
    from medseg.training.validation import confusion_counts, dice_from_counts

    counts = 0
    for name, pred in preds.items():
        ref = np.asarray(read_volume(labels / name).array[0]).astype(np.int64)
        counts = counts + confusion_counts(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(ref), classes)
    return dice_from_counts(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of scans (.nii.gz)")
    parser.add_argument("--labels", type=Path, help="their reference label maps, same file names (for Dice)")
    parser.add_argument("--cases", type=int, default=0, help="only the first N scans (0: all)")
    parser.add_argument("--slow-cases", type=int, default=8, help="scans for medseg_fp32_no_flush and monai")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "subnormals_cpu.json")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    images = sorted(args.images.glob("*.nii.gz"))
    images = images[: args.cases] if args.cases else images
    if args.worker:
        return worker(args.worker, args.checkpoint, images[: args.slow_cases] if args.worker in SLOW else images,
                      args.worker_out, args.threads)
    from common import machine

    from medseg.runs import load_checkpoint

    result = {"benchmark": "subnormals_cpu", "machine": machine(), "checkpoint": str(args.checkpoint),
              "epoch": load_checkpoint(args.checkpoint, map_location="cpu").get("epoch"),
              "subnormals": subnormal_fraction(args.checkpoint), "cases": len(images),
              "slow_cases": min(args.slow_cases, len(images)), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        preds = {}
        for variant in VARIANTS:
            out = Path(tmp) / variant
            out.mkdir()
            command = [sys.executable, __file__, str(args.checkpoint), "--images", str(args.images), "--cases",
                       str(args.cases), "--slow-cases", str(args.slow_cases), "--threads", str(args.threads),
                       "--worker", variant, "--worker-out", str(out)]
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            times = json.loads((out / "times.json").read_text())
            preds[variant] = {name: np.load(out / f"{name}.npy") for name in times}
            row = {"cases": len(times), "median_s_per_case": statistics.median(times.values()),
                   "total_s": sum(times.values())}
            fp32 = preds["medseg_fp32"]
            row["voxel_agreement_with_medseg_fp32"] = float(np.mean([(preds[variant][n] == fp32[n]).mean()
                                                                     for n in times]))
            row["cases_identical_to_medseg_fp32"] = sum(bool((preds[variant][n] == fp32[n]).all()) for n in times)
            result["variants"][variant] = row
            if args.labels and len(times) == len(images):  # the slow variants' subset is too small to score
                classes = int(max(int(p.max()) for p in fp32.values())) + 1
                row["pooled_dice"] = pooled_dice(preds[variant], args.labels, max(classes, 2))
            print(variant, row, flush=True)
        for variant, row in result["variants"].items():  # on the same cases: the ratios a user sees
            times = json.loads((Path(tmp) / variant / "times.json").read_text())
            for base in ("medseg_fp32", "medseg"):
                base_times = json.loads((Path(tmp) / base / "times.json").read_text())
                row[f"time_ratio_to_{base}"] = row["median_s_per_case"] / statistics.median(base_times[n]
                                                                                            for n in times)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
