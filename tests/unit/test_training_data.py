"""Batch sampling from preprocessed arrays and batched augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medseg.config import AugmentConfig
from medseg.training.augment import augment_batch, batch_crop_size, draw_spatial
from medseg.training.data import Case, PatchBatches, batch_seed, crop_padded, make_loader, sample_locations

OFF = AugmentConfig(**{f.name: 0.0 for f in dataclasses.fields(AugmentConfig) if f.name.endswith("_p")})


def _write_case(root, case_id, shape, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((1, *shape)).astype(np.float32)
    label = np.zeros((1, *shape), dtype=np.uint8)
    centre = [s // 2 for s in shape]
    label[(0, *[slice(c - 2, c + 2) for c in centre])] = 1
    label[(0, *[slice(1, 3) for _ in shape])] = classes - 1
    np.save(root / f"{case_id}_image.npy", image)
    np.save(root / f"{case_id}_label.npy", label)
    return Case(case_id, root / f"{case_id}_image.npy", root / f"{case_id}_label.npy", tuple(shape),
                sample_locations(label, classes))


@pytest.fixture
def cases(tmp_path):
    return [_write_case(tmp_path, f"c{i}", (40, 36, 20), seed=i) for i in range(3)]


def test_crop_padded_fills_outside_with_zeros():
    a = np.arange(1, 2 * 5 * 4 + 1, dtype=np.float32).reshape(2, 5, 4)
    assert np.array_equal(crop_padded(a, (1, 1), (3, 2)), a[:, 1:4, 1:3])
    out = crop_padded(a, (-2, 2), (4, 4))
    assert out.shape == (2, 4, 4)
    assert np.array_equal(out[:, 2:, :2], a[:, :2, 2:]) and not out[:, :2].any() and not out[:, :, 2:].any()
    assert not crop_padded(a, (10, 10), (2, 2)).any()


def test_batch_seeds_are_stable_and_distinct():
    assert batch_seed(0, 0, 3, 7) == batch_seed(0, 0, 3, 7)
    seeds = {batch_seed(s, r, e, i) for s in (0, 1) for r in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(seeds) == 16


def test_a_batch_is_a_function_of_its_index_and_rank(cases):
    make = lambda rank=0: PatchBatches(cases, (16, 16, 16), 3, 10, seed=0, rank=rank, num_classes=3)  # noqa: E731
    a, b = make(), make()
    first = a[13]
    _ = b[2]  # other batches drawn before do not matter
    again = b[13]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert first["image"].shape == (3, 1, 16, 16, 16) and first["label"].dtype == torch.uint8
    assert not torch.equal(make(rank=1)[13]["image"], first["image"])
    assert not torch.equal(a[14]["image"], first["image"])


def test_foreground_samples_are_centred_on_labelled_voxels(cases):
    batches = PatchBatches(cases, (8, 8, 8), 3, 5, seed=1, num_classes=3, foreground_fraction=0.33)
    for index in range(12):
        labels = batches[index]["label"]
        assert labels[2].any()  # the last third of every batch is forced to foreground
    everything = PatchBatches(cases, (8, 8, 8), 4, 5, seed=1, num_classes=3, foreground_fraction=1.0)
    assert all(everything[i]["label"][b].any() for i in range(5) for b in range(4))


def test_slices_of_volumes_for_2d_networks(cases):
    batches = PatchBatches(cases, (32, 32), 2, 5, seed=0, num_classes=3, slice_axis=2, foreground_fraction=1.0)
    batch = batches[0]
    assert batch["image"].shape == (2, 1, 32, 32) and batch["label"].shape == (2, 1, 32, 32)
    assert all(batch["label"][b].any() for b in range(2))


def test_worker_processes_give_the_same_batches(cases):
    batches = PatchBatches(cases, (16, 16, 8), 2, 4, seed=0, num_classes=3, augment=AugmentConfig())
    serial = [b["image"] for _, b in zip(range(5), make_loader(batches, 3, workers=0))]
    parallel = [b["image"] for _, b in zip(range(5), make_loader(batches, 3, workers=2))]
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel))
    assert serial[0].shape == (2, 1, 16, 16, 8)
    assert torch.equal(serial[0], batches[3]["image"])  # the loader starts at the given index


# --- augmentation ------------------------------------------------------------------------------


def _volume_batch(shape=(2, 1, 24, 24, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(shape, dtype=torch.uint8)
    label[:, :, 6:18, 4:14, 4:12] = 1
    label[:, :, 14:20, 14:22, 8:14] = 2
    image = torch.randn(shape, generator=g)
    return image, label


def test_batch_crops_cover_the_transformed_patches():
    patch = (32, 32, 16)
    assert all(batch_crop_size(seed, 2, patch, OFF) == patch for seed in range(5))
    rotate = dataclasses.replace(OFF, rotation_p=1.0, scale_p=1.0)
    for seed in range(5):
        crop = batch_crop_size(seed, 2, patch, rotate)
        assert all(c >= p and (c - p) % 2 == 0 for c, p in zip(crop, patch))
        params = draw_spatial(np.random.default_rng(seed), 2, 3, rotate)
        for m in params.matrices:  # every transformed patch fits in the crop
            assert np.all(np.abs(m) @ np.asarray(patch) <= np.asarray(crop) + 1e-6)
    in_plane = batch_crop_size(0, 2, patch, dataclasses.replace(OFF, rotation_p=1.0), in_plane_axis=2)
    assert in_plane[2] == 16 and in_plane[0] > 32  # rotations about the thick axis only
    defaults = [batch_crop_size(seed, 1, patch, AugmentConfig()) for seed in range(20)]
    assert patch in defaults and any(c != patch for c in defaults)  # most batches need no margin at all


def test_no_augmentation_is_the_centre_crop():
    image, label = _volume_batch((2, 1, 28, 26, 20))
    out_image, out_label = augment_batch(image, label, (24, 24, 16), OFF, seed=3)
    assert torch.equal(out_image, image[:, :, 2:26, 1:25, 2:18])
    assert torch.equal(out_label, label[:, :, 2:26, 1:25, 2:18])


def test_flips_alone_flip_image_and_label_together():
    image, label = _volume_batch()
    out_image, out_label = augment_batch(image, label, (24, 24, 16), dataclasses.replace(OFF, flip_p=1.0), seed=0)
    assert torch.equal(out_image, image.flip([2, 3, 4]))
    assert torch.equal(out_label, label.flip([2, 3, 4]))


def test_spatial_transforms_keep_image_and_label_aligned():
    _, label = _volume_batch((4, 1, 40, 40, 24))
    image = label.float()  # the image is the label: any misalignment would show
    cfg = dataclasses.replace(OFF, rotation_p=1.0, scale_p=1.0, flip_p=0.5, elastic_p=1.0)
    out_image, out_label = augment_batch(image, label, (24, 24, 16), cfg, seed=5)
    assert out_label.dtype == torch.uint8 and set(out_label.unique().tolist()) <= {0, 1, 2}
    agree = (out_image.round() == out_label.float()).float().mean().item()
    assert agree > 0.95
    assert not torch.equal(out_label, label[:, :, 8:32, 8:32, 4:20])  # something did move


def test_augmentation_is_a_function_of_the_seed():
    image, label = _volume_batch((2, 1, 40, 40, 24))
    a = augment_batch(image, label, (24, 24, 16), AugmentConfig(), seed=11)
    b = augment_batch(image, label, (24, 24, 16), AugmentConfig(), seed=11)
    c = augment_batch(image, label, (24, 24, 16), AugmentConfig(), seed=12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(image, _volume_batch((2, 1, 40, 40, 24))[0])  # the input is left untouched


def test_intensity_transforms_change_only_the_image():
    image, label = _volume_batch((3, 1, 24, 24, 16))
    cfg = dataclasses.replace(OFF, noise_p=1.0, blur_p=1.0, brightness_p=1.0, contrast_p=1.0, gamma_p=1.0,
                              lowres_p=1.0)
    out_image, out_label = augment_batch(image, label, (24, 24, 16), cfg, seed=0)
    assert torch.equal(out_label, label)
    assert out_image.shape == image.shape and torch.isfinite(out_image).all()
    assert (out_image - image).abs().mean() > 0.05


def test_2d_batches_with_rgb_channels():
    g = torch.Generator().manual_seed(0)
    image = torch.rand((2, 3, 90, 90), generator=g)
    label = (image[:, :1] > 0.5).to(torch.uint8)
    out_image, out_label = augment_batch(image, label, (64, 64), AugmentConfig(rotation_p=1.0, scale_p=1.0), seed=1)
    assert out_image.shape == (2, 3, 64, 64) and out_label.shape == (2, 1, 64, 64)
