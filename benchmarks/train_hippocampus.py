"""Hippocampus (MSD Task04), fold 0: medseg vs nnU-Net v2 vs a plain MONAI loop, same cases, same wall-clock budget.

Each system trains on medseg's fold-0 training cases (156) for ``--minutes`` of wall time (default 40) and is
scored on the fold-0 validation cases (39) with ONE scoring function: the raw validation images
(``<shared>/3d/hippocampus/imagesTr``) are predicted in their own grid and compared with ``labelsTr``
(per case Dice of label 1 "anterior" and 2 "posterior" from ``medseg.metrics.overlap``, averaged over the cases;
the pooled Dice over all voxels is reported too). The systems run ONE AFTER ANOTHER, never concurrently, in the
order of ``--systems``:

* ``medseg``: ``medseg train hippocampus --arch unet3d --fold 0 --run-name bench_hippocampus_unet3d --overwrite
  --time-limit M`` (default recipe; M = the budget less ``STARTUP_S`` for starting Python and planning) as a
  subprocess: like nnU-Net's trainer subclass below, ``--time-limit`` re-plans the epoch count after every epoch
  so that training ends by then, the poly decay following the new count; the script still stops it if it
  overruns (SIGINT, then SIGTERM). Then ``medseg predict`` (default TTA: all flips) with the final weights
  (``checkpoint_last.pt``, as for the other two systems), and once more with ``--no-tta``.
  Curve and time to Dice 0.85: ``log.csv`` (validation every epoch; ``wall_time_s`` counts from the start of the
  training loop and includes its validation).
* ``monai``: ``monai.networks.nets.UNet`` (16-256 channels, 4 strides of 2, 2 residual units), DiceCELoss,
  Adam 1e-3, whole volumes padded to 48×64×48 with random flips, CacheDataset + DataLoader (batch 4, fp32).
  The budget counts the training steps only (batch fetch + forward + backward + step); every ~2 minutes of
  training a validation pass (not counted) predicts the 39 validation volumes whole for the curve.
  The final weights predict the raw validation images (padded, cropped back to the original grid; no TTA).
* ``nnunet``: nnU-Net v2 from PyPI in its OWN virtual environment ``benchmarks/.venv-nnunet`` (created here
  with ``python3 -m venv`` + ``pip install nnunetv2`` on first use; it pulls a CUDA build of torch of several
  GB; nnunetv2 never goes into the project's .venv). Raw dataset ``Dataset004_Hippocampus`` (symlinks) and
  ``splits_final.json`` = medseg's splits under ``--work-dir``; ``nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres
  --verify_dataset_integrity`` (not counted; reused on later runs); ``nnUNetv2_train 4 3d_fullres 0 -tr
  nnUNetTrainerMedsegBench -device cpu`` (``--device``). That trainer (written into the venv's ``nnunetv2/training/nnUNetTrainer/``)
  is nnU-Net's default trainer (plan, augmentation, SGD + poly LR decay) with 50 iterations per epoch (and 10
  validation iterations: nnU-Net's 5:1 ratio), an epoch count first set to budget / (50 × ``--nnunet-sec-per-iter``)
  and then re-planned after every epoch from the measured epoch time so that training ends by the deadline
  (the poly decay follows the new count); the script still stops it if it overruns. Curve and time to 0.85:
  the ``Pseudo dice`` lines of its training log (patch-based, on the validation cases), in seconds since
  ``nnUNetv2_train`` started. Scoring: ``nnUNetPredictor`` (the code behind ``nnUNetv2_predict``) on the raw
  validation images with its default mirroring TTA, and once more without (``--disable_tta``).

Device: ``--device`` (default ``cpu``; ``cuda`` on a GPU machine) is where all three train and predict: medseg's
``train`` and ``predict`` get it as ``--device``, the MONAI loop moves its network and batches there, nnU-Net gets
``-device``. On CUDA medseg's planner sizes the batch for the GPU's memory; the MONAI loop keeps its recipe (fp32).

Threads: every process gets ``OMP_NUM_THREADS=--threads`` (default: $OMP_NUM_THREADS, else all CPUs) and torch
is held to that many threads (nnU-Net's CLI would otherwise take every CPU). The data workers are each
system's default (medseg: CPUs - 1; nnU-Net: ``nnUNet_n_proc_DA`` or min(12, CPUs); MONAI: cached data, none).

Results: ``benchmarks/results/train_hippocampus.json`` (``--out``), one object per system (``medseg``,
``nnunet``, ``monai``) written as soon as that system is done and merged into the existing file, so
``--systems nnunet`` replaces only nnU-Net's entry. Run it alone on the machine (about 2 h for 40-minute budgets
plus setup and prediction):

    nohup .venv/bin/python benchmarks/train_hippocampus.py > /tmp/h.log 2>&1 &
    .venv/bin/python benchmarks/train_hippocampus.py --systems nnunet --prepare-only   # nnU-Net setup ahead

Smoke tests (minutes, not hours; scratch output):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_hippocampus.py --minutes 1 --systems medseg,monai \\
        --out /tmp/h.json --medseg-extra "--iterations-per-epoch 5" --max-val-cases 8 --skip-no-tta
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_hippocampus.py --minutes 1.5 --systems nnunet \\
        --out /tmp/h.json --nnunet-iterations 5 --nnunet-da-procs 1 --nnunet-skip-own-validation \\
        --max-val-cases 8 --skip-no-tta
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
RAW = SHARED / "3d" / "hippocampus"
DATASET = REPO / "data" / "hippocampus"
OUT = REPO / "benchmarks" / "results" / "train_hippocampus.json"
NNUNET_VENV = REPO / "benchmarks" / ".venv-nnunet"
FOLD = 0
LABELS = {"anterior": 1, "posterior": 2}
TARGET = 0.85
SYSTEMS = ("medseg", "monai", "nnunet")
MEDSEG_RUN = "bench_hippocampus_unet3d"
#: seconds of the medseg budget left for starting Python and planning (outside ``--time-limit``)
STARTUP_S = 30.0
MONAI_ROI = (48, 64, 48)
NNUNET_ID, NNUNET_NAME = 4, "Dataset004_Hippocampus"
NNUNET_TRAINER = "nnUNetTrainerMedsegBench"

from common import machine  # noqa: E402  (benchmarks/common.py)


def say(*parts) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}]", *parts, flush=True)


# ----------------------------------------------------------------------------------------------------- data, scores
def fold_cases(fold: int = FOLD) -> tuple[list[str], list[str]]:
    """medseg's split (case ids are the stems of imagesTr/*.nii.gz)."""
    split = json.loads((DATASET / "splits.json").read_text())[fold]
    return list(split["train"]), list(split["val"])


def scored_cases(args) -> list[str]:
    """The fold's validation cases (the first ``--max-val-cases`` of them in smoke tests)."""
    val = fold_cases()[1]
    return val[:args.max_val_cases] if args.max_val_cases else val


def raw_image(case: str) -> Path:
    return RAW / "imagesTr" / f"{case}.nii.gz"


def raw_label(case: str) -> Path:
    return RAW / "labelsTr" / f"{case}.nii.gz"


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine


def case_dice(pred: np.ndarray, ref: np.ndarray) -> tuple[dict[str, float], dict[str, tuple[int, int, int]]]:
    """Dice of each label (medseg.metrics.overlap; both empty → 1.0) and its (TP, FP, FN) for the pooled Dice."""
    from medseg.metrics.overlap import confusion, overlap_metrics

    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    dice, counts = {}, {}
    for name, value in LABELS.items():
        c = confusion(pred == value, ref == value)
        d = overlap_metrics(c)["dice"]
        dice[name] = 1.0 if math.isnan(d) else d
        counts[name] = (c.tp, c.fp, c.fn)
    return dice, counts


def summarize(per_case: dict[str, dict[str, float]], counts: dict[str, dict[str, tuple]]) -> dict:
    """Mean over cases per label, the mean of the two, and the pooled (all voxels of all cases) Dice."""
    out = {f"dice_{name}": float(np.mean([d[name] for d in per_case.values()])) for name in LABELS}
    out["dice_mean"] = float(np.mean([out[f"dice_{name}"] for name in LABELS]))
    pooled = {}
    for name in LABELS:
        tp, fp, fn = (sum(c[name][i] for c in counts.values()) for i in range(3))
        pooled[name] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    pooled["mean"] = float(np.mean([pooled[name] for name in LABELS]))
    out["dice_pooled"] = {k: round(v, 5) for k, v in pooled.items()}
    out["cases_scored"] = len(per_case)
    return out


def score_folder(folder: Path, cases: list[str]) -> dict:
    """Score ``folder/<case>.nii.gz`` against labelsTr: same grid required (shape and affine)."""
    per_case, counts = {}, {}
    for case in cases:
        path = folder / f"{case}.nii.gz"
        if not path.exists():
            raise FileNotFoundError(f"no prediction for {case} in {folder}")
        pred, pred_affine = read_nifti(path)
        ref, ref_affine = read_nifti(raw_label(case))
        if not np.allclose(pred_affine, ref_affine, atol=1e-3):
            raise ValueError(f"{case}: prediction affine differs from the reference affine")
        per_case[case], counts[case] = case_dice(np.rint(pred).astype(np.int16), ref.astype(np.int16))
    result = summarize(per_case, counts)
    result["per_case"] = {c: {k: round(v, 4) for k, v in d.items()} for c, d in per_case.items()}
    return result


def time_to_target(curve: list[list[float]], target: float = TARGET) -> float | None:
    return next((t for t, d in curve if d is not None and d >= target), None)


def rounded(curve) -> list[list[float]]:
    return [[round(float(t), 1), round(float(d), 4)] for t, d in curve]


# ------------------------------------------------------------------------------------------------ results file
def save_result(out: Path, system: str, result: dict, header: dict) -> None:
    """Merge one system's result (and the header) into the JSON file, atomically."""
    data = {}
    if out.exists():
        try:
            data = json.loads(out.read_text())
        except json.JSONDecodeError:
            say(f"warning: {out} is not valid JSON; starting it again")
    old_budget = data.get("budget_minutes")
    if old_budget is not None and old_budget != header["budget_minutes"]:
        others = [s for s in SYSTEMS if s in data and s != system]
        if others:
            say(f"warning: {out} holds {others} trained for {old_budget} min, this run uses "
                f"{header['budget_minutes']} min (each system records its own budget_s)")
    data.update(header)
    data[system] = result
    ordered = {k: v for k, v in data.items() if k not in SYSTEMS}
    ordered.update({s: data[s] for s in SYSTEMS if s in data})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.partial")
    tmp.write_text(json.dumps(ordered, indent=2))
    os.replace(tmp, out)


# ---------------------------------------------------------------------------------------------------- processes
def stop(process: subprocess.Popen, name: str, sigint_wait: float = 60.0, sigterm_wait: float = 30.0) -> None:
    """SIGINT to the process, then SIGTERM, then SIGKILL to its process group (it runs in its own session)."""
    if process.poll() is not None:
        return
    say(f"{name}: budget over, sending SIGINT to {process.pid}")
    process.send_signal(signal.SIGINT)
    try:
        process.wait(sigint_wait)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig, wait in ((signal.SIGTERM, sigterm_wait), (signal.SIGKILL, 30.0)):
        say(f"{name}: still running, sending {sig.name} to process group {process.pid}")
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_group(process: subprocess.Popen) -> None:
    """Leftover children of a finished process (data-loader workers) in its own process group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def run_logged(command: list[str], log: Path, env: dict | None = None, cwd: Path = REPO,
               timeout: float | None = None) -> float:
    """Run to completion with output appended to ``log``; seconds taken. Raises on a non-zero exit."""
    text = " ".join("<script>" if "\n" in str(a) else str(a) for a in command)
    say("running:", text if len(text) < 400 else f"{text[:200]} ... {text[-180:]}")
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(map(str, command))}\n")
        fh.flush()
        done = subprocess.run(command, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{command[0]} exited {done.returncode} (log {log}): " + " | ".join(tail))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------- medseg
def run_medseg(args, budget_s: float, work: Path, env: dict) -> dict:
    val = scored_cases(args)
    run_dir = REPO / "models" / MEDSEG_RUN
    medseg = [sys.executable, "-m", "medseg"]
    limit_min = max(budget_s - STARTUP_S, budget_s / 2) / 60
    command = [*medseg, "train", "hippocampus", "--arch", "unet3d", "--fold", str(FOLD), "--run-name", MEDSEG_RUN,
               "--overwrite", "--time-limit", f"{limit_min:.3f}", "--device", args.device,
               *shlex.split(args.medseg_extra)]
    log = work / "medseg_train.log"
    log.write_text("")
    say("medseg: running", " ".join(command[2:]), f"for {budget_s:.0f} s (log {log})")
    with open(log, "a") as fh:
        t0 = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        while process.poll() is None and time.perf_counter() - t0 < budget_s:
            time.sleep(min(2.0, max(0.05, budget_s - (time.perf_counter() - t0))))
        stopped = process.poll() is None
        train_wall = time.perf_counter() - t0
        stop(process, "medseg")
        kill_group(process)
    say(f"medseg: training ended after {train_wall:.0f} s (exit {process.returncode})")

    rows = []
    if (run_dir / "log.csv").exists():
        with open(run_dir / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    header = list(rows[0].keys()) if rows else []
    per_label_cols = [c for c in header if c.startswith("val_dice_")]
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    data_cfg = config.get("data") or {}
    batch, ipe = data_cfg.get("batch_size"), data_cfg.get("iterations_per_epoch")
    validated = [r for r in rows if r.get("val_dice")]
    curve = [[float(r["wall_time_s"]), float(r["val_dice"])] for r in validated]
    epochs = int(float(rows[-1]["epoch"])) if rows else 0
    samples = epochs * (ipe or 0) * (batch or 0)
    train_only_s = sum(ipe * batch / float(r["samples_per_s"]) for r in rows
                       if r.get("samples_per_s") and float(r["samples_per_s"]) > 0) if batch and ipe else 0.0
    result = {
        "system": "medseg", "command": " ".join(["medseg", *command[3:]]), "budget_s": round(budget_s, 1),
        "train_wall_s": round(train_wall, 1), "stopped_by_budget": stopped, "exit_code": process.returncode,
        "epochs": epochs, "iterations_per_epoch": ipe, "batch_size": batch, "steps": epochs * (ipe or 0),
        "patch_size": data_cfg.get("patch_size"), "epochs_planned": (config.get("train") or {}).get("epochs"),
        "amp": (config.get("train") or {}).get("amp"),
        "samples_per_s": round(samples / train_only_s, 3) if train_only_s else None,
        "samples_per_s_note": "training iterations only (log.csv samples_per_s of each finished epoch); "
                              "an interrupted epoch's work is lost and not counted",
        "samples_per_s_wall": round(samples / float(rows[-1]["wall_time_s"]), 3) if rows else None,
        "train_best_val_dice": max((d for _, d in curve), default=None),
        "train_last_val_dice": curve[-1][1] if curve else None,
        "train_last_val_dice_per_label": {c.removeprefix("val_dice_"): float(validated[-1][c])
                                          for c in per_label_cols} if validated else None,
        "log_columns": header,
        "time_to_dice_085_s": time_to_target(curve),
        "curve": rounded(curve),
        "curve_source": "log.csv: [wall_time_s (from the start of the training loop, validation included), "
                        "val_dice (medseg's own validation, mean of anterior/posterior)] per epoch",
        "run_dir": str(run_dir.relative_to(REPO)),
    }
    checkpoint = run_dir / "checkpoint_last.pt" if (run_dir / "checkpoint_last.pt").exists() else None
    if checkpoint is None:
        say("medseg: no checkpoint (no epoch finished within the budget): nothing to score")
        result.update(dice_anterior=None, dice_posterior=None, dice_mean=None, checkpoint=None)
        return result
    result["checkpoint"] = checkpoint.name
    inputs = [str(raw_image(c)) for c in val]
    plog = work / "medseg_predict.log"
    plog.write_text("")
    for tta in (True, False)[:1 if args.skip_no_tta else 2]:
        pred_dir = work / ("medseg_pred" if tta else "medseg_pred_notta")
        shutil.rmtree(pred_dir, ignore_errors=True)
        seconds = run_logged([*medseg, "predict", *inputs, "-o", str(pred_dir), "--model", str(checkpoint),
                              "--device", args.device, "--overwrite", *([] if tta else ["--no-tta"])], plog, env=env)
        scores = score_folder(pred_dir, val)
        if tta:
            result.update(scores)
            result.update(predict_s=round(seconds, 1), tta="medseg predict default: all 8 flip combinations")
        else:
            result["no_tta"] = {"predict_s": round(seconds, 1), "dice_anterior": scores["dice_anterior"],
                                "dice_posterior": scores["dice_posterior"], "dice_mean": scores["dice_mean"]}
    say(f"medseg: Dice anterior {result['dice_anterior']:.4f}, posterior {result['dice_posterior']:.4f}")
    return result


# ------------------------------------------------------------------------------------------------------ MONAI
def run_monai(args, budget_s: float, work: Path, env: dict) -> dict:
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (Compose, EnsureChannelFirst, EnsureChannelFirstd, LoadImage, LoadImaged,
                                  NormalizeIntensity, NormalizeIntensityd, RandFlipd, ResizeWithPadOrCropd)
    from monai.utils import set_determinism

    torch.set_num_threads(args.threads)
    set_determinism(seed=0)
    train, val = fold_cases()[0], scored_cases(args)
    keys = ["image", "label"]
    files = [{"image": str(raw_image(c)), "label": str(raw_label(c))} for c in train]
    transforms = Compose([
        LoadImaged(keys, reader="NibabelReader"), EnsureChannelFirstd(keys),
        NormalizeIntensityd("image", nonzero=False, channel_wise=True),
        ResizeWithPadOrCropd(keys, spatial_size=MONAI_ROI),  # symmetric zero padding (every case fits)
        RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
    ])
    t_cache = time.perf_counter()
    dataset = CacheDataset(files, transforms, cache_rate=1.0, num_workers=0, progress=False)
    cache_s = time.perf_counter() - t_cache
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0, drop_last=True)
    device = torch.device(args.device)
    model = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128, 256),
                 strides=(2, 2, 2, 2), num_res_units=2).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    preprocess = Compose([LoadImage(image_only=True, reader="NibabelReader"), EnsureChannelFirst(),
                          NormalizeIntensity(nonzero=False, channel_wise=True)])
    val_images = {c: preprocess(str(raw_image(c))) for c in val}
    val_labels = {c: read_nifti(raw_label(c))[0].astype(np.int16) for c in val}

    def predict(image) -> np.ndarray:
        """Zero-pad (symmetric, as in training) to the ROI, argmax, crop back to the original grid."""
        shape = image.shape[1:]
        if any(s > r for s, r in zip(shape, MONAI_ROI)):
            raise ValueError(f"volume {shape} larger than the MONAI ROI {MONAI_ROI}")
        before = [(r - s) // 2 for s, r in zip(shape, MONAI_ROI)]
        x = torch.zeros((1, 1, *MONAI_ROI))
        x[(0, 0, *(slice(b, b + s) for b, s in zip(before, shape)))] = torch.as_tensor(np.asarray(image[0]))
        with torch.no_grad():
            out = model(x.to(device)).argmax(1)[0].cpu()
        return out[tuple(slice(b, b + s) for b, s in zip(before, shape))].numpy().astype(np.uint8)

    def validate() -> tuple[float, float, float]:
        model.eval()
        t = time.perf_counter()
        per_case, counts = {}, {}
        for c in val:
            per_case[c], counts[c] = case_dice(predict(val_images[c]), val_labels[c])
        s = summarize(per_case, counts)
        model.train()
        return s["dice_mean"], time.perf_counter() - t, s

    say(f"monai: training for {budget_s:.0f} s of training steps ({len(files)} cached volumes in {cache_s:.0f} s)")
    model.train()
    train_s, steps, next_val, curve, val_s = 0.0, 0, args.monai_val_every_s, [], 0.0
    last_loss = math.nan
    while train_s < budget_s:
        batches = iter(loader)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"].to(device)), batch["label"].to(device))
            loss.backward()
            optimizer.step()
            last_loss = loss.item()  # waits for the device: the step is timed whole
            train_s += time.perf_counter() - t
            steps += 1
            if train_s >= next_val:
                dice, seconds, _ = validate()
                val_s += seconds
                curve.append([train_s, dice])
                say(f"monai: {train_s:.0f} s, step {steps}, loss {last_loss:.4f}, validation mean Dice {dice:.4f}")
                next_val += args.monai_val_every_s
            if train_s >= budget_s:
                break
    if not curve or curve[-1][0] != train_s:
        dice, seconds, _ = validate()
        val_s += seconds
        curve.append([train_s, dice])

    # final scoring: write the predictions of the final weights in the original grid, score the files
    import nibabel as nib

    pred_dir = work / "monai_pred"
    shutil.rmtree(pred_dir, ignore_errors=True)
    pred_dir.mkdir(parents=True)
    model.eval()
    t = time.perf_counter()
    for c in val:
        img = nib.load(str(raw_image(c)))
        image = preprocess(str(raw_image(c)))
        nib.save(nib.Nifti1Image(predict(image), img.affine), str(pred_dir / f"{c}.nii.gz"))
    predict_s = time.perf_counter() - t
    result = {
        "system": "monai", "budget_s": round(budget_s, 1), "train_wall_s": round(train_s, 1),
        "train_wall_note": "training steps only (batch fetch, forward, backward, step); validation passes excluded",
        "validation_s_total": round(val_s, 1), "cache_s": round(cache_s, 1),
        "steps": steps, "epochs": round(steps / len(loader), 2), "steps_per_epoch": len(loader),
        "batch_size": 4, "input_size": list(MONAI_ROI), "last_train_loss": round(last_loss, 4),
        "samples_per_s": round(steps * 4 / train_s, 3) if train_s else None,
        "network": "monai UNet(3D, 1→3, channels 16-256, strides 2×4, num_res_units=2)",
        "recipe": "DiceCELoss(to_onehot_y, softmax), Adam 1e-3 constant, whole volumes zero-padded to 48×64×48, "
                  f"RandFlipd p=0.5 per axis, fp32, {device.type.upper()}",
        "time_to_dice_085_s": time_to_target(curve), "curve": rounded(curve),
        "curve_source": f"validation every ~{args.monai_val_every_s:.0f} s of training steps: the {len(val)} validation "
                        "volumes predicted whole (no TTA), mean over cases of the mean anterior/posterior Dice",
        "weights": "final", "predict_s": round(predict_s, 1), "tta": None,
    }
    result.update(score_folder(pred_dir, val))
    say(f"monai: Dice anterior {result['dice_anterior']:.4f}, posterior {result['dice_posterior']:.4f}")
    return result


# ----------------------------------------------------------------------------------------------------- nnU-Net
TRAINER_SOURCE = '''"""Written by medseg's benchmarks/train_hippocampus.py: nnU-Net's default trainer with a wall-clock budget.

num_iterations_per_epoch and num_epochs come from the environment (MEDSEG_BENCH_ITERATIONS, MEDSEG_BENCH_EPOCHS);
with MEDSEG_BENCH_DEADLINE (a time.time() value) the epoch count is planned again after every epoch from the
measured epoch time so that training ends by the deadline; the poly LR decay follows the new count. Torch threads:
MEDSEG_BENCH_THREADS (nnUNetv2_train -device cpu would take every CPU). MEDSEG_BENCH_SKIP_VALIDATION=1 skips
the validation nnU-Net runs after training."""

import os
import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerMedsegBench(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        env = os.environ
        self.num_iterations_per_epoch = int(env.get("MEDSEG_BENCH_ITERATIONS", 50))
        self.num_val_iterations_per_epoch = int(env.get("MEDSEG_BENCH_VAL_ITERATIONS",
                                                        max(1, self.num_iterations_per_epoch // 5)))
        self.num_epochs = int(env.get("MEDSEG_BENCH_EPOCHS", 1000))
        self.bench_deadline = float(env["MEDSEG_BENCH_DEADLINE"]) if env.get("MEDSEG_BENCH_DEADLINE") else None
        if env.get("MEDSEG_BENCH_THREADS"):
            torch.set_num_threads(int(env["MEDSEG_BENCH_THREADS"]))
        self.bench_epoch_seconds = []

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("MEDSEG_BENCH_SKIP_VALIDATION") == "1":
            self.print_to_log_file("medseg_bench: own validation skipped")
            return
        super().perform_actual_validation(save_probabilities)

    def replan(self):
        if self.bench_deadline is None or not self.bench_epoch_seconds:
            return
        per_epoch = sum(self.bench_epoch_seconds) / len(self.bench_epoch_seconds)
        more = max(0, int((self.bench_deadline - time.time()) // per_epoch))
        planned = self.current_epoch + more
        if planned != self.num_epochs:
            self.print_to_log_file(f"medseg_bench: epochs {self.num_epochs} -> {planned} "
                                   f"({per_epoch:.1f} s per epoch, {self.bench_deadline - time.time():.0f} s left)")
            self.num_epochs = planned
            self.lr_scheduler.max_steps = planned

    def run_training(self):
        self.on_train_start()
        self.print_to_log_file(f"medseg_bench: {self.num_epochs} epochs of {self.num_iterations_per_epoch} "
                               f"iterations ({self.num_val_iterations_per_epoch} validation iterations), "
                               f"batch {self.batch_size}, torch threads {torch.get_num_threads()}")
        self.replan()
        while self.current_epoch < self.num_epochs:
            t_epoch = time.time()
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            t_train = time.perf_counter()
            for batch_id in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
            self.print_to_log_file(f"medseg_bench train_seconds {time.perf_counter() - t_train:.3f}")
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = []
                for batch_id in range(self.num_val_iterations_per_epoch):
                    val_outputs.append(self.validation_step(next(self.dataloader_val)))
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            self.bench_epoch_seconds.append(time.time() - t_epoch)
            self.replan()
        self.on_train_end()
'''

PREDICT_SOURCE = r'''
import os, sys, time, torch
threads, model_dir, chk, src, dst, tta, device = sys.argv[1:8]
torch.set_num_threads(int(threads))
os.makedirs(dst, exist_ok=True)
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta == "1", perform_everything_on_device=False,
                    device=torch.device(device), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
p.initialize_from_trained_model_folder(model_dir, (0,), checkpoint_name=chk)
t = time.perf_counter()
p.predict_from_files_sequential(src, dst, save_probabilities=False, overwrite=True)
print(f"medseg_bench predict_seconds {time.perf_counter() - t:.3f}")
'''

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): (.*)$")


def torch_device_type(device: str) -> str:
    """nnUNetv2_train's -device takes a type (cpu, cuda, mps), not an index."""
    return device.split(":")[0]


def nnunet_bin(name: str) -> Path:
    return NNUNET_VENV / "bin" / name


def ensure_nnunet_venv(work: Path) -> None:
    """``python3 -m venv benchmarks/.venv-nnunet`` + ``pip install nnunetv2``, once."""
    if nnunet_bin("nnUNetv2_train").exists():
        return
    python3 = shutil.which("python3") or sys.executable
    log = work / "nnunet_install.log"
    say(f"nnunet: creating {NNUNET_VENV} and installing nnunetv2 (several GB; log {log})")
    run_logged([python3, "-m", "venv", str(NNUNET_VENV)], log)
    run_logged([str(nnunet_bin("pip")), "install", "nnunetv2"], log)


def nnunet_package_dir() -> Path:
    out = subprocess.run([str(nnunet_bin("python")), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return Path(out.stdout.strip())


def parse_nnunet_log(path: Path, t0_epoch: float) -> dict:
    """Pseudo Dice per epoch ([s since launch, mean of the labels]), train seconds, epochs, replans."""
    curve, train_seconds, replans, epoch_times = [], [], [], []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line.strip())
        if not m:
            continue
        stamp, text = dt.datetime.fromisoformat(m.group(1)).timestamp() - t0_epoch, m.group(2)
        if text.startswith("Pseudo dice"):
            body = re.sub(r"np\.float\d+\(", "", text[len("Pseudo dice"):])
            values = [float(v) for v in re.findall(r"nan|[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?", body)]
            curve.append([stamp, float(np.nanmean(values)) if values else math.nan, values])
        elif text.startswith("medseg_bench train_seconds"):
            train_seconds.append(float(text.split()[-1]))
        elif text.startswith("medseg_bench: epochs"):
            replans.append(text.removeprefix("medseg_bench: "))
        elif text.startswith("Epoch time:"):
            epoch_times.append(float(text.split()[2]))
    return {"curve": curve, "train_seconds": train_seconds, "replans": replans, "epoch_times": epoch_times}


def prepare_nnunet(args, work: Path, env: dict) -> dict:
    """venv, raw dataset (symlinks), preprocessing (once), splits_final.json, the trainer file."""
    train, val = fold_cases()
    ensure_nnunet_venv(work)
    root = work / "nnunet"
    raw, pre, res = root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results"
    nenv = {**env, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre), "nnUNet_results": str(res),
            "nnUNet_def_n_proc": str(args.threads), "MEDSEG_BENCH_THREADS": str(args.threads),
            "MKL_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads)}
    if args.nnunet_da_procs is not None:
        nenv["nnUNet_n_proc_DA"] = str(args.nnunet_da_procs)
    log = work / "nnunet.log"

    # raw dataset (symlinks) with every case of the split, v2 dataset.json
    ds = raw / NNUNET_NAME
    cases = sorted(set(train) | set(val))
    for sub in ("imagesTr", "labelsTr"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    for c in cases:
        for link, target in ((ds / "imagesTr" / f"{c}_0000.nii.gz", raw_image(c)), (ds / "labelsTr" / f"{c}.nii.gz", raw_label(c))):
            if not link.is_symlink():
                link.symlink_to(target)
    (ds / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(cases), "file_ending": ".nii.gz", "name": "Hippocampus (MSD Task04) for medseg's benchmark",
    }, indent=2))
    val_dir = root / "val_images"  # the raw images to predict
    shutil.rmtree(val_dir, ignore_errors=True)
    val_dir.mkdir(parents=True)
    for c in scored_cases(args):
        (val_dir / f"{c}_0000.nii.gz").symlink_to(raw_image(c))

    # plan and preprocess once (not counted in the budget)
    marker = pre / NNUNET_NAME / "medseg_bench_preprocess.json"
    if args.nnunet_redo_preprocess or not marker.exists():
        shutil.rmtree(pre / NNUNET_NAME, ignore_errors=True)
        seconds = run_logged([str(nnunet_bin("nnUNetv2_plan_and_preprocess")), "-d", str(NNUNET_ID), "-c", "3d_fullres",
                              "--verify_dataset_integrity", "-npfp", str(args.threads), "-np", str(args.threads)],
                             log, env=nenv)
        marker.write_text(json.dumps({"seconds": round(seconds, 1), "date": dt.datetime.now().isoformat(timespec="seconds")}))
    preprocess = json.loads(marker.read_text())
    splits = json.loads((DATASET / "splits.json").read_text())  # same format: [{"train": [...], "val": [...]}, ...]
    (pre / NNUNET_NAME / "splits_final.json").write_text(json.dumps(splits, indent=2))
    plans = json.loads((pre / NNUNET_NAME / "nnUNetPlans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]

    # the trainer, where nnU-Net looks for trainers
    trainer_file = nnunet_package_dir() / "training" / "nnUNetTrainer" / f"{NNUNET_TRAINER}.py"
    if not trainer_file.exists() or trainer_file.read_text() != TRAINER_SOURCE:
        trainer_file.write_text(TRAINER_SOURCE)
    return {"root": root, "res": res, "val_dir": val_dir, "env": nenv, "log": log, "fullres": fullres,
            "preprocess": preprocess}


def run_nnunet(args, budget_s: float, work: Path, env: dict) -> dict:
    val = scored_cases(args)
    prep = prepare_nnunet(args, work, env)
    root, res, val_dir, nenv, log = prep["root"], prep["res"], prep["val_dir"], prep["env"], prep["log"]
    fullres, preprocess = prep["fullres"], prep["preprocess"]
    iters = args.nnunet_iterations
    epochs0 = max(1, int(budget_s / (iters * args.nnunet_sec_per_iter)))
    out_dir = res / NNUNET_NAME / f"{NNUNET_TRAINER}__nnUNetPlans__3d_fullres"
    fold_dir = out_dir / f"fold_{FOLD}"
    shutil.rmtree(out_dir, ignore_errors=True)
    t0_epoch = time.time()
    tenv = {**nenv, "MEDSEG_BENCH_ITERATIONS": str(iters), "MEDSEG_BENCH_EPOCHS": str(epochs0),
            "MEDSEG_BENCH_DEADLINE": "" if args.nnunet_fixed_epochs else str(t0_epoch + budget_s),
            "MEDSEG_BENCH_SKIP_VALIDATION": "1" if args.nnunet_skip_own_validation else "0"}
    command = [str(nnunet_bin("nnUNetv2_train")), str(NNUNET_ID), "3d_fullres", str(FOLD), "-tr", NNUNET_TRAINER,
               "-device", torch_device_type(args.device)]
    say(f"nnunet: {' '.join(command[1:])} for {budget_s:.0f} s (first plan: {epochs0} epochs × {iters} iterations; log {log})")
    t0 = time.perf_counter()
    stopped, train_wall, final = False, None, fold_dir / "checkpoint_final.pth"
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(command)}\n")
        fh.flush()
        process = subprocess.Popen(command, cwd=REPO, env=tenv, stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        while process.poll() is None:
            elapsed = time.perf_counter() - t0
            if train_wall is None and final.exists():
                train_wall = elapsed
                say(f"nnunet: training done after {elapsed:.0f} s; its own validation runs now")
            if train_wall is None and elapsed > budget_s + args.nnunet_grace_s:
                train_wall, stopped = elapsed, True
                stop(process, "nnunet")
                break
            if train_wall is not None and elapsed - train_wall > args.nnunet_validation_timeout_s:
                say("nnunet: its own validation is taking too long; stopping it")
                stop(process, "nnunet (validation)")
                break
            time.sleep(2.0)
        kill_group(process)
    if train_wall is None:
        train_wall = time.perf_counter() - t0
    if process.returncode not in (0, None) and not stopped and not final.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"nnUNetv2_train exited {process.returncode}: " + " | ".join(tail))

    logs = sorted(fold_dir.glob("training_log_*.txt"))
    parsed = parse_nnunet_log(logs[-1], t0_epoch) if logs else {"curve": [], "train_seconds": [], "replans": [],
                                                                  "epoch_times": []}
    curve = [[t, d] for t, d, _ in parsed["curve"]]
    epochs = len(parsed["train_seconds"])
    batch = fullres.get("batch_size")
    samples = epochs * iters * (batch or 0)
    own = None
    if (fold_dir / "validation" / "summary.json").exists():
        summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
        own = {"dice_mean": summary["foreground_mean"]["Dice"],
               **{name: summary["mean"][str(v)]["Dice"] for name, v in LABELS.items() if str(v) in summary["mean"]}}
    result = {
        "system": "nnunet", "command": " ".join(["nnUNetv2_train", *command[1:]]), "budget_s": round(budget_s, 1),
        "train_wall_s": round(train_wall, 1), "stopped_by_budget": stopped, "exit_code": process.returncode,
        "nnunetv2_version": subprocess.run([str(nnunet_bin("python")), "-c",
                                            "import importlib.metadata as m; print(m.version('nnunetv2'), m.version('torch'))"],
                                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split(),
        "plan_3d_fullres": {"patch_size": fullres.get("patch_size"), "batch_size": batch, "spacing": fullres.get("spacing"),
                            "features_per_stage": (fullres.get("architecture") or {}).get("arch_kwargs", {}).get("features_per_stage")},
        "preprocess_s": preprocess.get("seconds"),
        "iterations_per_epoch": iters, "val_iterations_per_epoch": max(1, iters // 5), "epochs_first_plan": epochs0,
        "sec_per_iter_assumed": args.nnunet_sec_per_iter, "epoch_replans": parsed["replans"],
        "epochs": epochs, "steps": epochs * iters, "batch_size": batch,
        "samples_per_s": round(samples / sum(parsed["train_seconds"]), 3) if parsed["train_seconds"] else None,
        "samples_per_s_note": "training iterations only (timed by the trainer; its validation iterations excluded)",
        "epoch_times_s": [round(t, 1) for t in parsed["epoch_times"]],
        "data_augmentation_processes": args.nnunet_da_procs if args.nnunet_da_procs is not None
        else f"nnU-Net default (min(12, CPUs) = {min(12, os.cpu_count() or 1)})",
        "time_to_dice_085_s": time_to_target(curve), "curve": rounded(curve),
        "curve_per_label": [[round(t, 1), [round(v, 4) for v in vs]] for t, _, vs in parsed["curve"]],
        "curve_source": "training log 'Pseudo dice' per epoch (validation patches of the fold's validation cases, "
                        "pooled per label; mean of anterior/posterior), seconds since nnUNetv2_train started",
        "own_validation": own, "work_dir": str(root),
    }
    checkpoint = next((n for n in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
                       if (fold_dir / n).exists()), None)
    result["checkpoint"] = checkpoint
    if checkpoint is None:
        say("nnunet: no checkpoint: nothing to score")
        result.update(dice_anterior=None, dice_posterior=None, dice_mean=None)
        return result
    for tta in (True, False)[:1 if args.skip_no_tta else 2]:
        pred_dir = root / ("pred" if tta else "pred_notta")
        shutil.rmtree(pred_dir, ignore_errors=True)
        seconds = run_logged([str(nnunet_bin("python")), "-c", PREDICT_SOURCE, str(args.threads), str(out_dir),
                              checkpoint, str(val_dir), str(pred_dir), "1" if tta else "0", args.device],
                             log, env=nenv)
        scores = score_folder(pred_dir, val)
        if tta:
            result.update(scores)
            result.update(predict_s=round(seconds, 1),
                          tta="nnU-Net default mirroring (all 8 axis combinations), tile step 0.5, Gaussian weighting")
        else:
            result["no_tta"] = {"predict_s": round(seconds, 1), "dice_anterior": scores["dice_anterior"],
                                "dice_posterior": scores["dice_posterior"], "dice_mean": scores["dice_mean"]}
    result["predict_note"] = ("nnUNetPredictor.predict_from_files_sequential (nnUNetv2_predict -npp 0 -nps 0) in "
                              "the nnU-Net venv, torch threads = --threads; seconds include loading the model")
    say(f"nnunet: Dice anterior {result['dice_anterior']:.4f}, posterior {result['dice_posterior']:.4f}")
    return result


# -------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--minutes", type=float, default=40.0, help="training budget per system (default 40)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma-separated subset of medseg,monai,nnunet, run in this order")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results JSON (default {OUT.relative_to(REPO)})")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "medseg_bench_hippocampus",
                        help="predictions, logs and nnU-Net's folders")
    parser.add_argument("--device", default="cpu",
                        help="where all three train and predict: cpu (default) or cuda; the MONAI loop stays fp32")
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
                        help="OMP_NUM_THREADS / torch threads of every system (default $OMP_NUM_THREADS, else CPUs)")
    parser.add_argument("--medseg-extra", default="",
                        help="extra `medseg train` options, for smoke tests only (e.g. '--iterations-per-epoch 5')")
    parser.add_argument("--monai-val-every-s", type=float, default=120.0,
                        help="MONAI: seconds of training between validation passes")
    parser.add_argument("--nnunet-iterations", type=int, default=50, help="nnU-Net: iterations per epoch")
    parser.add_argument("--nnunet-sec-per-iter", type=float, default=6.9,
                        help="nnU-Net: assumed seconds per iteration for the first epoch plan")
    parser.add_argument("--nnunet-fixed-epochs", action="store_true",
                        help="nnU-Net: keep the first plan (no re-planning from measured epoch times)")
    parser.add_argument("--nnunet-grace-s", type=float, default=30.0,
                        help="nnU-Net: stop training this long after the budget if it has not finished")
    parser.add_argument("--nnunet-validation-timeout-s", type=float, default=1800.0,
                        help="nnU-Net: stop its own end-of-training validation after this long")
    parser.add_argument("--nnunet-da-procs", type=int, default=None,
                        help="nnU-Net: nnUNet_n_proc_DA (default: nnU-Net's own choice)")
    parser.add_argument("--nnunet-skip-own-validation", action="store_true",
                        help="nnU-Net: skip the validation nnUNetv2_train runs after training (a cross-check only)")
    parser.add_argument("--nnunet-redo-preprocess", action="store_true")
    parser.add_argument("--max-val-cases", type=int, default=None,
                        help="smoke tests: predict and score only the first N validation cases")
    parser.add_argument("--skip-no-tta", action="store_true",
                        help="medseg, nnU-Net: skip the second prediction pass without TTA")
    parser.add_argument("--prepare-only", action="store_true",
                        help="nnU-Net: create the venv, the raw dataset and the preprocessed data, then exit")
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        parser.error(f"unknown systems {unknown}; choose from {','.join(SYSTEMS)}")

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train, val = fold_cases()
    budget_s = args.minutes * 60.0
    header = {
        "benchmark": "train_hippocampus: medseg vs nnU-Net v2 vs plain MONAI, same fold-0 cases, same wall-clock "
                     "budget, one after another, scored with one function on the raw validation images",
        "machine": machine(), "device": args.device, "budget_minutes": args.minutes, "threads": args.threads,
        "fold": FOLD,
        "train_cases": len(train), "val_cases": len(val), "val_cases_scored": len(scored_cases(args)),
        "target_dice": TARGET,
        "score": "per case Dice of label 1 (anterior) and 2 (posterior) between the prediction and labelsTr in the "
                 "raw image grid (medseg.metrics.overlap), mean over the validation cases; dice_mean = mean of the "
                 "two; dice_pooled = Dice over all voxels of all cases",
        "command": shlex.join(["python", "benchmarks/train_hippocampus.py", *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    if args.prepare_only:
        if "nnunet" in systems:
            prep = prepare_nnunet(args, work, env)
            say(f"nnunet: prepared under {prep['root']} (preprocessing took {prep['preprocess']['seconds']} s)")
        return
    runners = {"medseg": run_medseg, "monai": run_monai, "nnunet": run_nnunet}
    for system in systems:
        say(f"=== {system}: {args.minutes:g} min budget ===")
        started = time.perf_counter()
        try:
            result = runners[system](args, budget_s, work, env)
            result["status"] = "done"
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON, the other systems still run
            say(f"{system} FAILED: {type(exc).__name__}: {exc}")
            result = {"system": system, "status": f"failed: {type(exc).__name__}: {exc}", "budget_s": budget_s}
        result["total_s"] = round(time.perf_counter() - started, 1)
        result["date"] = dt.datetime.now().isoformat(timespec="seconds")
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        save_result(args.out, system, result, header)
        say(f"{system}: written to {args.out}")
    summary = {s: {k: json.loads(args.out.read_text())[s].get(k) for k in
                   ("status", "dice_anterior", "dice_posterior", "dice_mean", "time_to_dice_085_s", "samples_per_s")}
               for s in systems}
    print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
