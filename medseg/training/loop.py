"""The training loop: ``train(config)`` reads ``data/NAME/`` and writes ``models/RUN/``.

Top to bottom: plan the run (patch, batch, recipe), build the network, optimizer and loader, then per
epoch: set the learning rate, run ``iterations_per_epoch`` steps (autocast, gradient scaling, clipping,
the moving average of the weights), validate (the average, when there is one) every ``val_every``
epochs (and after the last), save ``checkpoint_last.pt`` (and ``checkpoint_best.pt`` when the
validation Dice improves), append to ``log.csv`` and redraw ``curves.png``.

Resume is exact: the checkpoint holds the model (and its average), optimizer, scaler, epoch and the
global random states, and every batch's randomness is a function of ``(seed, rank, epoch, iteration)``
(see ``training.data``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg import progress
from medseg.config import RunConfig, from_dict, save_yaml, to_dict
from medseg.devices import bf16_supported, resolve_device, start_flushing_pool, subnormals_flushed
from medseg.errors import CheckpointError, ConfigError, OutputExistsError, TrainingError
from medseg.runs import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint, save_checkpoint
from medseg.training import distributed
from medseg.training.curves import log_columns, plot_curves, read_log, write_log
from medseg.training.data import DatasetFolder, PatchBatches, make_loader, open_dataset
from medseg.training.device import amp_label, choose_amp_dtype, device_memory_bytes, needs_grad_scaler
from medseg.training.ema import WeightAverage
from medseg.training.planner import (CPU_FP32_MACS_PER_VOXEL, CPU_MACS_PER_VOXEL, plan_patch_and_batch, plan_width,
                                     round_up)

RUN_FILES = ("config.yaml", CHECKPOINT_LAST, CHECKPOINT_BEST, "log.csv", "curves.png")
#: settings a resumed run may change (the rest must match the checkpoint)
RESUMABLE = {"train": ("epochs", "time_limit", "val_every", "device", "models_dir"), "data": ("workers", "data_dir"),
             "model": ("compile",)}
#: anisotropy (largest / smallest spacing) above which 3D rotations stay in the plane of the fine axes
ANISOTROPY_IN_PLANE = 3.0
#: training stops with an error after this many consecutive steps with NaN or infinite gradients (each one's
#: update is skipped): far more than a gradient scaler needs to find its scale (a few steps), few enough not
#: to spend hours on a diverged run
MAX_NONFINITE_STEPS = 50


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_dice: float
    last_dice: float
    weights_sha256: str
    config: RunConfig


# --- planning -------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    """What the loop needs besides the config, derived from the dataset and the network."""

    network_dims: int
    slice_axis: int | None  # data axis a 2D network slices (volumes only)
    in_plane_axis: int | None  # 3D rotations only about this axis (anisotropic data)
    train_cases: list
    val_cases: list
    out_channels: int


def _network_shapes(ds: DatasetFolder, slice_axis: int | None) -> list[tuple[int, ...]]:
    shapes = [c.shape for c in ds.cases.values()]
    return [s[:slice_axis] + s[slice_axis + 1:] for s in shapes] if slice_axis is not None else shapes


def _side(shape) -> str:
    return "×".join(str(int(s)) for s in shape)


def plan_run(config: RunConfig, ds: DatasetFolder, spec, device, world_size: int = 1) -> tuple[RunConfig, RunPlan]:
    """Check the network against the data and resolve every automatic setting of ``config``."""
    from medseg.training.recipe import resolve_recipe

    arch, net_dims = config.model.arch, spec.spatial_dims
    if net_dims == 3 and ds.dims == 2:
        raise ConfigError(f"{arch} is a 3D network but dataset {ds.name!r} holds 2D images: choose a 2D network "
                          "(unet, unext, cm_mlp)", ds.root)
    slice_axis = ds.dims - 1 if (net_dims == 2 and ds.dims == 3) else None
    spacing = ds.spacing if slice_axis is None else ds.spacing[:slice_axis] + ds.spacing[slice_axis + 1:]
    median = ds.median_shape if slice_axis is None else ds.median_shape[:slice_axis] + ds.median_shape[slice_axis + 1:]
    shapes = _network_shapes(ds, slice_axis)

    patch = config.data.patch_size
    if patch is not None and len(patch) == 1:
        patch = patch * net_dims
    if patch is not None:
        if len(patch) != net_dims:
            raise ConfigError(f"--patch-size {_side(patch)} has {len(patch)} sides; {arch} is a {net_dims}D network")
        bad = [p for p in patch if p % spec.size_multiple]
        if bad:
            raise ConfigError(f"--patch-size {_side(patch)}: every side must be a multiple of {spec.size_multiple} "
                              f"for {arch}")
        # a case is padded up to the patch, as far as the network's size multiple (the planner's own
        # patch covers the padded median case, so it may exceed every case by less than one multiple)
        m = spec.size_multiple
        if all(any(p > round_up(s, m) for p, s in zip(patch, shape)) for shape in shapes):
            largest = tuple(int(v) for v in np.max(shapes, axis=0))
            raise ConfigError(f"--patch-size {_side(patch)} is larger than every case of dataset {ds.name!r} "
                              f"padded to a multiple of {m} (largest sides {_side(largest)})", ds.root)
    memory = device_memory_bytes(device)
    planned = plan_patch_and_batch(median, spacing, net_dims, memory, size_multiple=spec.size_multiple, patch_size=patch)
    narrowed_from = _default_width(config, ds)
    fp32_cpu = device.type == "cpu" and choose_amp_dtype("cpu", bf16_supported(device), config.train.amp) is None
    budget = CPU_FP32_MACS_PER_VOXEL.get(net_dims, CPU_MACS_PER_VOXEL) if fp32_cpu else CPU_MACS_PER_VOXEL
    config = _plan_width(config, ds, planned.patch_size, memory, narrowed_from, budget)
    narrowed = narrowed_from is not None and config.model.options.get("base_channels", narrowed_from) != narrowed_from
    train_cases, val_cases = ds.fold_cases(config.data.fold)
    config = resolve_recipe(config, num_train_cases=len(train_cases), data_dims=ds.dims, network_dims=net_dims,
                            num_classes=ds.num_classes, patch_size=planned.patch_size,
                            batch_size=config.data.batch_size or planned.batch_size, world_size=world_size,
                            device_type=device.type, val_voxels=sum(math.prod(c.shape) for c in val_cases),
                            narrowed=narrowed)
    if config.model.activation == "sigmoid" and ds.num_classes != 2:
        raise ConfigError(f"activation sigmoid needs a binary dataset; {ds.name!r} has {ds.num_classes - 1} "
                          "foreground classes (use softmax)")
    in_plane = None
    if net_dims == 3 and max(spacing) / max(min(spacing), 1e-6) > ANISOTROPY_IN_PLANE:
        in_plane = int(np.argmax(spacing))
    out_channels = 1 if config.model.activation == "sigmoid" else ds.num_classes
    return config, RunPlan(net_dims, slice_axis, in_plane, train_cases, val_cases, out_channels)


def _default_width(config: RunConfig, ds: DatasetFolder) -> int | None:
    """The network's default ``base_channels`` when the planner may choose it (the user did not set it)."""
    import torch

    from medseg.models import create_model

    if "base_channels" in config.model.options:
        return None
    with torch.device("meta"):
        network = create_model(config.model.arch, ds.num_channels, ds.num_classes, **config.model.options)
    return getattr(network, "base_channels", None)


def _plan_width(config: RunConfig, ds: DatasetFolder, patch, memory: int | None, default: int | None,
                budget: float) -> RunConfig:
    """Set ``model.options.base_channels`` from the device (``plan_width`` with the multiply-add ``budget``)
    when the planner may choose it (``default`` is not None)."""
    from medseg.models import count_macs

    if default is None:
        return config
    arch, options = config.model.arch, dict(config.model.options)
    voxels = math.prod(patch)

    def macs_per_voxel(width: int) -> float:
        return count_macs(arch, ds.num_channels, ds.num_classes, patch, **options, base_channels=width) / voxels

    width = plan_width(default, macs_per_voxel, memory, budget=budget)
    if width == default:
        return config
    options["base_channels"] = width
    return dataclasses.replace(config, model=dataclasses.replace(config.model, options=options))


def _resume_config(saved: RunConfig, given: RunConfig) -> RunConfig:
    """The checkpoint's configuration with the resumable settings the caller set (non-None) applied."""
    changes = {}
    for section, keys in RESUMABLE.items():
        values = {k: getattr(getattr(given, section), k) for k in keys}
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            changes[section] = dataclasses.replace(getattr(saved, section), **values)
    return dataclasses.replace(saved, **changes)


# --- random state ---------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) global random states as tensors and lists (weights_only-safe)."""
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the loop -------------------------------------------------------------------------------------


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not resume and existing and not overwrite:
        raise OutputExistsError("run folder already exists: pass --resume to continue it or --overwrite to start "
                                "again", run_dir)
    if resume and not (run_dir / CHECKPOINT_LAST).exists():
        raise CheckpointError("nothing to resume: no checkpoint_last.pt in this run folder", run_dir)


def train(config: RunConfig, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None) -> TrainResult:
    """Train ``config.model.arch`` on ``config.data.name`` and write the run folder ``config.run_dir``.

    Args:
        config: the run configuration (``None`` settings are planned; see ``medseg.config``).
        resume: continue ``checkpoint_last.pt`` of the run folder exactly (the checkpoint's configuration
            is used; only epochs, val_every, device, workers, compile and the data/models folders may
            change: they are taken from ``config`` when set).
        overwrite: start again over an existing run folder.
        stop_after: end this call after that many epochs (the run can be resumed), e.g. for time slots.
    Runs under torchrun as DDP (environment variables WORLD_SIZE, RANK, LOCAL_RANK).
    """
    from medseg.models import model_spec

    start_flushing_pool()  # before any other torch work: the pool's threads keep the flag
    if not config.model.arch:
        raise ConfigError("no architecture given (--arch)")
    spec = model_spec(config.model.arch)  # unknown names: UsageError listing the valid ones
    if not config.data.name:
        raise ConfigError("no dataset name given")
    info = distributed.from_env()
    run_dir = config.run_dir
    _check_run_dir(run_dir, resume, overwrite)
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_LAST)
        config = _resume_config(from_dict(checkpoint.get("config") or {}, run_dir / CHECKPOINT_LAST), config)
        spec = model_spec(config.model.arch)
    ds = open_dataset(config.data.data_dir, config.data.name)
    device = resolve_device(config.train.device, info.local_rank)
    distributed.init(info, device)
    try:
        return _train(config, ds, spec, device, info, checkpoint, overwrite, stop_after)
    finally:
        distributed.shutdown(info)


def _say(info: distributed.DistInfo, message: str) -> None:
    if info.is_main:
        progress.info(message)


@dataclass
class _Session:
    """The objects one training process works with (built by ``_build``)."""

    config: RunConfig
    plan: RunPlan
    ds: DatasetFolder
    device: Any
    info: distributed.DistInfo
    model: Any  # the network (its state dict is what checkpoints hold)
    train_model: Any  # the same network, maybe wrapped by DDP and torch.compile
    optimizer: Any
    scaler: Any
    amp_dtype: Any
    memory_format: Any  # torch.memory_format of the network and its inputs, or None (the default layout)
    average: Any = None  # WeightAverage of the model's weights, or None (optim.ema_decay 0)
    nonfinite_steps: int = 0  # consecutive steps with NaN/infinite gradients (skipped)

    @property
    def effective_batch(self) -> int:
        return self.config.data.batch_size * self.info.world_size

    @property
    def final_model(self):
        """The weights that are validated, saved as ``model`` and predicted: the average when there is one."""
        return self.average.module if self.average is not None else self.model


def _describe(s: _Session) -> None:
    config, plan, ds = s.config, s.plan, s.ds
    data, optim, aug, tc = config.data, config.optim, config.augment, config.train
    _say(s.info, f"dataset {ds.name}: {len(plan.train_cases)} training / {len(plan.val_cases)} validation cases "
                 f"(fold {data.fold}), {ds.dims}D, {ds.num_classes} classes, median case {_side(ds.median_shape)}")
    how = "axial slices of volumes" if plan.slice_axis is not None else ("patches" if plan.network_dims == 3 else "images")
    params = sum(p.numel() for p in s.model.parameters())
    width = getattr(s.model, "base_channels", None)
    width = f", base width {width}" if width is not None else ""
    _say(s.info, f"network {config.model.arch} ({plan.network_dims}D, {params / 1e6:.2f} M parameters{width}) on {how}: "
                 f"patch {_side(data.patch_size)}, batch {data.batch_size} per process, {data.iterations_per_epoch} "
                 f"iterations per epoch, {tc.epochs} epochs")
    average = f"; validated and saved: a moving average of the weights (decay {optim.ema_decay:g})" if s.average else ""
    _say(s.info, f"effective batch {s.effective_batch} ({data.batch_size} × {s.info.world_size} process"
                 f"{'es' if s.info.world_size > 1 else ''}); lr {optim.lr:g} ({optim.optimizer}, {optim.schedule} "
                 f"schedule, not scaled with the batch); loss {config.loss.name}; activation {config.model.activation}"
                 + average)
    amp_name = amp_label(s.device.type, s.amp_dtype, bf16_supported(s.device))
    _say(s.info, f"device {s.device}, mixed precision {amp_name}, {data.workers} loader worker(s) per process, "
                 f"augmentation {'on (' + aug.where + ')' if aug.enabled else 'off'}")


def _build(config: RunConfig, plan: RunPlan, ds: DatasetFolder, device, info: distributed.DistInfo) -> _Session:
    """Seed, then build the network (same initial weights on every rank), optimizer and gradient scaler."""
    import torch

    from medseg.models import create_model
    from medseg.models.layers import memory_format_for
    from medseg.training.recipe import make_optimizer

    seed_everything(config.train.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = create_model(config.model.arch, in_channels=ds.num_channels, num_classes=plan.out_channels,
                         **config.model.options).to(device)
    memory_format = memory_format_for(device.type, plan.network_dims)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    amp_dtype = choose_amp_dtype(device.type, bf16_supported(device), config.train.amp)
    optimizer = make_optimizer(model.parameters(), config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(amp_dtype))
    average = WeightAverage(model, config.optim.ema_decay) if config.optim.ema_decay else None
    return _Session(config, plan, ds, device, info, model, model, optimizer, scaler, amp_dtype, memory_format, average)


def _wrap(s: _Session) -> None:
    """DDP when distributed, then ``torch.compile`` when asked (after any checkpoint was loaded)."""
    import torch

    if s.info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        s.train_model = DistributedDataParallel(s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    if s.config.model.compile:
        s.train_model = torch.compile(s.train_model)


def _loader(s: _Session, start_epoch: int):
    """An iterator over training batches from the first batch of ``start_epoch``."""
    data, aug, plan = s.config.data, s.config.augment, s.plan
    batches = PatchBatches(plan.train_cases, data.patch_size, data.batch_size, data.iterations_per_epoch,
                           seed=s.config.train.seed, rank=s.info.rank, num_classes=s.ds.num_classes,
                           foreground_fraction=data.foreground_fraction, slice_axis=plan.slice_axis,
                           augment=aug, augment_here=aug.where != "device", in_plane_axis=plan.in_plane_axis)
    return make_loader(batches, start_epoch * data.iterations_per_epoch, data.workers,
                       pin_memory=s.device.type == "cuda")


def _train_epoch(s: _Session, batch_iter, epoch: int, update) -> dict[str, float]:
    """``iterations_per_epoch`` optimizer steps; returns the epoch's loss, throughput and data-wait share."""
    import torch

    from medseg.training.augment import augment_batch
    from medseg.training.losses import compute_loss

    config, device = s.config, s.device
    data, optim, aug = config.data, config.optim, config.augment
    augment_here = aug.enabled and aug.where == "device"
    ds_mode = config.loss.deep_supervision_weights if config.loss.deep_supervision else None
    autocast = (lambda: torch.autocast(device.type, dtype=s.amp_dtype)) if s.amp_dtype else contextlib.nullcontext
    s.train_model.train()
    t_epoch, waited, loss_sum, steps = time.perf_counter(), 0.0, 0.0, 0
    for iteration in range(data.iterations_per_epoch):
        t0 = time.perf_counter()
        batch = next(batch_iter)
        image = batch["image"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        if augment_here:
            image, label = augment_batch(image, label, data.patch_size, aug, int(batch["seed"]), s.plan.in_plane_axis)
        if s.memory_format is not None:
            image = image.contiguous(memory_format=s.memory_format)
        waited += time.perf_counter() - t0
        with autocast():
            outputs = s.train_model(image)
        loss = compute_loss(outputs, label.long(), config.loss.name, config.model.activation, ds_mode)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.unscale_(s.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), optim.grad_clip or math.inf)
        finite = bool(torch.isfinite(grad_norm))  # the same on every rank: gradients are all-reduced
        if finite or s.scaler.is_enabled():  # a gradient scaler skips non-finite steps itself (and lowers its scale)
            s.scaler.step(s.optimizer)
        s.scaler.update()
        if finite and s.average is not None:
            s.average.update()
        s.nonfinite_steps = 0 if finite else s.nonfinite_steps + 1
        if s.nonfinite_steps >= MAX_NONFINITE_STEPS:
            raise TrainingError(f"training diverged in epoch {epoch + 1}: the gradients were NaN or infinite in "
                                f"{MAX_NONFINITE_STEPS} consecutive steps (their updates were skipped); "
                                "checkpoint_last.pt holds the last finished epoch; lower optim.lr in a --config "
                                "file or try --amp off", config.run_dir)
        if finite:
            loss_sum, steps = loss_sum + float(loss.detach()), steps + 1
        update(1, advance=1, description=f"epoch {epoch + 1}/{config.train.epochs} loss {loss_sum / max(steps, 1):.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t_epoch
    distributed.broadcast_buffers(s.model, s.info)  # batch-norm statistics: rank 0's everywhere
    if s.average is not None:
        distributed.broadcast_buffers(s.average.module, s.info)
    train_loss, wait_fraction = distributed.all_mean([loss_sum / steps if steps else math.nan, waited / seconds],
                                                     s.info, device)
    return {"train_loss": train_loss, "samples_per_s": data.iterations_per_epoch * s.effective_batch / seconds,
            "data_wait_fraction": wait_fraction, "skipped_steps": data.iterations_per_epoch - steps}


def _validate(s: _Session) -> list[float]:
    """Per-class Dice of the validation cases (shared out over the ranks)."""
    from medseg.training.validation import dice_from_counts, validate

    counts = validate(s.final_model, s.plan.val_cases, s.config.data.patch_size, s.device, s.config.model.activation,
                      s.plan.network_dims, s.ds.num_classes, batch_size=s.config.data.batch_size,
                      amp=s.amp_dtype is not None, rank=s.info.rank, world_size=s.info.world_size)
    return dice_from_counts(distributed.all_sum(counts, s.info).cpu())


def _checkpoint(s: _Session, epoch: int, best_dice: float, last_dice: float) -> dict[str, Any]:
    """Everything ``medseg.runs`` documents, after ``epoch`` finished epochs."""
    from medseg import __version__

    config, plan = s.config, s.plan
    return {
        "medseg_version": __version__, "arch": config.model.arch, "model_options": dict(config.model.options),
        "in_channels": s.ds.num_channels, "num_classes": plan.out_channels, "labels": s.ds.labels, "plan": s.ds.plan,
        "spatial_dims": plan.network_dims, "patch_size": list(config.data.patch_size),
        "activation": config.model.activation, "dataset": s.ds.name, "fold": config.data.fold,
        "config": to_dict(config), "model": s.final_model.state_dict(), "optimizer": s.optimizer.state_dict(),
        "scheduler": {"schedule": config.optim.schedule, "epoch": epoch}, "scaler": s.scaler.state_dict(),
        "epoch": epoch, "rng": rng_state(), "best_dice": best_dice if best_dice > -math.inf else math.nan,
        "val_dice": last_dice,
        **({"training_model": s.model.state_dict(), "ema_updates": s.average.updates} if s.average else {}),
    }


def _write_epoch(s: _Session, epoch: int, best_dice: float, last_dice: float, improved: bool,
                 rows: list[dict]) -> None:
    """Rank 0 saves the checkpoint(s), log.csv and curves.png; then every rank learns whether that worked."""
    run_dir, failure = s.config.run_dir, None
    if s.info.is_main:
        try:
            state = _checkpoint(s, epoch, best_dice, last_dice)
            save_checkpoint(state, run_dir / CHECKPOINT_LAST)
            if improved:
                save_checkpoint(state, run_dir / CHECKPOINT_BEST)
            write_log(run_dir / "log.csv", rows, log_columns(s.ds.labels))
            plot_curves(rows, run_dir / "curves.png", title=s.config.run_name)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
            failure = exc
    if not distributed.all_ok(failure is None, s.info, s.device):
        if failure is not None:
            raise failure
        raise CheckpointError("rank 0 could not write the run folder", run_dir)


def duration(seconds: float) -> str:
    """A rough duration for the epoch line's time to go: ``'45 s'``, ``'12 min'``, ``'16.4 h'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def planned_epochs(epochs: int, done: int, limit_s: float, elapsed_s: float, seconds_per_epoch: float) -> int:
    """The epoch count that ends training by ``limit_s`` seconds: ``done`` epochs took ``elapsed_s`` in all
    and an epoch takes about ``seconds_per_epoch``; never more than ``epochs``, never fewer than ``done``."""
    more = math.floor(max(0.0, limit_s - elapsed_s) / max(seconds_per_epoch, 1e-9))
    return int(max(done, min(epochs, done + more)))


def _replan_epochs(s: _Session, ceiling: int, done: int, wall_offset: float, session_s: float, session_epochs: int,
                   update):
    """Under ``train.time_limit``: set ``s.config``'s epochs to end by the limit (same count on every rank);
    returns the new ``TrainConfig``. The epoch time is this process's mean (validation included). The count
    may go down and up again, never above ``ceiling`` (the count this process started with): a slow early
    epoch must not shorten the run for good."""
    tc = s.config.train
    estimate = planned_epochs(ceiling, done, tc.time_limit * 60, wall_offset + session_s, session_s / session_epochs)
    epochs = int(round(distributed.all_mean([float(estimate)], s.info, s.device)[0]))
    if epochs != tc.epochs:
        s.config = dataclasses.replace(s.config, train=dataclasses.replace(tc, epochs=epochs))
        update(0, total=epochs)
        if s.info.is_main:
            save_yaml(s.config, s.config.run_dir / "config.yaml")
            _say(s.info, f"time limit {tc.time_limit:g} min: {epochs} epochs in all (the learning-rate schedule "
                         "follows)")
    return s.config.train


def _train(config: RunConfig, ds: DatasetFolder, spec, device, info: distributed.DistInfo, checkpoint: dict | None,
           overwrite: bool, stop_after: int | None) -> TrainResult:
    from medseg.training.recipe import learning_rate
    from medseg.training.validation import mean_dice

    config, plan = plan_run(config, ds, spec, device, info.world_size)
    s = _build(config, plan, ds, device, info)
    _describe(s)
    tc, run_dir = config.train, config.run_dir
    start_epoch, best_dice, wall_offset, rows = 0, -math.inf, 0.0, []
    if checkpoint is not None:
        s.model.load_state_dict(checkpoint.get("training_model", checkpoint["model"]))
        if s.average is not None:  # a run that had no average starts one from its last weights
            s.average.module.load_state_dict(checkpoint["model"])
            s.average.updates = int(checkpoint.get("ema_updates", 0))
        s.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            s.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        start_epoch = int(checkpoint["epoch"])
        best = checkpoint.get("best_dice")
        best_dice = -math.inf if best is None or math.isnan(best) else float(best)
        rows = [r for r in read_log(run_dir / "log.csv") if int(float(r["epoch"])) <= start_epoch]
        wall_offset = float(rows[-1]["wall_time_s"]) if rows and rows[-1].get("wall_time_s") else 0.0
        _say(info, f"resuming {run_dir} after epoch {start_epoch}")
    if tc.time_limit is not None and wall_offset >= tc.time_limit * 60:
        _say(info, f"the run has used its time limit of {tc.time_limit:g} minutes; pass a larger --time-limit to "
                   "continue")
        best = best_dice if best_dice > -math.inf else math.nan
        return TrainResult(run_dir, start_epoch, best, math.nan, distributed.state_hash(s.final_model), config)
    if start_epoch >= tc.epochs:
        _say(info, f"the run has finished its {tc.epochs} epochs; pass a larger --epochs to continue")
        best = best_dice if best_dice > -math.inf else math.nan
        return TrainResult(run_dir, start_epoch, best, math.nan, distributed.state_hash(s.final_model), config)
    _wrap(s)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None and overwrite:
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        save_yaml(config, run_dir / "config.yaml")

    fg_labels = [name for name, value in sorted(ds.labels.items(), key=lambda kv: kv[1]) if value != 0]
    loader = _loader(s, start_epoch)
    batch_iter = iter(loader)
    last_dice, epochs_run, epoch_ceiling, t_start = math.nan, 0, tc.epochs, time.perf_counter()
    bars = (progress.bars(("epochs", tc.epochs), ("iterations", config.data.iterations_per_epoch)) if info.is_main
            else contextlib.nullcontext(lambda *a, **k: None))
    try:
        with bars as update:
            update(0, completed=start_epoch)
            epoch = start_epoch
            while epoch < tc.epochs:  # tc.epochs is re-planned under a time limit
                lr = learning_rate(epoch, config.optim, tc.epochs)
                for group in s.optimizer.param_groups:
                    group["lr"] = lr
                update(1, reset=True)
                with subnormals_flushed():
                    row = {"epoch": epoch + 1, "lr": lr, "effective_batch": s.effective_batch,
                           **_train_epoch(s, batch_iter, epoch, update)}
                improved = False
                epochs_run += 1
                if tc.time_limit is not None:
                    tc = _replan_epochs(s, epoch_ceiling, epoch + 1, wall_offset, time.perf_counter() - t_start,
                                        epochs_run, update)
                if plan.val_cases and ((epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs):
                    per_class = _validate(s)
                    last_dice = mean_dice(per_class)
                    row.update({"val_dice": last_dice, **{f"val_dice_{n}": d for n, d in zip(fg_labels, per_class)}})
                    improved = not math.isnan(last_dice) and last_dice > best_dice
                    best_dice = last_dice if improved else best_dice
                row["wall_time_s"] = wall_offset + time.perf_counter() - t_start
                rows.append(row)
                _write_epoch(s, epoch + 1, best_dice, last_dice, improved, rows)

                dice_text = f", val Dice {row['val_dice']:.4f}" if "val_dice" in row else ""
                update(0, advance=1, description=f"epochs (best Dice {best_dice:.3f})" if best_dice > -math.inf else "epochs")
                left = (tc.epochs - epoch - 1) * (time.perf_counter() - t_start) / epochs_run
                _say(info, f"epoch {epoch + 1}/{tc.epochs}: loss {row['train_loss']:.4f}{dice_text}, lr {lr:.3g}, "
                           f"{row['samples_per_s']:.1f} samples/s, {row['data_wait_fraction']:.0%} of the time waiting "
                           "for data" + (f", {row['skipped_steps']} steps skipped (NaN or infinite gradients)"
                                         if row["skipped_steps"] else "") + (f"; about {duration(left)} to go" if left else ""))
                if stop_after is not None and epochs_run >= stop_after:
                    break
                epoch += 1
    finally:
        del batch_iter, loader  # stops the loader's worker processes

    weights = distributed.state_hash(s.final_model)
    if info.enabled:
        progress.info(f"rank {info.rank}/{info.world_size}: final weights sha256 {weights}")
    best = best_dice if best_dice > -math.inf else math.nan
    return TrainResult(run_dir, start_epoch + epochs_run, best, last_dice, weights, s.config)
