"""medseg: medical image segmentation (ingest, train, predict, evaluate).

Heavy dependencies (torch, MONAI) are imported lazily so that ``import medseg``
and ``medseg --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "Predictor", "Volume", "read_volume", "write_volume", "create_model", "list_models"]


def __getattr__(name: str):
    if name == "Predictor":
        from medseg.inference.predictor import Predictor

        return Predictor
    if name in ("Volume", "read_volume", "write_volume"):
        from medseg import io

        return getattr(io, name)
    if name in ("create_model", "list_models"):
        from medseg import models

        return getattr(models, name)
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
