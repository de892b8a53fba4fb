"""`medseg train NAME --arch ARCH`: train a network on data/NAME and write models/RUN/."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli import app, run_command

#: flags a resumed run may change; the others must match the run's saved configuration
_RESUMABLE_FLAGS = ("epochs", "time_limit", "val_every", "device", "workers", "compile", "data_dir", "models_dir")


def _parse_fold(value: str) -> int | str:
    from medseg.errors import UsageError

    if value == "all":
        return value
    try:
        fold = int(value)
    except ValueError:
        raise UsageError(f"--fold must be a fold number or 'all', got {value!r}") from None
    if fold < 0:
        raise UsageError(f"--fold must be 0 or more, got {fold}")
    return fold


def _parse_patch(value: str) -> list[int]:
    from medseg.errors import UsageError

    try:
        sides = [int(v) for v in value.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        sides = []
    if not sides or min(sides) < 1:
        raise UsageError(f"--patch-size must look like 128x128x128 or 64,64,32, got {value!r}")
    return sides


def _flags(**given) -> dict:
    """The nested override dict of the options actually given (None means: not on the command line)."""
    sections = {
        "data": ("name", "data_dir", "fold", "patch_size", "batch_size", "workers", "iterations_per_epoch"),
        "model": ("arch", "compile"),
        "train": ("epochs", "time_limit", "val_every", "seed", "device", "amp", "models_dir", "run_name"),
    }
    out: dict = {}
    for section, keys in sections.items():
        values = {k: given[k] for k in keys if given.get(k) is not None}
        if values:
            out[section] = values
    return out


def _resume_config(given, flags: dict):
    """The run's saved configuration (models/RUN/config.yaml) with the flags applied; a flag that would
    change anything but the resumable settings is a usage error."""
    from medseg.config import from_dict, load_yaml, merge, to_dict
    from medseg.errors import UsageError

    saved_file = given.run_dir / "config.yaml"
    if not saved_file.is_file():
        return given  # train() reports that there is nothing to resume
    saved = from_dict(load_yaml(saved_file), saved_file)
    wanted, before = to_dict(merge(saved, flags)), to_dict(saved)
    for section, values in flags.items():
        for key in values:
            if key not in _RESUMABLE_FLAGS and wanted[section][key] != before[section][key]:
                raise UsageError(f"--{key.replace('_', '-')} cannot change on --resume (the run has "
                                 f"{before[section][key]!r}); only --{', --'.join(k.replace('_', '-') for k in _RESUMABLE_FLAGS)} may")
    return merge(saved, flags)


def _train(name, arch, fold, epochs, config_file, device, resume, seed, data_dir, models_dir, run_name, batch_size,
           patch_size, workers, compile_, val_every, iterations_per_epoch, amp, overwrite, time_limit):
    from medseg.config import resolve
    from medseg.errors import UsageError
    from medseg.models import list_models
    from medseg.training import train

    if arch is not None and arch not in list_models():
        raise UsageError(f"unknown architecture {arch!r}; choose one of: {', '.join(list_models())}")
    given = dict(name=name, arch=arch, fold=_parse_fold(fold) if fold is not None else None, epochs=epochs,
                 device=device, seed=seed, data_dir=data_dir, models_dir=models_dir, run_name=run_name,
                 batch_size=batch_size, patch_size=_parse_patch(patch_size) if patch_size else None, workers=workers,
                 compile=compile_ or None, val_every=val_every, iterations_per_epoch=iterations_per_epoch, amp=amp,
                 time_limit=time_limit)
    flags = _flags(**given)
    if resume:
        if config_file is not None:
            raise UsageError("--config cannot be used with --resume: the run continues with its saved configuration")
        config = _resume_config(resolve(None, flags), flags)
    else:
        config = resolve(config_file, flags)
    if not config.model.arch:
        raise UsageError("--arch is required (or model.arch in --config)")
    return train(config, resume=resume, overwrite=overwrite)


@app.command("train")
def train_command(
    name: str = typer.Argument(..., help="Dataset name: the folder data/NAME written by `medseg ingest`."),
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Network: unet | unet3d | vnet | unext | cm_mlp (see `medseg models`)."),
    fold: Optional[str] = typer.Option(None, "--fold", "-f", help="Fold of splits.json to hold out, or 'all'. \\[default: 0]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", min=1, help="Epochs. \\[default: per network family]"),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0.01, help="Minutes to end training by: the epochs are re-planned after each one from its measured time, and the learning-rate schedule follows. \\[default: none]"),
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run configuration (flags override it)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA, then MPS, then CPU) | cuda | cuda:N | mps | cpu."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its checkpoint_last.pt, exactly."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed. \\[default: 0]"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder holding the datasets. \\[default: data]"),
    models_dir: Optional[str] = typer.Option(None, "--models-dir", help="Folder for the runs. \\[default: models]"),
    run_name: Optional[str] = typer.Option(None, "--run-name", help="Run folder name. \\[default: NAME_ARCH_foldK]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1, help="Batch per process. \\[default: planned]"),
    patch_size: Optional[str] = typer.Option(None, "--patch-size", help="Patch, e.g. 128x128x128. \\[default: planned]"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=0, help="Data loading processes. \\[default: CPUs - 1, ≤ 8]"),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=1, help="Validate every N epochs. \\[default: 1 for 2D images and small 3D validation sets, else 5]"),
    iterations_per_epoch: Optional[int] = typer.Option(None, "--iterations-per-epoch", min=1, help="Batches per epoch. \\[default: 250, or one pass over 2D images]"),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: auto (bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else off) | off | bf16 | fp16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again over an existing run folder."),
) -> None:
    """Train a network on a dataset; writes config.yaml, checkpoints, log.csv and curves.png to models/RUN/."""
    result = run_command(_train, name, arch, fold, epochs, config_file, device, resume, seed, data_dir, models_dir,
                         run_name, batch_size, patch_size, workers, compile_, val_every, iterations_per_epoch, amp,
                         overwrite, time_limit)
    import math
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    best = "n/a" if math.isnan(result.best_dice) else f"{result.best_dice:.4f}"
    last = "n/a" if math.isnan(result.last_dice) else f"{result.last_dice:.4f}"
    typer.echo(f"run {result.run_dir}: {result.epochs_done} epochs, best validation Dice {best}, last {last}")
