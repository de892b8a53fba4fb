"""Training throughput: medseg's loader + loop vs a plain MONAI CacheDataset + DataLoader loop.

Both pipelines train the same network (same registry model, same patch, batch, optimizer, number of
loader workers) on the same preprocessed arrays, in the same run, alternating in rounds so that a
change of machine load hits both alike. Measured per pipeline, after a warm-up:

* ``samples_per_s``: training samples per second over the timed steps;
* ``data_wait_fraction``: share of the step time spent waiting for the next batch (the device idles).

medseg: ``medseg.training.data.PatchBatches`` (memory-mapped crops, one third foreground-centred, batched
augmentation in the workers, or on the GPU with ``--gpu``) through ``make_loader``, and the loop's step
(deep-supervision Dice + CE, SGD Nesterov, clipping). MONAI: ``CacheDataset`` of the same arrays →
``RandCropByPosNegLabeld`` (1 positive : 2 negative) → ``RandRotated`` / ``RandZoomd`` / ``RandFlipd`` /
``RandGaussianNoised`` / ``RandGaussianSmoothd`` / ``RandScaleIntensityd`` / ``RandAdjustContrastd`` with
nnU-Net's probabilities → ``DataLoader`` (cases drawn with replacement), ``DiceCELoss`` on the full-resolution output.
2D: ``unext`` on axial slices of the volumes (MONAI: crops of depth 1 squeezed to 2D). On CPU the 3D network
is ``unet3d`` at base width 8 (the full width takes about 50 s a sample on 2 cores).

    .venv/bin/python benchmarks/train.py [--seconds 40] [--workers 1] [--quick]
    .venv/bin/python benchmarks/train.py --gpu     # unet3d 128³ bf16 on CUDA: samples/s, memory, MFU

Writes benchmarks/results/train.json (``train_gpu.json`` with ``--gpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: dense bf16 tensor-core peaks (FLOP/s) for the MFU figure
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "RTX 4090": 165e12}


from common import machine  # noqa: E402  (benchmarks/common.py)


def build_dataset(root: Path, n_cases: int, shape: tuple[int, int, int]):
    """CT phantoms ingested as ``root/data/bench`` (arrays as training reads them)."""
    from medseg.ingest import ingest
    from medseg.phantoms import write_ct_dataset
    from medseg.training.data import open_dataset

    write_ct_dataset(root / "raw", n_cases=n_cases, shape=shape, orientations=("RAS",))
    ingest(root / "raw", "bench", data_root=root / "data", folds=5, workers=1)
    return open_dataset(root / "data", "bench")


# --- the two pipelines ------------------------------------------------------------------------------


def medseg_batches(ds, patch, batch, workers, device, slice_axis=None, augment_on_device=False):
    """An iterator of (image, label) on ``device`` from medseg's loader."""
    import torch

    from medseg.config import AugmentConfig
    from medseg.training.augment import augment_batch
    from medseg.training.data import PatchBatches, make_loader

    aug = AugmentConfig()
    cases = list(ds.cases.values())
    batches = PatchBatches(cases, patch, batch, 10**6, seed=0, num_classes=ds.num_classes, slice_axis=slice_axis,
                           augment=aug, augment_here=not augment_on_device)
    loader = make_loader(batches, 0, workers, pin_memory=device.type == "cuda")
    for item in loader:
        image = item["image"].to(device, non_blocking=True)
        label = item["label"].to(device, non_blocking=True)
        if augment_on_device:
            image, label = augment_batch(image, label, patch, aug, int(item["seed"]))
        yield image, label


def monai_batches(ds, patch, batch, workers, device, slice_axis=None):
    """The plain MONAI pipeline: CacheDataset + random crops and augmentations + DataLoader."""
    import monai.transforms as mt
    from monai.data import CacheDataset, DataLoader

    dims = len(patch)
    items = [{"image": np.load(c.image_path), "label": np.load(c.label_path)} for c in ds.cases.values()]
    keys = ["image", "label"]
    crop_size = list(patch) + ([1] if slice_axis is not None else [])
    transforms = [mt.RandCropByPosNegLabeld(keys, "label", spatial_size=crop_size, pos=1, neg=2, num_samples=1)]
    if slice_axis is not None:
        transforms.append(mt.SqueezeDimd(keys, dim=-1))
    transforms += [
        mt.RandRotated(keys, range_x=0.52, range_y=0.52 if dims == 3 else 0.0, range_z=0.52 if dims == 3 else 0.0,
                       prob=0.2, mode=("bilinear", "nearest")),
        mt.RandZoomd(keys, min_zoom=0.7, max_zoom=1.4, prob=0.2, mode=("bilinear", "nearest")),
        *[mt.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(dims)],
        mt.RandGaussianNoised("image", prob=0.1, std=0.3),
        mt.RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        mt.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        mt.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
        mt.EnsureTyped(keys, track_meta=False),
    ]
    import torch

    dataset = CacheDataset(items, mt.Compose(transforms), progress=False)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**8)  # cases, with replacement
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda", drop_last=True)
    for item in loader:
        yield item["image"].to(device, non_blocking=True), item["label"].to(device, non_blocking=True)


def timed_training(batches, model, loss_fn, device, amp_dtype, seconds: float, warmup: int = 3,
                   optimizer=None) -> dict:
    """Train on ``batches`` for ``seconds`` after ``warmup`` steps; samples/s and data-wait share."""
    import contextlib

    import torch

    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True,
                                             weight_decay=3e-5)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model.train()
    steps = samples = 0
    waited = total = 0.0
    start = None
    while True:
        t0 = time.perf_counter()
        image, label = next(batches)
        sync()
        t1 = time.perf_counter()
        with autocast():
            out = model(image)
        loss = loss_fn(out, label.long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()
        sync()
        t2 = time.perf_counter()
        steps += 1
        if steps == warmup:
            start = time.perf_counter()
            continue
        if start is not None:
            waited += t1 - t0
            total += t2 - t0
            samples += image.shape[0]
            if time.perf_counter() - start >= seconds:
                break
    return {"steps": steps - warmup, "samples": samples, "seconds": total, "samples_per_s": samples / total,
            "data_wait_fraction": waited / total, "step_s": total / (steps - warmup)}


def _merge(parts: list[dict]) -> dict:
    samples, seconds = sum(p["samples"] for p in parts), sum(p["seconds"] for p in parts)
    waited = sum(p["data_wait_fraction"] * p["seconds"] for p in parts)
    return {"steps": sum(p["steps"] for p in parts), "samples": samples, "seconds": round(seconds, 2),
            "samples_per_s": samples / seconds, "data_wait_fraction": waited / seconds}


def compare(ds, arch, patch, batch, workers, device, seconds, rounds, slice_axis=None, amp_dtype=None,
            augment_on_device=False, options=None) -> dict:
    """Alternate medseg and MONAI for ``rounds`` rounds of ``seconds / rounds`` each, same network."""
    import torch
    from monai.losses import DiceCELoss

    from medseg.models import create_model
    from medseg.training.losses import compute_loss

    torch.manual_seed(0)
    results = {"medseg": [], "monai": []}
    options = options or {}
    models = {}
    for name in results:
        torch.manual_seed(0)
        models[name] = create_model(arch, ds.num_channels, ds.num_classes, **options).to(device)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    losses = {"medseg": compute_loss,
              "monai": lambda out, y: dice_ce(out[0] if isinstance(out, (list, tuple)) else out, y)}
    streams = {"medseg": medseg_batches(ds, patch, batch, workers, device, slice_axis, augment_on_device),
               "monai": monai_batches(ds, patch, batch, workers, device, slice_axis)}
    for r in range(rounds):
        for name in results:
            part = timed_training(streams[name], models[name], losses[name], device, amp_dtype, seconds / rounds,
                                  warmup=3 if r == 0 else 1)
            results[name].append(part)
            print(f"  {arch} {name} round {r + 1}: {part['samples_per_s']:.2f} samples/s, "
                  f"{part['data_wait_fraction']:.0%} waiting", flush=True)
    out = {name: _merge(parts) for name, parts in results.items()}
    for stream in streams.values():
        stream.close()
    out["speedup_samples_per_s"] = out["medseg"]["samples_per_s"] / out["monai"]["samples_per_s"]
    out.update(arch=arch, model_options=options, patch=list(patch), batch=batch, workers=workers)
    return out


# --- GPU figures --------------------------------------------------------------------------------------


def flops_per_step(model, patch, batch, in_channels, device, amp_dtype) -> float:
    """FLOPs of one forward + backward pass, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, in_channels, *patch, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=amp_dtype):
            out = model(x)
        (out[0] if isinstance(out, (list, tuple)) else out).float().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def gpu_mode(args) -> dict:
    import torch

    from medseg.models import create_model
    from medseg.training.losses import compute_loss

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    patch, batch = (128, 128, 128), args.batch or 2
    with tempfile.TemporaryDirectory() as tmp:
        ds = build_dataset(Path(tmp), 6 if not args.quick else 2, (192, 192, 160))
        model = create_model("unet3d", ds.num_channels, ds.num_classes).to(device)
        flops = flops_per_step(model, patch, batch, ds.num_channels, device, torch.bfloat16)
        torch.cuda.reset_peak_memory_stats(device)
        stats = timed_training(medseg_batches(ds, patch, batch, args.workers or 8, device, augment_on_device=True),
                               model, compute_loss, device, torch.bfloat16, args.seconds, warmup=5)
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        achieved = flops / stats["step_s"]
        result = {
            "arch": "unet3d", "patch": list(patch), "batch": batch, "amp": "bf16", **stats,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "flops_per_step": flops, "achieved_tflops": achieved / 1e12,
            "mfu": achieved / peak if peak else None, "peak_bf16_tflops": peak / 1e12 if peak else None,
        }
        if not args.no_peer:
            result["vs_monai"] = compare(ds, "unet3d", patch, batch, args.workers or 8, device, args.seconds, 2,
                                         amp_dtype=torch.bfloat16, augment_on_device=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="timed training per pipeline and network")
    parser.add_argument("--rounds", type=int, default=2, help="alternations medseg/MONAI")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: CPUs - 1)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--gpu", action="store_true", help="unet3d 128³ bf16 on CUDA: samples/s, memory, MFU")
    parser.add_argument("--no-peer", action="store_true", help="--gpu: skip the MONAI comparison")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (checks the script)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from medseg.training.recipe import default_workers

    if args.gpu:
        out = args.out or REPO / "benchmarks" / "results" / "train_gpu.json"
        result = {"machine": machine(), "gpu": gpu_mode(args)}
    else:
        out = args.out or REPO / "benchmarks" / "results" / "train.json"
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - (args.workers if args.workers is not None else 1)))
        workers = args.workers if args.workers is not None else default_workers()
        seconds = 4.0 if args.quick else args.seconds
        device = torch.device("cpu")
        shape, n = ((48, 48, 24), 4) if args.quick else ((96, 96, 48), 8)
        result = {"machine": machine(), "workers": workers, "seconds_per_pipeline": seconds}
        with tempfile.TemporaryDirectory() as tmp:
            ds = build_dataset(Path(tmp), n, shape)
            result["dataset"] = {"cases": n, "shape": list(shape), "source": "medseg.phantoms CT phantoms, ingested"}
            arch3d, arch2d = ("unet3d_tiny", "unext_tiny") if args.quick else ("unet3d", "unext")
            patch3d = (32, 32, 16) if args.quick else (64, 64, 32)
            patch2d = (32, 32) if args.quick else (96, 96)
            print(f"{arch3d} on 3D patches {patch3d}", flush=True)
            # The full-width unet3d needs ~50 s a sample on 2 CPU cores: on CPU it runs at base width 8.
            result["unet3d_patches"] = compare(ds, arch3d, patch3d, args.batch or 2, workers, device, seconds,
                                               args.rounds, options=None if args.quick else {"base_channels": 8})
            print(f"{arch2d} on axial slices {patch2d}", flush=True)
            result["unext_slices"] = compare(ds, arch2d, patch2d, args.batch or 8, workers, device, seconds,
                                             args.rounds, slice_axis=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
