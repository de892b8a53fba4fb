"""``medseg demo``: the whole pipeline on synthetic CT phantoms, end to end, in a few minutes on a CPU.

1. writes ``data/demo_raw/``: training phantoms in the Decathlon layout (``imagesTr``/``labelsTr``) and
   held-out phantoms (``imagesTs``/``labelsTs``) in other orientations;
2. ingests the training phantoms into ``data/demo/``;
3. trains a small 3D U-Net briefly into ``models/demo/``;
4. predicts the held-out phantoms with multi-scale test-time augmentation and the dense CRF into
   ``predictions/demo/``;
5. evaluates them against their labels (table, ``report.csv``/``report.json``) and writes overlay
   pictures with an index page to ``overlays/demo/``.

At full size the demo checks that the model really segments the phantoms (mean Dice above
``MIN_DICE``); the reduced size (``quick=True``) exists for tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from medseg import progress
from medseg.errors import MedsegError

MIN_DICE = 0.7


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is. Phantoms are small enough that a whole case is one patch, so that a few
    minutes of 3D convolutions on two CPU cores are enough to learn them."""

    n_train: int
    n_test: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    epochs: int
    iterations_per_epoch: int
    scales: tuple[float, ...]


FULL = DemoSize(n_train=8, n_test=3, shape=(48, 48, 24), spacing=(2.0, 2.0, 4.0), epochs=14,
                iterations_per_epoch=20, scales=(0.85, 1.0, 1.15))
QUICK = DemoSize(n_train=4, n_test=2, shape=(32, 32, 16), spacing=(3.0, 3.0, 6.0), epochs=1,
                 iterations_per_epoch=2, scales=(1.0,))


@dataclass
class DemoResult:
    dataset: Path
    run_dir: Path
    predictions: Path
    report_csv: Path
    report_json: Path
    overlays: Path
    mean_dice: float
    seconds: float


def write_phantoms(raw: Path, size: DemoSize, seed: int = 0) -> Path:
    """Training phantoms (Decathlon layout) plus held-out ``imagesTs``/``labelsTs`` in other orientations."""
    from medseg.io.nifti import write_nifti
    from medseg.phantoms import ct_phantom, write_ct_dataset

    write_ct_dataset(raw, n_cases=size.n_train, seed=seed, shape=size.shape, spacing=size.spacing,
                     orientations=("RAS", "LPS"))
    for folder in ("imagesTs", "labelsTs"):
        (raw / folder).mkdir(exist_ok=True)
    for j, orientation in zip(range(size.n_test), ("LPS", "oblique", "LAS", "RAS")):
        case = f"phantom_{size.n_train + j:03d}"
        ct, seg = ct_phantom(seed=seed + 1000 + j, shape=size.shape, spacing=size.spacing, orientation=orientation)
        write_nifti(ct, raw / "imagesTs" / f"{case}_0000.nii.gz")
        write_nifti(seg, raw / "labelsTs" / f"{case}.nii.gz")
    return raw


def run_demo(root: str | Path = ".", *, quick: bool = False, device: str = "auto", seed: int = 0,
             arch: str = "unet3d_tiny") -> DemoResult:
    """Run the demo under ``root`` (a checkout: ``data/``, ``models/``, ``predictions/``, ``overlays/``).

    Re-running replaces the demo's own outputs (they are all generated); nothing else is touched.
    """
    from medseg.config import resolve
    from medseg.inference.runner import predict_files
    from medseg.ingest import ingest
    from medseg.metrics import evaluate
    from medseg.metrics.report import print_table, write_outputs
    from medseg.overlays import OverlayHook, index_from_report
    from medseg.phantoms import CT_LABELS
    from medseg.training import train

    start = time.perf_counter()
    size = QUICK if quick else FULL
    root = Path(root)
    raw = root / "data" / "demo_raw"
    progress.info(f"[bold]1/5[/] writing {size.n_train} training and {size.n_test} held-out CT phantoms to {raw}")
    write_phantoms(raw, size, seed)

    progress.info("[bold]2/5[/] ingesting them as dataset 'demo'")
    dataset = ingest(raw, "demo", data_root=root / "data", modality="CT", folds=min(5, size.n_train), seed=seed,
                     workers=1, overwrite=True)

    progress.info(f"[bold]3/5[/] training {arch} for {size.epochs} epochs of {size.iterations_per_epoch} iterations")
    # The demo's only departure from the defaults: Adam instead of the U-Net family's SGD (momentum 0.99),
    # which needs far more than a couple of hundred iterations to start moving on a narrow network.
    config = resolve(flags={
        "data": {"name": "demo", "data_dir": str(root / "data"), "fold": 0, "batch_size": 2,
                 "iterations_per_epoch": size.iterations_per_epoch, "workers": 0},
        "model": {"arch": arch},
        "optim": {"optimizer": "adam", "lr": 1e-2, "schedule": "poly"},
        "train": {"epochs": size.epochs, "val_every": max(1, size.epochs // 3), "seed": seed, "device": device,
                  "models_dir": str(root / "models"), "run_name": "demo"},
    })
    trained = train(config, overwrite=True)

    predictions = root / "predictions" / "demo"
    progress.info(f"[bold]4/5[/] predicting the held-out phantoms with TTA (scales {list(size.scales)}, flips) and CRF")
    images = sorted((raw / "imagesTs").glob("*.nii.gz"))
    predict_files(images, predictions, model=trained.run_dir, device=device, tta=True, scales=size.scales,
                  flips="all", crf=True, overwrite=True)

    overlays = root / "overlays" / "demo"
    progress.info("[bold]5/5[/] evaluating against the reference labels and drawing overlays")
    structures = {name: value for name, value in CT_LABELS.items() if value != 0}
    report = evaluate(predictions, raw / "labelsTs", labels=structures, images=raw / "imagesTs",
                      case_hook=OverlayHook(overlays, structures))
    report_csv = predictions / "report.csv"
    write_outputs(report, report_csv, overwrite=True)
    print_table(report)
    index_from_report(report, overlays)
    dices = [row["dice"] for row in report.rows if row["status"] in ("ok", "pred_empty")]
    mean_dice = float(sum(dices) / len(dices)) if dices else 0.0
    result = DemoResult(dataset=dataset, run_dir=trained.run_dir, predictions=predictions, report_csv=report_csv,
                        report_json=report_csv.with_suffix(".json"), overlays=overlays / "index.html",
                        mean_dice=mean_dice, seconds=time.perf_counter() - start)
    if not quick and mean_dice < MIN_DICE:
        raise MedsegError(f"the demo model reached a mean Dice of {mean_dice:.3f}, below {MIN_DICE}: "
                          "training did not converge (rerun with --debug and check the training curves)", trained.run_dir)
    return result
