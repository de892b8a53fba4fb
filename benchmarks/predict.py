"""Inference benchmark: medseg's Predictor against a plain MONAI pipeline, TTA and CRF effects, CRF cost.

Run from the repository root: ``.venv/bin/python benchmarks/predict.py`` (``--help`` for options).
Writes ``benchmarks/results/predict.json`` with the machine it ran on.

1. Model: a small 3D U-Net (``unet3d``, base 4 channels, no deep supervision) trained for a few minutes
   with plain torch on the shared Hippocampus cases (preprocessed by medseg's own ``preprocess``), saved
   as a medseg run ``models/bench_predict_hippocampus/`` (reused when present; ``--retrain`` redoes it).
2. End to end per volume (read the NIfTI → label map written as NIfTI in the input geometry), on held-out
   cases, same model, same number of TTA passes, in the same run, interleaved:
   medseg ``Predictor`` vs MONAI (LoadImaged, EnsureChannelFirstd, Orientationd, Spacingd,
   NormalizeIntensityd, ``sliding_window_inference`` per flip, Invertd, AsDiscreted, SaveImaged).
3. Dice (mean of anterior/posterior) without and with TTA (flips, scales × flips), CRF (2D, 3D) and the
   largest-component filter (`--keep-largest`).
4. CRF seconds per volume on the spleen crop and the 20-slice CT (noisy probabilities made from their
   label maps): medseg 3D and 2D (uncertain region only) vs pydensecrf ``DenseCRF`` on the full volume.

``--run models/RUN [--source DIR [--images SUB --labels SUB]]`` instead writes only the TTA/CRF table of a
trained run (2D or 3D; ``--run models/RUN/checkpoint_last.pt`` for a checkpoint other than the best, ``--configs`` for
a subset of the settings) on its fold's validation cases, read from the raw files of ``DIR`` (the folder it was
ingested from, with ingest's ``--images``/``--labels``), to ``benchmarks/results/tta_crf_RUN.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medseg.inference.crf import CRFConfig, crf_refine  # noqa: E402
from medseg.inference.predictor import Predictor  # noqa: E402
from medseg.io import read_volume, write_volume  # noqa: E402
from medseg.preprocessing import preprocess  # noqa: E402

SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
HIPPO = SHARED / "3d" / "hippocampus"
RUN = REPO / "models" / "bench_predict_hippocampus"
LABELS = {"background": 0, "anterior": 1, "posterior": 2}
PATCH = (32, 32, 32)
PLAN = {"dims": 3, "modality": "MR", "channel_names": ["MRI"], "num_channels": 1, "labels": LABELS,
        "num_classes": 3, "canonical": "RAS", "target_spacing": [1.0, 1.0, 1.0],
        "normalization": [{"scheme": "zscore"}], "crop_nonzero": False, "median_shape": [36, 50, 35]}
FLIPS_ALL = [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


from common import machine  # noqa: E402  (benchmarks/common.py)


def hippocampus_cases() -> list[tuple[Path, Path]]:
    images = sorted((HIPPO / "imagesTr").glob("*.nii.gz"))
    return [(p, HIPPO / "labelsTr" / p.name) for p in images]


def mean_dice(pred: np.ndarray, ref: np.ndarray, classes=(1, 2)) -> float:
    """Mean Dice over ``classes`` (hippocampus: anterior, posterior)."""
    values = []
    for k in classes:
        a, b = pred == k, ref == k
        values.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    return float(np.mean(values))


# --- 1. model ----------------------------------------------------------------------------------------

def train(cases: list[tuple[Path, Path]], minutes: float, seed: int = 0) -> dict:
    """Plain-torch training of unet3d (base 4) on random 32³ crops; returns facts for the JSON."""
    from medseg import __version__
    from medseg.models import create_model
    from medseg.runs import save_checkpoint

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = []
    for image_path, label_path in cases:
        image, label, _ = preprocess(read_volume(image_path), PLAN, label=read_volume(label_path, as_label=True))
        data.append((image, label.astype(np.int64)))
    options = {"base_channels": 4, "deep_supervision": False}
    model = create_model("unet3d", 1, 3, **options)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def crop(image, label):
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(PATCH, image.shape[1:])]
        image, label = np.pad(image, pad), np.pad(label, pad)
        if rng.random() < 0.5 and (label > 0).any():  # centre on foreground half the time
            centre = np.argwhere(label[0] > 0)[rng.integers(0, int((label[0] > 0).sum()))]
            lo = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, PATCH, image.shape[1:])]
        else:
            lo = [int(rng.integers(0, s - p + 1)) for p, s in zip(PATCH, image.shape[1:])]
        sl = (slice(None), *(slice(a, a + p) for a, p in zip(lo, PATCH)))
        image, label = image[sl], label[sl]
        for axis in range(3):
            if rng.random() < 0.5:
                image, label = np.flip(image, axis + 1), np.flip(label, axis + 1)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    start, steps, losses = time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - start < minutes * 60:
        batch = [crop(*data[i]) for i in rng.integers(0, len(data), 4)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1][0] for b in batch]))
        logits = model(x)
        probs = torch.softmax(logits, 1)
        onehot = torch.nn.functional.one_hot(y, 3).movedim(-1, 1).float()
        inter = (probs * onehot).sum((0, 2, 3, 4))[1:]
        dice = (2 * inter + 1) / (probs.sum((0, 2, 3, 4))[1:] + onehot.sum((0, 2, 3, 4))[1:] + 1)
        loss = torch.nn.functional.cross_entropy(logits, y) + (1 - dice.mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        steps += 1
    model.eval()
    checkpoint = {"medseg_version": __version__, "arch": "unet3d", "model_options": options, "in_channels": 1,
                  "num_classes": 3, "model": model.state_dict(), "plan": PLAN, "labels": LABELS, "spatial_dims": 3,
                  "patch_size": list(PATCH), "activation": "softmax", "epoch": 1, "best_dice": 0.0,
                  "config": {"benchmark": "benchmarks/predict.py", "train_cases": len(cases), "steps": steps,
                             "minutes": minutes, "final_loss": float(np.mean(losses[-20:]))}}
    save_checkpoint(checkpoint, RUN / "checkpoint_best.pt")
    return {"train_cases": len(cases), "steps": steps, "minutes": minutes, "final_loss": float(np.mean(losses[-20:]))}


# --- 2. end to end: medseg vs MONAI ------------------------------------------------------------------

def medseg_end_to_end(predictor: Predictor, image_path: Path, out_dir: Path) -> tuple[float, float, np.ndarray]:
    """(wall seconds, CPU seconds of this process, labels) for read → predict → write."""
    start, cpu = time.perf_counter(), time.process_time()
    prediction = predictor.predict(image_path)
    write_volume(prediction.labels, out_dir / image_path.name)
    return time.perf_counter() - start, time.process_time() - cpu, prediction.labels.array[0]


def monai_pipeline(network: torch.nn.Module, flips: list[tuple[int, ...]]):
    """A plain MONAI inference pipeline (what a MONAI user writes), TTA as one sliding pass per flip."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import (AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged,
                                  NormalizeIntensityd, Orientationd, SaveImaged, Spacingd)

    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
                   Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
                   NormalizeIntensityd("image", channel_wise=True)])

    def run(image_path: Path, out_dir: Path) -> tuple[float, float, np.ndarray]:
        start, cpu = time.perf_counter(), time.process_time()
        data = pre({"image": str(image_path)})
        x = data["image"][None]
        with torch.no_grad():
            probs = None
            for f in flips:
                dims = [2 + a for a in f]
                xf = torch.flip(x, dims) if f else x
                out = sliding_window_inference(xf, PATCH, 2, network, overlap=0.5, mode="gaussian")
                out = torch.softmax(out, 1)
                out = torch.flip(out, dims) if f else out
                probs = out if probs is None else probs + out
            probs = probs / len(flips)
        data["pred"] = probs[0]
        post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
                        AsDiscreted("pred", argmax=True),
                        SaveImaged("pred", output_dir=str(out_dir), output_postfix="monai", separate_folder=False,
                                   print_log=False, output_dtype=np.uint8)])
        data = post(data)
        return time.perf_counter() - start, time.process_time() - cpu, np.asarray(data["pred"][0]).astype(np.uint8)

    return run


def end_to_end(test: list[tuple[Path, Path]], tmp: Path) -> dict:
    """Median seconds per volume, interleaved per case: medseg (default: patch windows, MONAI's layout),
    medseg with small scans in one window (``whole_image_factor=4``), MONAI."""
    results = {}
    network = Predictor(RUN, device="cpu", tta=False).network
    for name, flips in (("no_tta", [()]), ("flips_all_8", FLIPS_ALL)):
        tta = len(flips) > 1
        pipelines = {
            "medseg": lambda p, o, pr=Predictor(RUN, device="cpu", tta=tta, flips="all"): medseg_end_to_end(pr, p, o),
            "medseg_whole_image": lambda p, o, pr=Predictor(RUN, device="cpu", tta=tta, flips="all",
                                                            whole_image_factor=4): medseg_end_to_end(pr, p, o),
            "monai": monai_pipeline(network, flips),
        }
        for run in pipelines.values():  # warm (first-call allocations, imports)
            run(test[0][0], tmp)
        wall = {k: [] for k in pipelines}
        cpu = {k: [] for k in pipelines}
        labels = {}
        agree = {k: [] for k in pipelines}
        for image_path, _ in test:
            for key, run in pipelines.items():
                w, c, labels[key] = run(image_path, tmp)
                wall[key].append(w)
                cpu[key].append(c)
            for key in pipelines:
                a, b = labels[key], labels["monai"]
                agree[key].append(float((a == b).mean()) if a.shape == b.shape else 0.0)
        row = {"tta_passes": len(flips)}
        for key in pipelines:
            row[f"{key}_s_per_volume"] = statistics.median(wall[key])
            row[f"{key}_cpu_s_per_volume"] = statistics.median(cpu[key])
            row[f"{key}_label_agreement_with_monai"] = float(np.mean(agree[key]))
        for key in ("medseg", "medseg_whole_image"):
            row[f"speedup_{key}_vs_monai_wall"] = row["monai_s_per_volume"] / row[f"{key}_s_per_volume"]
            row[f"speedup_{key}_vs_monai_cpu"] = row["monai_cpu_s_per_volume"] / row[f"{key}_cpu_s_per_volume"]
        results[name] = row
        print(name, row, flush=True)
    # Multi-scale × flips in one call vs the sum of its passes run one by one.
    image_path = test[0][0]
    for key, factor in (("medseg", 0.0), ("medseg_whole_image", 4.0)):
        members = Predictor(RUN, device="cpu", tta=True, scales="0.75,1,1.25", flips="all", whole_image_factor=factor)
        plain_predictor = Predictor(RUN, device="cpu", tta=False, whole_image_factor=factor)
        medseg_end_to_end(plain_predictor, image_path, tmp)  # warm
        plain = statistics.median([medseg_end_to_end(plain_predictor, image_path, tmp)[1] for _ in range(3)])
        combined = statistics.median([medseg_end_to_end(members, image_path, tmp)[1] for _ in range(2)])
        results[f"scales3_x_flips8_{key}"] = {"tta_passes": 24, "case": image_path.name, "cpu_s": combined,
                                              "one_plain_prediction_cpu_s": plain,
                                              "ratio_to_24_plain_predictions": combined / (24 * plain)}
        print("scales3_x_flips8", key, results[f"scales3_x_flips8_{key}"], flush=True)
    return results


# --- 3. Dice with and without TTA and CRF -------------------------------------------------------------

def tta_crf_configs(spatial_dims: int = 3) -> dict[str, dict]:
    """The TTA / CRF settings of the table: for a 2D network the flips are its two axes and the CRF is 2D."""
    crf = CRFConfig(mode="3d" if spatial_dims == 3 else "2d")
    suffix = "+crf3d" if spatial_dims == 3 else "+crf2d"
    configs = {"no_tta": dict(tta=False)}
    if spatial_dims == 3:
        configs.update({"no_tta_whole_image": dict(tta=False, whole_image_factor=4),
                        "flips_all_whole_image": dict(tta=True, flips="all", whole_image_factor=4),
                        "flips_inplane": dict(tta=True, flips="inplane")})
    configs.update({
        "flips_all": dict(tta=True, flips="all"),
        "scales_0.75_1_1.25_x_flips_all": dict(tta=True, scales="0.75,1,1.25", flips="all"),
        "scales_0.9_1_1.1_x_flips_all": dict(tta=True, scales="0.9,1,1.1", flips="all"),
        "no_tta" + suffix: dict(tta=False, crf=True, crf_config=crf)})
    if spatial_dims == 3:
        configs["no_tta+crf2d"] = dict(tta=False, crf=True, crf_config=CRFConfig(mode="2d"))
    configs.update({
        "flips_all" + suffix: dict(tta=True, flips="all", crf=True, crf_config=crf),
        "scales_0.75_1_1.25_x_flips_all" + suffix: dict(tta=True, scales="0.75,1,1.25", flips="all", crf=True,
                                                        crf_config=crf),
        "no_tta+largest": dict(tta=False, keep_largest=True),  # --keep-largest
        "flips_all+largest": dict(tta=True, flips="all", keep_largest=True)})
    return configs


def dice_table(test: list[tuple[Path | tuple[Path, ...], Path]], run: Path = RUN, boundary: bool = False,
               labels: dict[str, int] | None = None, only: list[str] | None = None) -> dict:
    """Mean Dice over cases and structures, pooled Dice (over cases, as training validates; mean over
    structures) and with ``boundary`` HD95 and NSD at 1 mm (means over structures and cases) of each
    TTA / CRF configuration of ``run`` on the ``test`` cases, with seconds per volume. ``labels``: the
    structures scored, ``{name: value}`` (default: Hippocampus' anterior and posterior); ``only``: the
    configurations to run (default: all)."""
    from medseg.metrics.case import evaluate_structures
    from medseg.metrics.labels import label_array

    labels = {k: v for k, v in (labels or LABELS).items() if v != 0}
    references = [read_volume(label, as_label=True) for _, label in test]
    arrays = [label_array(ref) for ref in references]  # integer maps (a label file may be stored as float)
    table = {}
    spatial_dims = Predictor(run, device="cpu", tta=False).spatial_dims
    for name, options in tta_crf_configs(spatial_dims).items():
        if only and name not in only:
            continue
        predictor = Predictor(run, device="cpu", **options)
        dices, seconds, crf_seconds, hd95, nsd = [], [], [], [], []
        overlap = np.zeros((2, len(labels)))  # summed 2|P∩R| and |P|+|R| per structure: the pooled Dice
        for (image_path, _), ref, reference in zip(test, references, arrays):
            prediction = predictor.predict(image_path)
            pred = prediction.labels.array[0]
            counts = np.array([[2 * np.sum((pred == k) & (reference == k)), np.sum(pred == k) + np.sum(reference == k)]
                               for k in labels.values()], dtype=np.float64).T
            dices.append(float(np.mean(counts[0] / np.maximum(counts[1], 1))))  # as mean_dice
            overlap += counts
            seconds.append(prediction.seconds)
            crf_seconds.append(prediction.info["crf_seconds"])
            if boundary:
                rows = evaluate_structures(pred, reference, ref.spacing, labels=labels, tolerances_mm=(1.0,))
                hd95 += [r.metrics["hd95"] for r in rows]
                nsd += [r.metrics["nsd_1mm"] for r in rows]
        table[name] = {"mean_dice": float(np.mean(dices)),
                       "pooled_dice": float(np.mean(overlap[0] / np.maximum(overlap[1], 1))),
                       "s_per_volume": statistics.median(seconds),
                       "crf_s_per_volume": statistics.median(crf_seconds)}
        if boundary:
            hd95 = np.asarray(hd95, dtype=np.float64)  # inf where one side is empty: counted apart
            table[name].update(hd95_mm=float(np.nanmean(hd95[np.isfinite(hd95)])),
                               hd95_undefined=int(np.isinf(hd95).sum()), nsd_1mm=float(np.nanmean(nsd)))
        print(name, table[name], flush=True)
    return table


def crf_grid(val: list[tuple[Path, Path]]) -> dict:
    """Dice of a few CRF settings on validation cases (not the test cases): how the defaults were picked."""
    grid = {"default": CRFConfig(),
            "weaker_bilateral": CRFConfig(bilateral_compat=1.0),
            "stronger_bilateral": CRFConfig(bilateral_compat=5.0, bilateral_sdims_mm=5.0),
            "wide_smoothness": CRFConfig(gaussian_sdims_mm=5.0, gaussian_compat=3.0),
            "schan_0.5": CRFConfig(bilateral_schan=0.5),
            "eps_0.05": CRFConfig(uncertain_eps=0.05)}
    references = [read_volume(label, as_label=True).array[0] for _, label in val]
    plain = Predictor(RUN, device="cpu", tta=False)
    base = float(np.mean([mean_dice(plain.predict(i).labels.array[0], r) for (i, _), r in zip(val, references)]))
    out = {"no_crf": base}
    for name, config in grid.items():
        predictor = Predictor(RUN, device="cpu", tta=False, crf=True, crf_config=config)
        out[name] = float(np.mean([mean_dice(predictor.predict(i).labels.array[0], r)
                                   for (i, _), r in zip(val, references)]))
    print("crf grid", out, flush=True)
    return out


# --- 4. CRF cost ---------------------------------------------------------------------------------------

def noisy_probs(label: np.ndarray, num_classes: int, seed: int = 0) -> torch.Tensor:
    """A plausible network output ``(K, *spatial)``: softmax of a blurred one-hot (soft borders) plus
    smooth noise that is strongest near the borders (confident far from them, like a trained network)."""
    from scipy.ndimage import gaussian_filter

    onehot = np.stack([(label == c).astype(np.float32) for c in range(num_classes)])
    soft = gaussian_filter(onehot, (0, 1.5, 1.5, 0.5))
    noise = np.random.default_rng(seed).standard_normal(onehot.shape).astype(np.float32)
    noise = gaussian_filter(noise, (0, 1.0, 1.0, 0.5))
    edge = gaussian_filter((4 * soft * (1 - soft)).max(0), (2.0, 2.0, 1.0))
    weight = 0.25 + edge / max(float(edge.max()), 1e-6)
    return torch.softmax(torch.from_numpy(10.0 * soft + 3.0 * weight * noise / noise.std()), 0)


def pydensecrf_full(probs: np.ndarray, image: np.ndarray, spacing, config: CRFConfig) -> np.ndarray:
    """The peer: pydensecrf ``DenseCRF`` over every voxel with the same kernels (features in mm)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian, unary_from_softmax

    k = probs.shape[0]
    shape = probs.shape[1:]
    crf = dcrf.DenseCRF(int(np.prod(shape)), k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseEnergy(create_pairwise_gaussian([config.gaussian_sdims_mm / s for s in spacing], shape),
                          compat=config.gaussian_compat)
    std = max(float(image.std()), 1e-6)
    crf.addPairwiseEnergy(create_pairwise_bilateral([config.bilateral_sdims_mm / s for s in spacing],
                                                    [config.bilateral_schan], image[0] / std, chdim=-1),
                          compat=config.bilateral_compat)
    return np.asarray(crf.inference(config.iterations)).reshape(k, *shape)


def crf_cost() -> dict:
    out = {}
    items = [("spleen_crop_164x166x26", SHARED / "3d" / "spleen_crop" / "image.nii.gz",
              SHARED / "3d" / "spleen_crop" / "label.nii.gz", None),
             ("ct_20slice_512x512x20", SHARED / "dicom" / "ct_20slice" / "series",
              SHARED / "dicom" / "ct_20slice" / "seg.nii.gz", (1, 5, 6))]
    for name, image_path, label_path, keep in items:
        from medseg.io import reorient_to_match

        image = read_volume(image_path)
        label = read_volume(label_path, as_label=True)
        if not label.same_grid(image, atol=1e-3):
            label = reorient_to_match(label, image)
        values = label.array[0]
        if keep is not None:  # three organs as classes 1..3
            mapped = np.zeros_like(values)
            for i, v in enumerate(keep, 1):
                mapped[values == v] = i
            values = mapped
        k = int(values.max()) + 1
        probs = noisy_probs(values, k)
        img = torch.from_numpy(image.array.astype(np.float32))
        spacing = image.spacing
        config = CRFConfig()
        row = {"voxels": int(values.size), "classes": k}
        classes = range(1, k)
        row["dice_noisy"] = mean_dice(probs.argmax(0).numpy(), values, classes)
        for mode in ("3d", "2d"):
            t = time.perf_counter()
            refined = crf_refine(probs, img, spacing, CRFConfig(mode=mode))
            row[f"medseg_{mode}_s"] = time.perf_counter() - t
            row[f"medseg_{mode}_dice"] = mean_dice(refined.argmax(0).numpy(), values, classes)
        from medseg.inference.crf import uncertain_region

        region = uncertain_region(probs, spacing, config.uncertain_eps, config.margin_mm)
        row["region_fraction"] = float(region.float().mean())
        t = time.perf_counter()
        full = pydensecrf_full(probs.numpy(), image.array.astype(np.float32), spacing, config)
        row["pydensecrf_full_volume_s"] = time.perf_counter() - t
        row["pydensecrf_full_dice"] = mean_dice(full.argmax(0), values, classes)
        row["speedup_3d_vs_full"] = row["pydensecrf_full_volume_s"] / row["medseg_3d_s"]
        row["s_per_million_voxels_full"] = row["pydensecrf_full_volume_s"] / (values.size / 1e6)
        out[name] = row
        print(name, row, flush=True)
    return out


def run_table(run: Path, source: Path = HIPPO, image_dir: str | None = None, label_dir: str | None = None,
              only: list[str] | None = None) -> None:
    """The TTA/CRF table of a ``medseg train`` run (its best checkpoint, or the checkpoint file given) on the
    raw files of its validation cases, found in ``source`` (the folder it was ingested from, with ingest's
    ``--images`` / ``--labels``) the way ingest found them."""
    from medseg.config import from_dict
    from medseg.ingest.sources import find_cases
    from medseg.runs import checkpoint_in, load_checkpoint

    checkpoint = checkpoint_in(run)
    config = from_dict(load_checkpoint(checkpoint)["config"])
    dataset = REPO / config.data.data_dir / config.data.name
    val_ids = json.loads((dataset / "splits.json").read_text())[config.data.fold]["val"]
    cases = {c.case_id: c for c in find_cases(source, images=image_dir, labels=label_dir).cases}
    val = [(cases[c].images, cases[c].label) for c in val_ids]  # every channel file of the case
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    name = f"{run.parent.name}_{run.stem}" if run.is_file() else run.name
    result = {"benchmark": "predict --run", "machine": machine(), "run": name, "arch": config.model.arch,
              "checkpoint": checkpoint.name, "model_options": config.model.options,
              "dataset": config.data.name, "validation_cases": len(val),
              "table": dice_table(val, run, boundary=True, labels={k: int(v) for k, v in labels.items()}, only=only)}
    out_path = REPO / "benchmarks" / "results" / f"tta_crf_{name}.json"
    out_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--train-cases", type=int, default=120)
    parser.add_argument("--test-cases", type=int, default=10)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["e2e", "dice", "grid", "crf"])
    parser.add_argument("--run", type=Path, help="only the TTA/CRF table (Dice, HD95, NSD 1 mm) of this trained run "
                        "(its best checkpoint, or a checkpoint file of it) on its fold's validation cases "
                        "(data/NAME/splits.json), written to benchmarks/results/tta_crf_<run name>.json")
    parser.add_argument("--configs", help="with --run: a comma-separated subset of the table's settings "
                        "(e.g. no_tta,flips_all,flips_all+largest)")
    parser.add_argument("--source", type=Path, default=HIPPO, help="with --run: the folder the run's dataset was "
                        "ingested from (default: the shared Hippocampus set)")
    parser.add_argument("--images", help="with --run: ingest's --images of that folder (e.g. images)")
    parser.add_argument("--labels", help="with --run: ingest's --labels of that folder (e.g. DRIVE's 1st_manual)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        only = args.configs.split(",") if args.configs else None
        unknown = sorted(set(only or ()) - set(tta_crf_configs(3)) - set(tta_crf_configs(2)))
        if unknown:
            parser.error(f"--configs: unknown setting(s) {', '.join(unknown)}")
        return run_table(args.run, args.source, args.images, args.labels, only)
    cases = hippocampus_cases()
    train_cases, rest = cases[: args.train_cases], cases[args.train_cases:]
    test, val = rest[-args.test_cases:], rest[: 4]
    result = {"benchmark": "predict", "machine": machine(), "data": {
        "model_data": "shared 3d/hippocampus (Decathlon Task04)", "train_cases": len(train_cases),
        "test_cases": [p.name for p, _ in test], "validation_cases": [p.name for p, _ in val]}}
    out_path = REPO / "benchmarks" / "results" / "predict.json"
    if args.retrain or not (RUN / "checkpoint_best.pt").exists():
        result["training"] = train(train_cases, args.train_minutes)
        print("trained", result["training"], flush=True)
    else:
        from medseg.runs import load_checkpoint

        result["training"] = {k: v for k, v in load_checkpoint(RUN / "checkpoint_best.pt")["config"].items()
                              if k != "benchmark"}
    result["training"].update({"arch": "unet3d", "model_options": {"base_channels": 4, "deep_supervision": False},
                               "patch_size": list(PATCH), "optimizer": "Adam 3e-3, CE + soft Dice, batch 4, flips"})
    with tempfile.TemporaryDirectory() as tmp:
        if "e2e" not in args.skip:
            result["end_to_end"] = end_to_end(test, Path(tmp))
        if "dice" not in args.skip:
            result["dice"] = dice_table(test)
        if "grid" not in args.skip:
            result["crf_grid_validation"] = crf_grid(val)
    if "crf" not in args.skip:
        result["crf_cost"] = crf_cost()
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    if out_path.exists():  # keep sections measured by an earlier partial run
        previous = json.loads(out_path.read_text())
        result = {**previous, **result}
    out_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
