"""Channels-last on a CPU: training and inference steps in both tensor layouts, side by side in one process.

medseg runs its networks channels-last on a CPU (``medseg.models.layers.memory_format_for``). This measures
what that choice is worth: for each network, a training step (forward, Dice + CE with deep supervision,
backward, Adam) in bf16 autocast where the CPU has native bf16, and an fp32 inference forward, with the
default layout and with channels-last, alternating in rounds so that both see the same machine load; the
median round is reported. MONAI's ``UNet`` as the plain loop of ``train_hippocampus.py`` builds it
(channels 16-256, residual units, batch 4 of 48×64×48, fp32) is measured in the same run for scale.
The 3D networks run at the widths and patches that ``medseg train hippocampus`` plans on a CPU; the 2D
ones on batches of 8 images of 256².

    .venv/bin/python benchmarks/channels_last_cpu.py            # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402  (benchmarks/common.py)

from medseg.models import create_model  # noqa: E402
from medseg.devices import bf16_supported  # noqa: E402
from medseg.training.losses import compute_loss  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "channels_last_cpu.json"
#: network: (batch, spatial side(s), model options, input channels)
CASES = {
    "unet3d": (2, (40, 56, 40), {"base_channels": 8}, 1),
    "vnet": (2, (48, 64, 48), {"base_channels": 8}, 1),
    "unext": (8, (256, 256), {}, 3),
    "unet": (8, (256, 256), {"base_channels": 16}, 3),
}


def _step_fn(model, mode: str, x, y, amp_dtype, loss_fn):
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def step():
        if mode == "train":
            model.train()
            with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            model.eval()
            with torch.no_grad():
                model(x)
    return step


def time_interleaved(step_fns: dict, rounds: int, steps: int) -> dict[object, list[float]]:
    """Seconds per call of each function, one figure per round; the functions take turns within each round, so a
    change in the machine's speed affects all of them alike."""
    times = {key: [] for key in step_fns}
    for _ in range(rounds):
        for key, step in step_fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[key].append((time.perf_counter() - t0) / steps)
    return times


def compare(build, mode: str, batch: int, side, channels: int, amp_dtype, loss_fn, rounds: int, steps: int) -> dict:
    """Median seconds per step with the default layout and with channels-last (alternating rounds)."""
    fmt = torch.channels_last if len(side) == 2 else torch.channels_last_3d
    x = torch.randn(batch, channels, *side, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (batch, 1, *side), generator=torch.Generator().manual_seed(2))
    steps_by_layout = {}
    for layout in ("default", "channels_last"):
        torch.manual_seed(0)
        model = build()
        inputs = x
        if layout == "channels_last":
            model, inputs = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        steps_by_layout[layout] = _step_fn(model, mode, inputs, y, amp_dtype, loss_fn)
        for _ in range(3):  # warm-up: oneDNN primitive caches, allocator
            steps_by_layout[layout]()
    times = time_interleaved(steps_by_layout, rounds, steps)
    default, last = statistics.median(times["default"]), statistics.median(times["channels_last"])
    return {"mode": mode, "batch": batch, "patch": list(side), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "default_s_per_step": round(default, 4), "channels_last_s_per_step": round(last, 4),
            "speedup": round(default / last, 3),
            "rounds_s": {k: [round(v, 4) for v in vs] for k, vs in times.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="steps per round")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    amp_dtype = torch.bfloat16 if bf16_supported(torch.device("cpu")) else None

    def medseg_loss(out, y):
        return compute_loss(out, y, "dice_ce", "softmax", "halving")

    results = {}
    for arch, (batch, side, options, channels) in CASES.items():
        def build(arch=arch, options=options, channels=channels):
            return create_model(arch, channels, 3, **options)
        results[arch] = {"train": compare(build, "train", batch, side, channels, amp_dtype, medseg_loss,
                                          args.rounds, args.steps)}
        if len(side) == 3:
            results[arch]["inference"] = compare(build, "inference", batch, side, channels, None, medseg_loss,
                                                 args.rounds, args.steps)
        print(arch, json.dumps(results[arch]), flush=True)

    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def monai_unet():
        return UNet(3, 1, 3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    results["monai_unet_plain_loop"] = {"train": compare(monai_unet, "train", 4, (48, 64, 48), 1, None,
                                                         lambda out, y: dice_ce(out, y), args.rounds, args.steps)}
    print("monai", json.dumps(results["monai_unet_plain_loop"]), flush=True)
    report = {
        "benchmark": "channels_last_cpu: seconds per step in the default layout and channels-last, one process, "
                     "alternating rounds, median",
        "networks": results,
        "note": "medseg trains and predicts channels-last on a CPU (memory_format_for); MONAI's UNet is timed as "
                "train_hippocampus.py's plain loop runs it (batch 4, fp32)",
        "machine": machine(), "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
