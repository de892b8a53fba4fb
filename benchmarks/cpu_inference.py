"""CPU inference: subnormal numbers in a long-trained checkpoint, flushing them, and bf16.

Run from the repository root, e.g. ``.venv/bin/python benchmarks/cpu_inference.py
models/hippocampus_unet3d_fold0/checkpoint_last.pt --images VAL/images --labels VAL/labels --out
benchmarks/results/cpu_inference_epochN.json``; ``--architectures`` instead times one forward pass of
each architecture (random weights, 256² RGB or 64³, batch 1, median of interleaved rounds) in fp32 and in
bf16 autocast → ``benchmarks/results/cpu_inference_architectures.json``. Each file records the machine.

A checkpoint trained for hundreds of epochs holds many fp32 subnormals (below 1.2e-38; see
``medseg.devices.subnormals_flushed``), and x86 CPUs compute on them through a slow path. Each variant runs
in a fresh process (the flush setting belongs to a process's threads) on the same cases, predicting with the
default TTA (8 flips):

- ``medseg_fp32``: ``Predictor(amp=False)``, subnormals flushed (``medseg.devices.subnormals_flushed``);
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
import contextlib
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
        device.start_flushing_pool = lambda: False  # medseg before the change; MONAI has no such setting
        device.subnormals_flushed = contextlib.nullcontext
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


def architectures(threads: int, out_path: Path, rounds: int = 7) -> None:
    """Seconds per forward pass of each architecture in fp32 and under ``autocast_context`` (bf16 where the
    CPU runs it natively), interleaved round by round so that other load falls on both alike."""
    import torch
    from common import machine

    from medseg.devices import bf16_supported, start_flushing_pool, subnormals_flushed
    from medseg.inference.sliding_window import autocast_context
    from medseg.models import create_model, model_spec

    torch.set_num_threads(threads)
    start_flushing_pool()
    cpu = torch.device("cpu")
    result = {"benchmark": "cpu_inference_architectures", "machine": machine(),
              "bf16_native": bf16_supported(cpu), "rounds": rounds, "networks": {}}
    for name, shape in (("unet", (256, 256)), ("unext", (256, 256)), ("cm_mlp", (256, 256)),
                        ("unet3d", (64, 64, 64)), ("vnet", (64, 64, 64))):
        dims = model_spec(name).spatial_dims
        layout = torch.channels_last if dims == 2 else torch.channels_last_3d
        torch.manual_seed(0)
        network = create_model(name, 3 if dims == 2 else 1, 2).eval().to(memory_format=layout)
        x = torch.randn(1, 3 if dims == 2 else 1, *shape).contiguous(memory_format=layout)
        times = {"fp32": [], "bf16": []}
        with torch.no_grad(), subnormals_flushed():
            for r in range(rounds + 1):  # round 0 warms up
                for label, amp in (("fp32", False), ("bf16", True)):
                    with autocast_context(cpu, amp):
                        start = time.perf_counter()
                        network(x)
                        if r:
                            times[label].append(time.perf_counter() - start)
        row = {"input": list(x.shape), **{f"{k}_s": statistics.median(v) for k, v in times.items()}}
        row["bf16_time_ratio"] = row["bf16_s"] / row["fp32_s"]
        result["networks"][name] = row
        print(name, row, flush=True)
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    out_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="?")
    parser.add_argument("--architectures", action="store_true", help="fp32 against bf16 forward passes, per network")
    parser.add_argument("--images", type=Path, help="folder of scans (.nii.gz)")
    parser.add_argument("--labels", type=Path, help="their reference label maps, same file names (for Dice)")
    parser.add_argument("--cases", type=int, default=0, help="only the first N scans (0: all)")
    parser.add_argument("--slow-cases", type=int, default=8, help="scans for medseg_fp32_no_flush and monai")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="a comma-separated subset (medseg_fp32 is always run: the others are compared to it)")
    parser.add_argument("--out", type=Path, help="the JSON to write (default: benchmarks/results/cpu_inference.json, "
                        "or cpu_inference_architectures.json)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = REPO / "benchmarks" / "results"
    if args.architectures:
        return architectures(args.threads, args.out or results / "cpu_inference_architectures.json")
    if args.checkpoint is None or args.images is None:
        parser.error("a checkpoint and --images are needed (or --architectures)")
    out_path = args.out or results / "cpu_inference.json"
    images = sorted(args.images.glob("*.nii.gz"))
    images = images[: args.cases] if args.cases else images
    if args.worker:
        return worker(args.worker, args.checkpoint, images[: args.slow_cases] if args.worker in SLOW else images,
                      args.worker_out, args.threads)
    from common import machine

    from medseg.runs import load_checkpoint

    result = {"benchmark": "cpu_inference", "machine": machine(), "checkpoint": str(args.checkpoint),
              "epoch": load_checkpoint(args.checkpoint, map_location="cpu").get("epoch"),
              "subnormals": subnormal_fraction(args.checkpoint), "cases": len(images),
              "slow_cases": min(args.slow_cases, len(images)), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        preds = {}
        chosen = [v for v in VARIANTS if v == "medseg_fp32" or v in args.variants.split(",")]
        for variant in chosen:
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
            for base in [b for b in ("medseg_fp32", "medseg") if b in chosen]:
                base_times = json.loads((Path(tmp) / base / "times.json").read_text())
                row[f"time_ratio_to_{base}"] = row["median_s_per_case"] / statistics.median(base_times[n]
                                                                                            for n in times)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
