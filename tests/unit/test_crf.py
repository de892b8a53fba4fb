"""Dense CRF refinement (pydensecrf): settings, the uncertain region, and its effect on Dice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medseg.errors import UsageError
from medseg.inference.crf import CRFConfig, crf_refine, uncertain_region
from medseg.phantoms import ct_phantom, image2d_phantom


def _mean_dice(probs: torch.Tensor, ref: torch.Tensor, classes) -> float:
    pred = probs.argmax(0)
    return float(np.mean([2 * ((pred == k) & (ref == k)).sum().item() / ((pred == k).sum() + (ref == k).sum()).item()
                          for k in classes]))


def _noisy_probs(label: torch.Tensor, num_classes: int, strength: float, seed: int = 0,
                 signal: float = 3.0) -> torch.Tensor:
    """Softmax of a one-hot signal plus spatially correlated noise: a plausible, imperfect network."""
    from scipy.ndimage import gaussian_filter

    onehot = torch.nn.functional.one_hot(label.long(), num_classes).movedim(-1, 0).float()
    noise = gaussian_filter(np.random.default_rng(seed).standard_normal(onehot.shape), (0,) + (1.0,) * label.ndim)
    noise = torch.from_numpy(noise / noise.std()).float()
    return torch.softmax(signal * onehot + strength * noise, 0)


@pytest.fixture(scope="module")
def phantom():
    ct, seg = ct_phantom(seed=3, shape=(40, 40, 16))
    image = torch.from_numpy(ct.array.astype(np.float32)).clamp(-200, 300)
    return image, torch.from_numpy(seg.array[0].astype(np.int64)), ct.spacing


def test_config_is_frozen_and_validated():
    config = CRFConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.iterations = 3  # type: ignore[misc]
    for bad in ({"mode": "4d"}, {"iterations": 0}, {"bilateral_schan": 0}, {"uncertain_eps": 1.0}):
        with pytest.raises(UsageError):
            CRFConfig(**bad)


def test_uncertain_region_dilates_by_the_margin_in_mm():
    probs = torch.zeros(2, 21, 21, 11)
    probs[0] = 1
    assert not uncertain_region(probs, (1.0, 1.0, 3.0), 0.01, 4.0).any()
    probs[:, 10, 10, 5] = 0.5
    region = uncertain_region(probs, (1.0, 2.0, 3.0), 0.01, 4.0)
    xs, ys, zs = [torch.unique(i) for i in region.nonzero(as_tuple=True)]
    assert (xs.min(), xs.max()) == (6, 14)  # 4 voxels of 1 mm
    assert (ys.min(), ys.max()) == (8, 12)  # 2 voxels of 2 mm
    assert (zs.min(), zs.max()) == (4, 6)  # round(4 / 3) = 1 voxel
    assert int(region.sum()) == 9 * 5 * 3
    assert uncertain_region(probs, (1, 1, 1), 0.0, 0.0).all()


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_crf_raises_dice_on_noisy_probabilities(phantom, mode):
    image, label, spacing = phantom
    noisy = _noisy_probs(label, 4, strength=1.0)
    refined = crf_refine(noisy, image, spacing, CRFConfig(mode=mode))
    before, after = _mean_dice(noisy, label, (1, 2, 3)), _mean_dice(refined, label, (1, 2, 3))
    assert after > before + 0.05, (before, after)
    torch.testing.assert_close(refined.sum(0), torch.ones(label.shape), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_crf_keeps_clean_probabilities(phantom, mode):
    image, label, spacing = phantom
    clean = _noisy_probs(label, 4, strength=0.3, seed=1)
    before = _mean_dice(clean, label, (1, 2, 3))
    after = _mean_dice(crf_refine(clean, image, spacing, CRFConfig(mode=mode)), label, (1, 2, 3))
    assert before > 0.97
    assert after >= before - 0.005, (before, after)


def test_voxels_outside_the_uncertain_region_are_unchanged(phantom):
    image, label, spacing = phantom
    probs = _noisy_probs(label, 4, strength=2.5, signal=8.0)
    config = CRFConfig(uncertain_eps=0.05, margin_mm=3.0)
    region = uncertain_region(probs, spacing, config.uncertain_eps, config.margin_mm)
    assert 0 < int(region.sum()) < region.numel()
    refined = crf_refine(probs, image, spacing, config)
    assert torch.equal(refined[:, ~region], probs[:, ~region])
    assert not torch.equal(refined[:, region], probs[:, region])


def test_2d_rgb_image_auto_mode_raises_dice():
    image, label = image2d_phantom(seed=4, size=(64, 48))
    ref = torch.from_numpy(label.array[0].astype(np.int64))
    noisy = _noisy_probs(ref, 2, strength=1.2, seed=2)
    refined = crf_refine(noisy, torch.from_numpy(image.array.astype(np.float32)), (1.0, 1.0), CRFConfig())
    assert refined.shape == noisy.shape
    assert _mean_dice(refined, ref, (1,)) > _mean_dice(noisy, ref, (1,)) + 0.02


def test_grid_mismatch_is_an_error(phantom):
    image, label, spacing = phantom
    with pytest.raises(ValueError, match="differ in grid"):
        crf_refine(_noisy_probs(label, 4, 1.0), image[:, :-1], spacing)
