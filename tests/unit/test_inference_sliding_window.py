"""Sliding-window inference: layout, Gaussian weighting, equality with MONAI, stacked slices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference_helpers import ValueToClass  # noqa: E402

from medseg.inference.sliding_window import (  # noqa: E402
    gaussian_importance_map,
    num_windows,
    sliding_window_predict,
    to_probabilities,
    window_starts,
)


def _net(in_ch=2, classes=3, dims=3, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    return torch.nn.Sequential(conv(in_ch, 6, 3, padding=1), torch.nn.ReLU(), conv(6, classes, 3, padding=1)).eval()


def test_gaussian_map_matches_monai():
    from monai.data.utils import compute_importance_map

    for patch in [(16, 12, 8), (9, 10)]:
        ours = gaussian_importance_map(patch)
        theirs = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125)
        assert ours.shape == patch
        assert torch.allclose(ours, theirs.float(), atol=1e-7)
        assert 0.5 < float(ours.max()) <= 1.0 and float(ours.min()) >= 1e-3


def test_window_starts_cover_and_end_flush():
    starts = window_starts((37, 16, 20), (16, 16, 12), 0.5)
    assert starts[0] == [0, 8, 16, 21]
    assert starts[1] == [0]
    assert starts[2] == [0, 6, 8]
    for size, patch, s in zip((37, 16, 20), (16, 16, 12), starts):
        covered = np.zeros(size, bool)
        for a in s:
            covered[a:a + patch] = True
        assert covered.all() and s[-1] + patch == size
    assert num_windows((37, 16, 20), (16, 16, 12), 0.5) == 12
    assert num_windows((5, 5, 5), (16, 16, 12), 0.5) == 1  # padded up to one window


@pytest.mark.parametrize("shape,overlap", [((37, 29, 21), 0.5), ((10, 40, 9), 0.25), ((16, 16, 12), 0.5)])
def test_equals_monai_sliding_window_inference(shape, overlap):
    from monai.inferers import sliding_window_inference

    net = _net()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    ours, sq = sliding_window_predict(net, x, (16, 16, 12), overlap, batch_size=3, amp=False)  # fp32, as MONAI
    with torch.no_grad():
        theirs = sliding_window_inference(x[None], (16, 16, 12), 3, lambda z: torch.softmax(net(z), 1),
                                          overlap=overlap, mode="gaussian")[0]
    assert sq is None
    assert ours.shape == (3, *shape)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_only_where_the_device_runs_it_natively(monkeypatch, native):
    """``amp``: bf16 autocast where ``bf16_supported`` (AMX / AVX512-BF16 CPUs, GPUs), else fp32; the
    probabilities come back in fp32 either way, within bf16's rounding of the fp32 ones."""
    import medseg.devices
    from medseg.inference.sliding_window import autocast_context

    monkeypatch.setattr(medseg.devices, "bf16_supported", lambda device: native)
    cpu = torch.device("cpu")
    with autocast_context(cpu, amp=True):
        assert torch.is_autocast_enabled("cpu") == native
        if native:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_context(cpu, amp=False):
        assert not torch.is_autocast_enabled("cpu")
    net = _net()
    x = torch.randn(2, 20, 18, 14, generator=torch.Generator().manual_seed(2))
    fp32, _ = sliding_window_predict(net, x, (16, 16, 12), 0.5, amp=False)
    mixed, _ = sliding_window_predict(net, x, (16, 16, 12), 0.5, amp=True)
    assert mixed.dtype == torch.float32
    if native:
        assert not torch.equal(mixed, fp32)  # bf16 really ran
        torch.testing.assert_close(mixed, fp32, atol=2e-2, rtol=0)
    else:
        assert torch.equal(mixed, fp32)


def test_stacked_images_equal_separate_calls_and_progress_counts():
    net = _net(dims=2)
    x = torch.randn(5, 2, 30, 19, generator=torch.Generator().manual_seed(2))
    done = []
    stacked, _ = sliding_window_predict(net, x, (16, 16), 0.5, batch_size=4, progress=done.append)
    assert sum(done) == 5 * num_windows((30, 19), (16, 16), 0.5)
    for n in range(5):
        single, _ = sliding_window_predict(net, x[n], (16, 16), 0.5, batch_size=2)
        torch.testing.assert_close(stacked[n], single, atol=1e-6, rtol=1e-5)


def test_value_to_class_model_recovers_labels_and_second_moment():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 4, size=(23, 17, 11))).float()
    probs, sq = sliding_window_predict(ValueToClass(4), labels[None], (8, 8, 8), 0.5, batch_size=5,
                                       flips=[(), (0,), (1, 2)], second_moment=True)
    assert torch.equal(probs.argmax(0), labels.long())
    torch.testing.assert_close(probs.sum(0), torch.ones(labels.shape))
    # Every window and flip agree (a pointwise model): the second moment is the square of the mean.
    torch.testing.assert_close(sq, probs * probs, atol=1e-6, rtol=1e-5)


def test_flips_equal_the_mean_of_flipped_models():
    net = _net()
    x = torch.randn(2, 20, 18, 14, generator=torch.Generator().manual_seed(3))
    flips = [(), (0,), (1, 2), (0, 1, 2)]
    batched, sq = sliding_window_predict(net, x, (12, 12, 12), 0.5, batch_size=2, flips=flips, second_moment=True)
    members = []
    for f in flips:
        dims = [2 + a for a in f]
        flipped_net = (lambda d: lambda z: net(z.flip(d)).flip(d) if d else net(z))(dims)
        members.append(sliding_window_predict(flipped_net, x, (12, 12, 12), 0.5, batch_size=3)[0])
    torch.testing.assert_close(batched, torch.stack(members).mean(0), atol=1e-5, rtol=1e-5)
    assert bool((sq - batched**2 >= -1e-6).all()) and float((sq - batched**2).max()) > 0


def test_sigmoid_activation_and_bad_arguments():
    logits = torch.tensor([[[0.0, 2.0]]])
    probs = to_probabilities(logits, "sigmoid")
    assert probs.shape == (1, 2, 2)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))
    with pytest.raises(ValueError, match="one output channel"):
        to_probabilities(torch.zeros(1, 2, 3), "sigmoid")
    with pytest.raises(ValueError, match="unknown activation"):
        to_probabilities(logits, "relu")
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(_net(), torch.zeros(2, 8, 8, 8), (8, 8, 8), overlap=1.0)
    with pytest.raises(ValueError, match="does not fit"):
        sliding_window_predict(_net(), torch.zeros(8, 8, 8), (8, 8, 8))


def test_whole_image_window_for_small_images():
    from medseg.inference.sliding_window import whole_image_patch

    assert whole_image_patch((36, 50, 35), (32, 32, 32), 4.0, 8) == (40, 56, 40)  # 89600 <= 4 * 32768
    assert whole_image_patch((36, 50, 35), (32, 32, 32), 2.0, 8) == (32, 32, 32)  # too big for 2 patches
    assert whole_image_patch((36, 50, 35), (32, 32, 32), 0.0, 8) == (32, 32, 32)  # disabled
    assert whole_image_patch((20, 20, 20), (32, 32, 32), 4.0, 8) == (32, 32, 32)  # never below the patch
    assert num_windows((36, 50, 35), (32, 32, 32), 0.5) == 12
    assert num_windows((36, 50, 35), (32, 32, 32), 0.5, 4.0, 8) == 1
    shapes = []

    def net(x):
        shapes.append(tuple(x.shape[2:]))
        return ValueToClass(3)(x)

    labels = torch.from_numpy(np.random.default_rng(3).integers(0, 3, size=(36, 50, 35))).float()
    probs, _ = sliding_window_predict(net, labels[None], (32, 32, 32), 0.5, 2, whole_image_factor=4.0,
                                      size_multiple=8, flips=[(), (1,)])
    assert shapes == [(40, 56, 40)]
    assert torch.equal(probs.argmax(0), labels.long())
