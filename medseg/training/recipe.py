"""Per-family training recipes, the resolution of "auto" settings, the optimizer and the LR schedule.

Families (the ``_tiny`` variants share their family's recipe):

=========  =========================  ==================================================================
family     architectures               defaults
=========  =========================  ==================================================================
unet       unet, unet3d, vnet         SGD Nesterov, momentum 0.99, lr 1e-2, weight decay 3e-5, poly decay
                                      (exponent 0.9), gradient clipping 12, Dice + CE, 1000 epochs (nnU-Net);
                                      a network the planner narrowed for a CPU: Adam lr 1e-3 instead of SGD;
                                      3D networks: a moving average of the weights (decay 0.999) is
                                      validated and saved
unext      unext                      Adam lr 1e-3, weight decay 1e-4, cosine to 1e-5, Dice + CE, 100 epochs
cm_mlp     cm_mlp                     Adam lr 1e-4, lr × 0.1 every quarter of training, gradient clipping
                                      0.5, edge-weighted BCE + IoU on a sigmoid map (binary data) with
                                      equally weighted deep supervision, 60 epochs (the authors' recipe)
=========  =========================  ==================================================================

The learning rate is a pure function of the epoch (``learning_rate``), set at the start of each epoch,
so the "scheduler state" of a checkpoint is just the epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os

from medseg.config import RunConfig

FAMILIES = {
    "unet": {
        "optim": dict(optimizer="sgd", lr=1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True, schedule="poly",
                      grad_clip=12.0, min_lr=0.0, ema_decay=0.999),
        "loss": dict(name="dice_ce", deep_supervision_weights="halving"),
        "epochs": 1000,
        # a network narrowed for a CPU by the planner: Adam. Measured on Hippocampus (unet3d base 8, batch
        # norm, batch 5): after 80 steps SGD's validation Dice was still 0.00 with the same training loss
        # as Adam's, whose Dice was 0.39 (the batch-norm running statistics trail SGD's large early steps)
        "narrow_optim": dict(optimizer="adam", lr=1e-3, weight_decay=3e-5, momentum=0.0, nesterov=False,
                             schedule="poly", grad_clip=12.0, min_lr=0.0, ema_decay=0.999),
    },
    "unext": {
        "optim": dict(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False, schedule="cosine",
                      grad_clip=0.0, min_lr=1e-5, ema_decay=0.0),
        "loss": dict(name="dice_ce", deep_supervision_weights="halving"),
        "epochs": 100,
    },
    "cm_mlp": {
        "optim": dict(optimizer="adam", lr=1e-4, weight_decay=0.0, momentum=0.0, nesterov=False, schedule="step",
                      grad_clip=0.5, min_lr=0.0, ema_decay=0.0),
        "loss": dict(name="edge_bce_iou", deep_supervision_weights="equal"),
        "epochs": 60,
    },
}
ITERATIONS_PER_EPOCH = 250
#: validation sets of 3D cases up to this many voxels in all are validated every epoch (a few seconds,
#: e.g. Hippocampus's 39 cases: 2.5 M voxels); larger ones every ``VAL_EVERY_LARGE`` epochs
VAL_EVERY_EPOCH_VOXELS = 2**25
VAL_EVERY_LARGE = 5


def family_of(arch: str) -> str:
    """``unet`` | ``unext`` | ``cm_mlp`` for a registry name (``_tiny`` variants included)."""
    base = arch[: -len("_tiny")] if arch.endswith("_tiny") else arch
    return base if base in FAMILIES else "unet"  # unet3d, vnet and any other network: nnU-Net's recipe


def default_workers(world_size: int = 1) -> int:
    """Loader processes per training process: the CPUs left after the training processes, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(8, cpus // max(world_size, 1) - 1))


def resolve_recipe(config: RunConfig, *, num_train_cases: int, data_dims: int, network_dims: int,
                   num_classes: int, patch_size, batch_size: int, world_size: int = 1,
                   device_type: str = "cpu", val_voxels: int = 0, narrowed: bool = False) -> RunConfig:
    """Fill every ``None``/``auto`` of ``config`` (the planned patch and batch are given).

    ``num_train_cases``: training cases of this fold (2D image datasets: one epoch = one pass over them).
    ``val_voxels``: voxels of all validation cases together (decides how often 3D data is validated).
    ``narrowed``: the planner narrowed the network for a CPU (the family's ``narrow_optim`` applies).
    """
    family = FAMILIES[family_of(config.model.arch)]
    defaults = family.get("narrow_optim", family["optim"]) if narrowed else family["optim"]
    optim = {k: (v if getattr(config.optim, k) is None else getattr(config.optim, k)) for k, v in defaults.items()}
    if network_dims == 2 and config.optim.ema_decay is None:
        # measured to help 3D networks only: Hippocampus's unet3d average was ahead of its last weights in 11
        # of 12 epochs (by up to 0.06 Dice); on Kvasir a 2D U-Net's average trailed them (0.37 against 0.44
        # after 4 epochs of the same steps)
        optim["ema_decay"] = 0.0
    epochs = config.train.epochs or family["epochs"]
    if optim["schedule"] == "step" and config.optim.step_every is None:
        optim["step_every"] = max(1, epochs // 4)
    loss = {k: (v if getattr(config.loss, k) is None else getattr(config.loss, k)) for k, v in family["loss"].items()}
    activation = config.model.activation
    if activation == "auto":
        activation = "sigmoid" if family_of(config.model.arch) == "cm_mlp" and num_classes == 2 else "softmax"
    ipe = config.data.iterations_per_epoch
    if ipe is None:
        if data_dims == 2:
            ipe = max(1, math.ceil(num_train_cases / (batch_size * world_size)))
        else:
            ipe = ITERATIONS_PER_EPOCH
    workers = config.data.workers if config.data.workers is not None else default_workers(world_size)
    where = config.augment.where
    if where == "auto":
        where = "device" if device_type == "cuda" else "workers"
    val_every = 1 if data_dims == 2 or val_voxels <= VAL_EVERY_EPOCH_VOXELS else VAL_EVERY_LARGE
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, patch_size=tuple(int(p) for p in patch_size), batch_size=int(batch_size),
                                 iterations_per_epoch=int(ipe), workers=int(workers)),
        model=dataclasses.replace(config.model, activation=activation),
        optim=dataclasses.replace(config.optim, **optim),
        loss=dataclasses.replace(config.loss, **loss),
        augment=dataclasses.replace(config.augment, where=where),
        train=dataclasses.replace(config.train, epochs=int(epochs), run_name=config.run_name,
                                  val_every=config.train.val_every or val_every),
    )


def learning_rate(epoch: int, optim, epochs: int) -> float:
    """The learning rate for ``epoch`` (0-based) of ``epochs``: poly, cosine, step or constant."""
    base = optim.lr
    if optim.schedule == "poly":
        return base * (1 - epoch / epochs) ** optim.poly_exponent
    if optim.schedule == "cosine":
        floor = optim.min_lr or 0.0
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if optim.schedule == "step":
        return base * optim.step_gamma ** (epoch // max(1, optim.step_every or epochs // 4))
    return base


def make_optimizer(parameters, optim):
    """SGD (Nesterov) or Adam/AdamW from a resolved ``OptimConfig``."""
    import torch

    if optim.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum, nesterov=bool(optim.nesterov),
                               weight_decay=optim.weight_decay)
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
