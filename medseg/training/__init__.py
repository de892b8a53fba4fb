"""Training: dataset loading and batch sampling, augmentation, losses, the loop, planning, DDP set-up.

``train(config, resume=False, overwrite=False)`` is the entry point (``medseg train`` calls it); the
pure pieces (``plan_patch_and_batch``, ``choose_amp_dtype``, ``learning_rate``, the losses) are in their
modules. Heavy imports (torch) happen when a submodule is used, not when this package is imported.
"""

from __future__ import annotations

__all__ = ["TrainResult", "train", "plan_patch_and_batch", "choose_amp_dtype"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from medseg.training import loop

        return getattr(loop, name)
    if name == "plan_patch_and_batch":
        from medseg.training.planner import plan_patch_and_batch

        return plan_patch_and_batch
    if name == "choose_amp_dtype":
        from medseg.training.device import choose_amp_dtype

        return choose_amp_dtype
    raise AttributeError(f"module 'medseg.training' has no attribute {name!r}")
