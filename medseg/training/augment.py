"""Batched data augmentation on torch tensors (CPU in loader workers, or on the GPU).

Spatial: rotation, scaling, elastic deformation and flips are combined into one sampling grid per
sample (``affine_grid`` + ``grid_sample``: bilinear for images, nearest for labels). The input is a crop
around the patch, as large as this batch's transforms need (``batch_crop_size``: the patch itself when no
sample is rotated, zoomed or deformed), so that transformed patches stay filled with data.
Intensity (nnU-Net's set): Gaussian noise, Gaussian blur, multiplicative brightness, contrast, low
resolution simulation, gamma.

Every random parameter is drawn from a NumPy generator seeded with the batch seed, so the same batch is
augmented the same way on any device and in any worker; the noise tensors use a torch generator on the
batch's device seeded the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.config import AugmentConfig


@dataclass(frozen=True)
class SpatialParams:
    """Per-sample spatial transforms of a batch, drawn from the batch seed.

    ``matrices`` ``(B, dims, dims)`` map output voxel offsets (from the patch centre) to input voxel
    offsets: rotation, flips and zoom (identity-with-flips for samples without rotation or zoom).
    ``resample`` marks samples that need grid sampling (rotation, zoom or elastic); ``elastic`` those with
    a random smooth displacement.
    """

    flips: np.ndarray
    matrices: np.ndarray
    resample: np.ndarray
    elastic: np.ndarray


def draw_spatial(rng: np.random.Generator, batch_size: int, dims: int, cfg: AugmentConfig,
                 in_plane_axis: int | None = None) -> SpatialParams:
    """The spatial parameters of a batch (always the same draws from ``rng``, whatever is enabled)."""
    B, on = batch_size, cfg.enabled
    planes = _rotation_planes(dims, in_plane_axis)
    flips = (rng.random((B, dims)) < cfg.flip_p) if on else np.zeros((B, dims), bool)
    rotate = (rng.random(B) < cfg.rotation_p) if on else np.zeros(B, bool)
    angles = rng.uniform(-1, 1, (B, len(planes))) * math.radians(cfg.rotation_degrees)
    zoom = (rng.random(B) < cfg.scale_p) if on else np.zeros(B, bool)
    scales = _uniform(rng, cfg.scale_range, B)
    elastic = (rng.random(B) < cfg.elastic_p) if on else np.zeros(B, bool)
    matrices = np.empty((B, dims, dims))
    for b in range(B):
        m = _rotation_matrix(dims, angles[b], planes) if rotate[b] else np.eye(dims)
        m = m @ np.diag(np.where(flips[b], -1.0, 1.0))
        matrices[b] = m / scales[b] if zoom[b] else m
    return SpatialParams(flips, matrices, rotate | zoom | elastic, elastic)


def batch_crop_size(seed: int, batch_size: int, patch_size: Sequence[int], cfg: AugmentConfig,
                    in_plane_axis: int | None = None) -> tuple[int, ...]:
    """The crop a batch needs so that its rotated / zoomed / deformed patches stay inside the data.

    The patch itself when no sample of the batch is resampled; otherwise the largest extent of the
    transformed patches (plus three standard deviations of any elastic shift), each side enlarged by an
    even amount so that an identity transform samples voxel centres exactly.
    """
    patch = np.asarray(patch_size, dtype=float)
    params = draw_spatial(np.random.default_rng(seed), batch_size, len(patch), cfg, in_plane_axis)
    extent = patch.copy()
    for b in np.flatnonzero(params.resample):
        extent = np.maximum(extent, np.abs(params.matrices[b]) @ patch)
    if params.elastic.any():
        extent = extent + 2 * cfg.elastic_magnitude * 3 * patch
    out = []
    for p, e in zip(patch_size, extent):
        margin = max(0, math.ceil(e - 1e-6) - int(p))
        out.append(int(p) + margin + (margin % 2))
    return tuple(out)


def _rotation_planes(dims: int, in_plane_axis: int | None) -> list[tuple[int, int]]:
    """Axis pairs rotated: the one plane in 2D; in 3D all three, or only the plane normal to ``in_plane_axis``."""
    if dims == 2:
        return [(0, 1)]
    if in_plane_axis is not None:
        a, b = [i for i in range(3) if i != in_plane_axis]
        return [(a, b)]
    return [(0, 1), (0, 2), (1, 2)]


def _rotation_matrix(dims: int, angles: Sequence[float], planes: list[tuple[int, int]]) -> np.ndarray:
    matrix = np.eye(dims)
    for angle, (a, b) in zip(angles, planes):
        r = np.eye(dims)
        r[a, a] = r[b, b] = math.cos(angle)
        r[a, b], r[b, a] = -math.sin(angle), math.sin(angle)
        matrix = r @ matrix
    return matrix


def _uniform(rng: np.random.Generator, bounds: Sequence[float], n: int = 1) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], n)


def _gaussian_kernel(sigma: float, device, dtype):
    import torch

    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(x, sigma: float):
    """Separable Gaussian blur of ``x`` ``(C, *spatial)`` with the same ``sigma`` (voxels) on every axis."""
    import torch.nn.functional as F

    dims = x.dim() - 1
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    channels = x.shape[0]
    out = x[None]
    conv = (None, F.conv1d, F.conv2d, F.conv3d)[dims]
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = k.numel()
        weight = k.reshape(1, 1, *shape).expand(channels, 1, *shape)
        padding = [0] * dims
        padding[axis] = k.numel() // 2
        out = conv(out, weight, padding=tuple(padding), groups=channels)
    return out[0]


def augment_batch(image, label, patch_size: Sequence[int], cfg: AugmentConfig, seed: int,
                  in_plane_axis: int | None = None):
    """Augment a batch and cut it to ``patch_size``.

    Args:
        image: float32 ``(B, C, *crop)``; label: integer ``(B, 1, *crop)`` (any device, same for both).
        patch_size: output spatial size (``crop`` ≥ ``patch_size`` side by side, centred).
        seed: the batch seed: equal seeds give equal augmentations.
        in_plane_axis: in 3D, rotate only about this axis (strongly anisotropic data), or None for all.
    Returns:
        ``(image (B, C, *patch_size) float32, label (B, 1, *patch_size) same dtype as given)``.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    source_ptr = image.data_ptr()
    B, dims = image.shape[0], image.dim() - 2
    crop = tuple(image.shape[2:])
    patch = tuple(int(p) for p in patch_size)
    device = image.device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    on = cfg.enabled

    # --- spatial: one affine (+ optional elastic field) per sample --------------------------------
    params = draw_spatial(rng, B, dims, cfg, in_plane_axis)
    flips, elastic = params.flips, params.elastic
    if params.resample.any():
        thetas = []
        for b in range(B):
            a = np.diag(1.0 / np.asarray(crop)) @ params.matrices[b] @ np.diag(np.asarray(patch, dtype=float))
            a = a[::-1, ::-1]  # affine_grid's coordinates run over the last axis first (x, y, z)
            thetas.append(np.concatenate([a, np.zeros((dims, 1))], axis=1))
        theta = torch.as_tensor(np.stack(thetas), dtype=torch.float32, device=device)
        grid = F.affine_grid(theta, [B, 1, *patch], align_corners=False)
        if elastic.any():
            coarse = torch.randn((B, dims, *([cfg.elastic_grid] * dims)), generator=gen, device=device)
            coarse *= torch.as_tensor(elastic, dtype=torch.float32, device=device).view(B, *([1] * (dims + 1)))
            mode = "bilinear" if dims == 2 else "trilinear"
            field = F.interpolate(coarse, size=patch, mode=mode, align_corners=True) * (2 * cfg.elastic_magnitude)
            # a shift of elastic_magnitude × the patch side per unit; grid units are half the crop side
            to_crop = torch.tensor([p / c for p, c in zip(patch, crop)][::-1], dtype=torch.float32, device=device)
            grid = grid + field.movedim(1, -1) * to_crop
        image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        label = F.grid_sample(label.float(), grid, mode="nearest", padding_mode="zeros",
                              align_corners=False).to(label.dtype)
    else:
        window = (slice(None), slice(None), *(slice((c - p) // 2, (c - p) // 2 + p) for c, p in zip(crop, patch)))
        image, label = image[window], label[window]
        if flips.any():
            image, label = image.clone(), label.clone()
            for b in range(B):
                axes = [1 + a for a in range(dims) if flips[b, a]]
                if axes:
                    image[b] = image[b].flip(axes)
                    label[b] = label[b].flip(axes)
    image = image.contiguous()
    if image.data_ptr() == source_ptr:  # never modify the caller's tensor in place
        image = image.clone()

    # --- intensity ---------------------------------------------------------------------------------
    def chosen(p: float) -> np.ndarray:
        return (rng.random(B) < p) if on else np.zeros(B, bool)

    noise = chosen(cfg.noise_p)
    noise_std = np.sqrt(_uniform(rng, cfg.noise_variance, B))
    blur = chosen(cfg.blur_p)
    blur_sigma = _uniform(rng, cfg.blur_sigma, B)
    bright = chosen(cfg.brightness_p)
    bright_f = _uniform(rng, cfg.brightness_range, B)
    contrast = chosen(cfg.contrast_p)
    contrast_f = _uniform(rng, cfg.contrast_range, B)
    lowres = chosen(cfg.lowres_p)
    lowres_zoom = _uniform(rng, cfg.lowres_zoom, B)
    gamma = chosen(cfg.gamma_p)
    gamma_g = _uniform(rng, cfg.gamma_range, B)

    def per_sample(values: np.ndarray, mask: np.ndarray, neutral: float):
        v = np.where(mask, values, neutral).astype(np.float32)
        return torch.as_tensor(v, device=device).view(B, *([1] * (dims + 1)))

    if noise.any():
        image = image + torch.randn(image.shape, generator=gen, device=device, dtype=image.dtype) * per_sample(noise_std, noise, 0.0)
    for b in np.flatnonzero(blur):
        image[b] = gaussian_blur(image[b], float(blur_sigma[b]))
    if bright.any():
        image = image * per_sample(bright_f, bright, 1.0)
    if contrast.any():
        reduce_dims = tuple(range(2, dims + 2))
        mean = image.mean(dim=reduce_dims, keepdim=True)
        lo, hi = image.amin(dim=reduce_dims, keepdim=True), image.amax(dim=reduce_dims, keepdim=True)
        factor = per_sample(contrast_f, contrast, 1.0)
        adjusted = torch.maximum(torch.minimum((image - mean) * factor + mean, hi), lo)
        image = torch.where(torch.as_tensor(contrast, device=device).view(B, *([1] * (dims + 1))), adjusted, image)
    mode = "bilinear" if dims == 2 else "trilinear"
    for b in np.flatnonzero(lowres):
        small = [max(1, int(round(p * lowres_zoom[b]))) for p in patch]
        down = F.interpolate(image[b:b + 1], size=small, mode="nearest")
        image[b] = F.interpolate(down, size=patch, mode=mode, align_corners=False)[0]
    for b in np.flatnonzero(gamma):
        x = image[b]
        mean, std = x.mean(), x.std()
        lo, rng_ = x.min(), x.max() - x.min()
        x = torch.pow(((x - lo) / (rng_ + 1e-7)).clamp_(0, 1), float(gamma_g[b])) * rng_ + lo
        image[b] = (x - x.mean()) / (x.std() + 1e-8) * std + mean
    return image, label
