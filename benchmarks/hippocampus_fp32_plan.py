"""The 3D plan for CPUs without native bf16: unet3d widths trained in fp32 on Hippocampus, at equal time.

A CPU without AVX512-BF16 or AMX trains in fp32, where a step costs 2-3× a bf16 one. This compares
`unet3d` base widths in fp32 at equal time on such a CPU, from runs made on a bf16 CPU with ``--amp off``:

- the runs: the default recipe (Adam 1e-3, poly over 1000 epochs, weight average, seed 0) with
  ``model.options.base_channels`` set, ``--amp off``; each on one core, one thread (``OMP_NUM_THREADS=1
  taskset -c K``). Their validation Dice per epoch (pooled, no TTA) does not depend on the CPU's speed;
- the time: each width's fp32 training step is timed here against base 8's, in one process, alternating
  rounds (``--rounds``); an epoch of width W on the AVX2 CPU is then taken to last the measured AVX2 base-8
  epoch (``--reference``, validation included) times W's step-time ratio. Both are conv-bound fp32 steps
  (README: two thirds of the AVX2 step are convolution backward passes), so the ratio carries over.

    OMP_NUM_THREADS=1 taskset -c 0 medseg train hippocampus --arch unet3d --fold 0 --amp off \\
        --config w4.yaml --run-name fp32_base4     # w4.yaml: base_channels 4 and the narrow recipe's Adam
    .venv/bin/python benchmarks/hippocampus_fp32_plan.py 4=models/fp32_base4 6=models/fp32_base6 8=models/fp32_base8

Writes ``benchmarks/results/train_hippocampus_fp32_plan.json``: per width, the curve, the emulated time to a
mean Dice of 0.85 and the Dice at the budget (``--minutes``, default 39.4: the AVX2 run's 12 epochs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from channels_last_cpu import _step_fn, time_interleaved  # noqa: E402  (one training step, as the layout benchmark times it)
from common import machine  # noqa: E402  (benchmarks/common.py)
from hippocampus_default_run import evaluation  # noqa: E402

from medseg.models import count_macs, create_model  # noqa: E402
from medseg.training import curves  # noqa: E402
from medseg.training.losses import compute_loss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PATCH = (40, 56, 40)


def step_seconds(widths: list[int], rounds: int, steps: int = 3) -> dict[int, float]:
    """Median seconds of an fp32 training step (batch 2, channels-last, Dice + CE with deep supervision, Adam)."""
    x = torch.randn(2, 1, *PATCH).contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 3, (2, 1, *PATCH))
    fns = {}
    for width in widths:
        torch.manual_seed(0)
        net = create_model("unet3d", 1, 3, base_channels=width).to(memory_format=torch.channels_last_3d)
        fns[width] = _step_fn(net, "train", x, y, None, lambda out, target: compute_loss(out, target, "dice_ce",
                                                                                          "softmax", "halving"))
        fns[width]()  # warm-up
    times = time_interleaved(fns, rounds, steps)
    return {w: statistics.median(ts) for w, ts in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="WIDTH=RUN_FOLDER")
    parser.add_argument("--reference", type=Path, default=RESULTS / "train_hippocampus_default_unet3d_avx2_ema.json",
                        help="the AVX2 CPU's base-8 fp32 run (its seconds_per_epoch_median)")
    parser.add_argument("--minutes", type=float, default=39.4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="append", default=[], metavar="WIDTH=REPORT.json",
                        help="a `medseg evaluate` JSON report of that width's last weights predicted with the default TTA")
    parser.add_argument("--conditions", default="")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_hippocampus_fp32_plan.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = {int(w): Path(p) for w, p in (item.split("=", 1) for item in args.runs)}
    reports = {int(w): evaluation(Path(p)) for w, p in (item.split("=", 1) for item in args.report)}
    reference = json.loads(args.reference.read_text())
    avx2_epoch_s = float(reference["seconds_per_epoch_median"])
    seconds = step_seconds(sorted(set(runs) | {8}), args.rounds)
    report = {}
    for width, run in sorted(runs.items()):
        rows = [r for r in curves.read_log(run / "log.csv") if r.get("val_dice") not in (None, "")]
        ratio = seconds[width] / seconds[8]
        epoch_s = avx2_epoch_s * ratio
        curve = [{"epoch": int(float(r["epoch"])), "avx2_minutes": round(int(float(r["epoch"])) * epoch_s / 60, 1),
                  "dice_mean": round(float(r["val_dice"]), 4)} for r in rows]
        within = [c for c in curve if c["avx2_minutes"] <= args.minutes]
        first = next((c for c in curve if c["dice_mean"] >= 0.85), None)
        report[f"base{width}"] = {
            "run": str(run), "macs_per_voxel": round(count_macs("unet3d", 1, 3, PATCH, base_channels=width)
                                                     / (PATCH[0] * PATCH[1] * PATCH[2])),
            "fp32_step_s_here": round(seconds[width], 4), "step_time_vs_base8": round(ratio, 3),
            "avx2_epoch_s_emulated": round(epoch_s, 1),
            "avx2_minutes_to_085": first["avx2_minutes"] if first else None,
            f"dice_at_{args.minutes:g}_avx2_min": within[-1] if within else None,
            "predict_evaluate_tta_last": reports.get(width), "epochs_logged": len(curve), "curve": curve,
        }
        print(f"base {width}: step ×{ratio:.2f}, 0.85 at {report[f'base{width}']['avx2_minutes_to_085']} min, "
              f"at {args.minutes:g} min: {within[-1] if within else None}", flush=True)
    out = {
        "benchmark": "hippocampus_fp32_plan: unet3d widths trained in fp32 (same recipe and seed), at equal time on "
                     "the AVX2-only CPU, emulated from the fp32 step-time ratio measured here",
        "reference": {"file": args.reference.name, "avx2_base8_epoch_s": avx2_epoch_s,
                      "avx2_base8_curve": reference.get("curve")},
        "widths": report, "conditions": args.conditions,
        "machine": machine(), "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
