"""Run folders and their checkpoints: training writes them, inference reads them.

A run folder ``models/RUN/`` holds ``config.yaml``, ``checkpoint_last.pt``, ``checkpoint_best.pt``,
``log.csv`` and ``curves.png``. A checkpoint is a plain dict of tensors and built-in types
(loadable with ``torch.load(weights_only=True)``):

``format_version``  int, bumped when the layout changes incompatibly
``medseg_version``  str
``arch``            registry name; ``model_options`` dict passed to ``create_model``
``in_channels``, ``num_classes``  ints
``model``           the model's state dict: the weights to predict with (the moving average of the trained
                    weights when ``optim.ema_decay`` is set, see ``medseg.training.ema``)
``training_model``, ``ema_updates``  the trained weights and the average's update count (training only;
                    present when the weights are averaged)
``optimizer``, ``scheduler``, ``scaler``  state dicts (training only; may be absent)
``epoch``           int, the number of finished epochs
``config``          the resolved run configuration as a plain dict
``labels``          {name: int}, including ``background: 0``
``plan``            the preprocessing plan of the dataset (see ``medseg.preprocessing``)
``rng``             random states for exact resume (training only): python, numpy, torch, cuda
``best_dice``       float (NaN before the first validation)
``spatial_dims``    2 or 3: the network's; ``patch_size`` list of ints it was trained on
``activation``      "softmax" (K channels) or "sigmoid" (one channel, binary: probabilities [1 - p, p])
``dataset``, ``fold``, ``val_dice``  where the run came from and its last validation Dice (training only)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medseg.errors import CheckpointError
from medseg.io.atomic import atomic_path

FORMAT_VERSION = 1
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` to a temporary file, fsync it, then rename it over ``path``.

    If writing fails (full disk...), the previous file at ``path`` is left untouched and a
    ``CheckpointError`` names the path.
    """
    import torch

    path = Path(path)
    checkpoint = {"format_version": FORMAT_VERSION, **checkpoint}
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint ({exc.strerror or exc}); the previous one is kept", path) from None
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse anything that needs code execution."""
    import pickle

    import torch

    from medseg import __version__

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file does not exist", path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"refused: the checkpoint needs code execution to load ({first[:160]})", path) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt or truncated checkpoint ({type(exc).__name__})", path) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError("not a medseg checkpoint (no model weights)", path)
    version = checkpoint.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {version} is not supported by medseg {__version__} (expects {FORMAT_VERSION})", path
        )
    return checkpoint


def find_latest_run(models_dir: str | Path = "models") -> Path | None:
    """The most recently modified run folder in ``models_dir`` that holds a checkpoint, or None."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return None
    runs = [p for p in models_dir.iterdir() if p.is_dir() and ((p / CHECKPOINT_BEST).exists() or (p / CHECKPOINT_LAST).exists())]
    if not runs:
        return None

    def mtime(run: Path) -> float:
        return max((run / name).stat().st_mtime for name in (CHECKPOINT_BEST, CHECKPOINT_LAST) if (run / name).exists())

    return max(runs, key=mtime)


def checkpoint_in(run: str | Path) -> Path:
    """The checkpoint to use from a run folder (best, else last), or the file itself."""
    run = Path(run)
    if run.is_file():
        return run
    for name in (CHECKPOINT_BEST, CHECKPOINT_LAST):
        if (run / name).exists():
            return run / name
    raise CheckpointError("no checkpoint_best.pt or checkpoint_last.pt in this run folder", run)
