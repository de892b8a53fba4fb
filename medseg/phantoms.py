"""Synthetic phantoms for tests and the demo, deterministic by seed.

``ct_phantom`` makes a CT-like volume in Hounsfield-like units: air outside an elliptic body
(fat and soft tissue), a spine-like bone column, and organ-like structures (a liver, a spleen and a
kidney pair sharing one label) with smooth texture and noise, on an anisotropic grid in a chosen
orientation (``RAS``, ``LPS``, ``LAS``, ``oblique``...). ``image2d_phantom`` makes an RGB image with
blob-like foreground. ``write_ct_dataset`` writes a Decathlon-layout folder of phantoms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.io.volume import Volume

CT_LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
_HU = {"air": -1000.0, "fat": -90.0, "muscle": 15.0, "bone": 700.0, "liver": 75.0, "spleen": 120.0, "kidney": 180.0}


def orientation_affine(spacing: tuple[float, float, float], orientation: str = "RAS", shape=None,
                       angle_deg: float = 20.0) -> np.ndarray:
    """An affine with the given voxel ``spacing`` whose axes point along ``orientation`` (three letters
    from RAS/LPI), or an ``oblique`` rotation of RAS about two axes. The volume is centred at the origin."""
    spacing = np.asarray(spacing, dtype=float)
    if orientation == "oblique":
        a = np.deg2rad(angle_deg)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        b = np.deg2rad(angle_deg / 2)
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        rot = rz @ rx
    else:
        axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
        rot = np.zeros((3, 3))
        for col, letter in enumerate(orientation.upper()):
            row, sign = axes[letter]
            rot[row, col] = sign
    affine = np.eye(4)
    affine[:3, :3] = rot * spacing[None, :]
    if shape is not None:
        centre = (np.asarray(shape, dtype=float) - 1) / 2
        affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _ellipsoid(grid_mm: list[np.ndarray], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid_mm, centre, radii)) <= 1.0


def _smooth_noise(rng: np.random.Generator, shape, sigma_vox, amplitude: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    field /= field.std() + 1e-8
    return amplitude * field


def ct_phantom(seed: int = 0, shape: tuple[int, int, int] = (64, 64, 32),
               spacing: tuple[float, float, float] = (1.5, 1.5, 3.0), orientation: str = "RAS",
               noise_hu: float = 20.0) -> tuple[Volume, Volume]:
    """A CT-like phantom and its label map (labels as in ``CT_LABELS``), both on the same grid.

    The anatomy is defined in a patient frame (x: right→left axis of the array in RAS terms), so the
    same seed gives the same anatomy in every ``orientation``: only the storage order differs.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    affine = orientation_affine(spacing, orientation, shape)
    # World RAS coordinates (mm) of every voxel: anatomy lives in world space.
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)
    fov = np.asarray(spacing) * np.asarray(shape)
    half = fov / 2.0
    jitter = lambda scale: rng.uniform(-scale, scale)  # noqa: E731

    # Body: an elliptic cylinder along S, slightly random.
    body_r = (half[0] * (0.82 + jitter(0.05)), half[1] * (0.70 + jitter(0.05)), half[2] * 10)
    body = _ellipsoid([world[0], world[1], world[2]], (0, jitter(2), 0), body_r)
    image = np.full(shape, _HU["air"], dtype=np.float32)
    image[body] = _HU["fat"]
    inner = _ellipsoid([world[0], world[1], world[2]], (0, 0, 0), (body_r[0] * 0.88, body_r[1] * 0.85, body_r[2]))
    image[inner] = _HU["muscle"]
    spine = _ellipsoid([world[0], world[1], world[2]], (0, -body_r[1] * 0.55, 0), (body_r[0] * 0.12, body_r[1] * 0.14, body_r[2]))
    image[spine] = _HU["bone"]

    labels = np.zeros(shape, dtype=np.uint8)
    z_r = max(half[2] * 0.55, 2.5 * abs(spacing[2]))
    # Liver on the patient's right (+x in RAS), spleen on the left.
    liver = _ellipsoid(world, (body_r[0] * (0.38 + jitter(0.05)), body_r[1] * (0.1 + jitter(0.05)), jitter(half[2] * 0.1)),
                       (body_r[0] * (0.38 + jitter(0.04)), body_r[1] * (0.45 + jitter(0.05)), z_r * (1.0 + jitter(0.1))))
    spleen = _ellipsoid(world, (-body_r[0] * (0.55 + jitter(0.05)), -body_r[1] * (0.05 + jitter(0.05)), jitter(half[2] * 0.1)),
                        (body_r[0] * (0.17 + jitter(0.03)), body_r[1] * (0.25 + jitter(0.04)), z_r * (0.8 + jitter(0.1))))
    kid_r = (body_r[0] * (0.11 + jitter(0.02)), body_r[1] * (0.16 + jitter(0.03)), z_r * (0.7 + jitter(0.1)))
    kidneys = _ellipsoid(world, (-body_r[0] * 0.3, -body_r[1] * 0.45, 0), kid_r) | _ellipsoid(
        world, (body_r[0] * 0.3, -body_r[1] * 0.45, 0), kid_r)
    for mask, label, tissue in ((liver, 1, "liver"), (spleen, 2, "spleen"), (kidneys, 3, "kidney")):
        mask &= inner & ~spine
        labels[mask] = label
        image[mask] = _HU[tissue]

    sigma = tuple(max(0.5, 4.0 / s) for s in spacing)
    image += _smooth_noise(rng, shape, sigma, 12.0) * (labels > 0)  # organ texture
    image += rng.normal(0.0, noise_hu, size=shape).astype(np.float32) * body
    meta = {"format": "phantom", "seed": seed}
    ct = Volume(array=np.round(image)[None].astype(np.int16), affine=affine, source=f"phantom:{seed}", meta=meta)
    seg = Volume(array=labels[None], affine=affine.copy(), source=f"phantom:{seed}:label", meta=dict(meta))
    return ct, seg


def image2d_phantom(seed: int = 0, size: tuple[int, int] = (128, 128), n_blobs: int = 2) -> tuple[Volume, Volume]:
    """An RGB 2D phantom (3 channels, uint8) with ``n_blobs`` elliptic foreground blobs (label 1)."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32), indexing="ij")
    mask = np.zeros((w, h), dtype=bool)
    for _ in range(n_blobs):
        c = rng.uniform(0.25, 0.75, 2) * (w, h)
        r = rng.uniform(0.08, 0.18, 2) * (w, h)
        mask |= ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 <= 1
    background = np.array([150, 70, 60], dtype=np.float32) + rng.uniform(-20, 20, 3)
    foreground = np.array([200, 140, 110], dtype=np.float32) + rng.uniform(-20, 20, 3)
    rgb = np.where(mask[None], foreground[:, None, None], background[:, None, None])
    rgb += _smooth_noise(rng, (3, w, h), (0, 3, 3), 12.0) + rng.normal(0, 8, (3, w, h))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    affine = np.eye(4)
    image = Volume(array=rgb, affine=affine, source=f"phantom2d:{seed}", meta={"format": "phantom"})
    label = Volume(array=mask[None].astype(np.uint8), affine=affine.copy(), source=f"phantom2d:{seed}:label", meta={"format": "phantom"})
    return image, label


def write_ct_dataset(root: str | Path, n_cases: int = 6, seed: int = 0, shape=(64, 64, 32),
                     spacing=(1.5, 1.5, 3.0), orientations=("RAS", "LPS", "LAS", "oblique")) -> Path:
    """Write ``n_cases`` CT phantoms in the Decathlon / nnU-Net raw layout under ``root``:
    ``imagesTr/phantom_XXX_0000.nii.gz``, ``labelsTr/phantom_XXX.nii.gz`` and ``dataset.json``.
    Orientations cycle through ``orientations``."""
    from medseg.io.nifti import write_nifti

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        case = f"phantom_{i:03d}"
        ct, seg = ct_phantom(seed=seed + i, shape=shape, spacing=spacing, orientation=orientations[i % len(orientations)])
        write_nifti(ct, root / "imagesTr" / f"{case}_0000.nii.gz")
        write_nifti(seg, root / "labelsTr" / f"{case}.nii.gz")
    dataset = {
        "name": "phantom",
        "description": "Synthetic CT phantoms generated by medseg.phantoms (deterministic by seed).",
        "channel_names": {"0": "CT"},
        "labels": dict(CT_LABELS),
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return root


def write_image2d_dataset(root: str | Path, n_cases: int = 4, seed: int = 0, size: tuple[int, int] = (64, 64)) -> Path:
    """Write ``n_cases`` RGB 2D phantoms as ``images/imgN.png`` with masks ``masks/imgN.png`` (0/255),
    the layout of 2D segmentation sets such as Kvasir-SEG."""
    from medseg.io import write_volume

    root = Path(root)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        image, label = image2d_phantom(seed=seed + i, size=size)
        write_volume(image, root / "images" / f"img{i}.png")
        write_volume(label.with_array(label.array * 255), root / "masks" / f"img{i}.png")
    return root
