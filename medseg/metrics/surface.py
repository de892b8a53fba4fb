"""Boundary metrics in millimetres: Hausdorff distance, HD95, ASSD and normalized surface Dice.

The definitions follow MONAI (``compute_hausdorff_distance``, ``compute_average_surface_distance(
symmetric=True)``, ``compute_surface_dice(use_subvoxels=False)``); see docs/metrics.md:

* the border of a mask is the set of its voxels that have a face neighbour (6 in 3D, 4 in 2D) outside
  the mask or outside the array (``mask & ~binary_erosion(mask)``, scipy's default cross structure);
* every border voxel of one side gets the Euclidean distance, in mm (``index * spacing``), to the nearest
  border voxel of the other side; distances are kept as float32 like MONAI's;
* HD is the larger of the two directed maxima, HD95 the larger of the two directed 95th percentiles
  (linear interpolation), ASSD the mean of both distance arrays together, and NSD at a tolerance the
  fraction of all border voxels (both sides) whose distance is at most the tolerance.

Everything here is derived from the same two distance arrays; the nearest-neighbour search runs on a
KD-tree (scipy) on the CPU or as chunked exact ``torch.cdist`` on a torch device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOUNDARY_METRICS = ("hd", "hd95", "assd")


def nsd_column(tolerance_mm: float) -> str:
    """Column name of NSD at ``tolerance_mm``: ``nsd_1mm``, ``nsd_0.5mm``."""
    return f"nsd_{tolerance_mm:g}mm"


def border(mask):
    """Border voxels of a boolean mask ``(*spatial)`` (numpy array or torch tensor, same type back).

    A voxel is on the border when it is in the mask and at least one of its face neighbours is outside
    the mask or outside the array; this equals ``mask ^ scipy.ndimage.binary_erosion(mask)``.
    """
    inner = mask.clone() if hasattr(mask, "clone") else mask.copy()
    full = [slice(None)] * mask.ndim
    for axis in range(mask.ndim):
        lo, hi = list(full), list(full)
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        inner[tuple(hi)] &= mask[tuple(lo)]
        inner[tuple(lo)] &= mask[tuple(hi)]
        for edge in (0, -1):
            face = list(full)
            face[axis] = edge
            inner[tuple(face)] = False
    return mask & ~inner


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> np.ndarray:
    values = np.asarray(1.0 if spacing is None else spacing, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    if values.shape != (ndim,):
        raise ValueError(f"spacing {tuple(values)} does not match {ndim} spatial dimensions")
    return values


def _use_torch(device, backend: str | None) -> bool:
    if backend not in (None, "scipy", "torch"):
        raise ValueError(f"unknown backend {backend!r} (use 'scipy' or 'torch')")
    if backend is not None:
        return backend == "torch"
    return str(device) != "cpu"


def _nearest_scipy(query_mm: np.ndarray, target_mm: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(target_mm, leafsize=32).query(query_mm, k=1)[0]


def _nearest_torch(query_mm, target_mm, max_pairs: int = 1 << 25):
    """Exact nearest distances ``(Nq,)`` from ``query_mm (Nq, D)`` to ``target_mm (Nt, D)`` (float64 tensors).

    Chunks of queries keep the distance matrix under ``max_pairs`` entries; ``cdist`` is asked not to
    use the matrix-product shortcut, which loses precision for close points.
    """
    import torch

    rows = max(1, max_pairs // max(1, target_mm.shape[0]))
    out = torch.empty(query_mm.shape[0], dtype=torch.float64, device=query_mm.device)
    for start in range(0, query_mm.shape[0], rows):
        chunk = query_mm[start : start + rows]
        out[start : start + rows] = torch.cdist(chunk, target_mm, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
    return out


def _directed(query_mm, target_mm, use_torch: bool) -> np.ndarray:
    """Float32 distances from each query point to the nearest target point; inf when no target."""
    if len(target_mm) == 0:
        return np.full(len(query_mm), np.inf, dtype=np.float32)
    if len(query_mm) == 0:
        return np.zeros(0, dtype=np.float32)
    if use_torch:
        return _nearest_torch(query_mm, target_mm).cpu().numpy().astype(np.float32)
    return _nearest_scipy(query_mm, target_mm).astype(np.float32)


def border_distances(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray, device="cpu",
                     backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface distances between two boolean masks already cropped to a box that holds both.

    Returns ``(d_pred_to_ref (N_pred_border,), d_ref_to_pred (N_ref_border,))`` float32 in mm; a side whose
    other side is empty gets inf distances. ``device``/``backend``: the KD-tree on the CPU (``"scipy"``),
    or exact chunked ``torch.cdist`` on ``device`` (``"torch"``; the default off the CPU).
    """
    use_torch = _use_torch(device, backend)
    if use_torch:
        import torch

        scale = torch.as_tensor(spacing, dtype=torch.float64, device=device)
        points = [torch.nonzero(border(torch.as_tensor(m, device=device))).to(torch.float64) * scale for m in (pred, ref)]
    else:
        points = [np.argwhere(border(m)) * spacing for m in (pred, ref)]
    return _directed(points[0], points[1], use_torch), _directed(points[1], points[0], use_torch)


def bounding_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box ``(slice per axis)`` holding every nonzero voxel of ``masks``; None when all are empty."""
    from scipy import ndimage

    union = np.logical_or.reduce([np.asarray(m, dtype=bool) for m in masks])
    boxes = ndimage.find_objects(union.astype(np.uint8))
    return boxes[0] if boxes else None


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
                      device="cpu", backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface distances between boolean masks ``pred`` and ``ref`` of shape ``(*spatial)`` (2D or 3D).

    Returns ``(d_pred_to_ref, d_ref_to_pred)``: float32 mm, one per border voxel of each side (inf when
    the other side is empty; both empty when both masks are).
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    scale = _spacing(spacing, pred.ndim)
    box = bounding_box(pred, ref)
    if box is None:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return border_distances(pred[box], ref[box], scale, device=device, backend=backend)


def _max_directed_percentile(sides: Sequence[np.ndarray], percentile: float) -> float:
    """The larger of the directed percentiles (linear interpolation, as ``torch.quantile``)."""
    return float(max(np.quantile(d.astype(np.float64), percentile / 100) for d in sides))


def boundary_metrics(d_pred_to_ref: np.ndarray, d_ref_to_pred: np.ndarray,
                     tolerances_mm: Sequence[float] = ()) -> dict[str, float]:
    """HD, HD95, ASSD and NSD at each tolerance from the two directed distance arrays (mm).

    Both arrays empty (both structures empty): every value is NaN. One side empty (inf distances):
    HD, HD95 and ASSD are inf, NSD is 0. Keys: ``hd``, ``hd95``, ``assd``, ``nsd_<tol>mm``.
    """
    nsd_keys = [nsd_column(t) for t in tolerances_mm]
    n_total = len(d_pred_to_ref) + len(d_ref_to_pred)
    if n_total == 0:
        return dict.fromkeys([*BOUNDARY_METRICS, *nsd_keys], float("nan"))
    if len(d_pred_to_ref) == 0 or len(d_ref_to_pred) == 0:
        return {**dict.fromkeys(BOUNDARY_METRICS, float("inf")), **dict.fromkeys(nsd_keys, 0.0)}
    sides = (d_pred_to_ref, d_ref_to_pred)
    metrics = {
        "hd": float(max(d.max() for d in sides)),
        "hd95": _max_directed_percentile(sides, 95),
        "assd": float((d_pred_to_ref.sum(dtype=np.float64) + d_ref_to_pred.sum(dtype=np.float64)) / n_total),
    }
    for key, tol in zip(nsd_keys, tolerances_mm):
        # Compared in float32 like MONAI (a float32 tensor against a Python scalar).
        within = sum(int(np.count_nonzero(d <= np.float32(tol))) for d in sides)
        metrics[key] = within / n_total
    return metrics


# --- single-structure conveniences (MONAI-like pure functions) ---------------------------------------

def hausdorff_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
                       percentile: float | None = None, device="cpu", backend: str | None = None) -> float:
    """Symmetric Hausdorff distance (or the larger directed ``percentile``) between two masks, in mm."""
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    d_pr, d_rp = surface_distances(pred, ref, spacing, device=device, backend=backend)
    if percentile is None or len(d_pr) == 0 or len(d_rp) == 0:  # empty sides: the HD rule (NaN or inf)
        return boundary_metrics(d_pr, d_rp)["hd"]
    return _max_directed_percentile((d_pr, d_rp), percentile)


def average_surface_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
                             device="cpu", backend: str | None = None) -> float:
    """Average symmetric surface distance (ASSD) between two masks, in mm."""
    return boundary_metrics(*surface_distances(pred, ref, spacing, device=device, backend=backend))["assd"]


def normalized_surface_dice(pred: np.ndarray, ref: np.ndarray, tolerance_mm: float,
                            spacing: Sequence[float] | float | None = None, device="cpu",
                            backend: str | None = None) -> float:
    """Normalized surface Dice at ``tolerance_mm`` (border voxels counted, not surfel areas)."""
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance_mm}")
    d_pr, d_rp = surface_distances(pred, ref, spacing, device=device, backend=backend)
    return boundary_metrics(d_pr, d_rp, [tolerance_mm])[nsd_column(tolerance_mm)]
