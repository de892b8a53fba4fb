"""Intensity normalization schemes (one per channel, chosen by the plan).

``{"scheme": "ct", "clip": [lo, hi], "mean": m, "std": s}``  clip to the dataset's foreground
0.5/99.5 percentiles, then z-score with the dataset's foreground mean and std;
``{"scheme": "zscore"}`` per image (over ``mask`` when given, zero outside it);
``{"scheme": "rgb"}`` ``x / 255``; ``{"scheme": "none"}`` unchanged.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("ct", "zscore", "rgb", "none")


def normalize_channel(channel: np.ndarray, scheme: dict, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalize one channel ``(*spatial)`` (float32 out)."""
    x = channel.astype(np.float32, copy=True)
    kind = scheme["scheme"]
    if kind == "ct":
        lo, hi = scheme["clip"]
        np.clip(x, lo, hi, out=x)
        x -= np.float32(scheme["mean"])
        x /= np.float32(max(float(scheme["std"]), 1e-8))
    elif kind == "zscore":
        if mask is not None and mask.any():
            values = x[mask]
            x = (x - values.mean()) / max(float(values.std()), 1e-8)
            x[~mask] = 0.0
        else:
            x = (x - x.mean()) / max(float(x.std()), 1e-8)
    elif kind == "rgb":
        x /= np.float32(255.0)
    elif kind != "none":
        raise ValueError(f"unknown normalization scheme {kind!r} (expected one of {', '.join(SCHEMES)})")
    return x.astype(np.float32, copy=False)


def normalize(image: np.ndarray, schemes: list[dict], mask: np.ndarray | None = None) -> np.ndarray:
    """Normalize ``image`` ``(C, *spatial)`` channel by channel with ``schemes`` (one dict per channel)."""
    if len(schemes) != image.shape[0]:
        raise ValueError(f"{image.shape[0]} channels but {len(schemes)} normalization entries in the plan")
    return np.stack([normalize_channel(c, s, mask) for c, s in zip(image, schemes)])
