"""Multi-scale × flip test-time augmentation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference_helpers import ValueToClass  # noqa: E402

from medseg.errors import UsageError  # noqa: E402
from medseg.inference.sliding_window import sliding_window_predict  # noqa: E402
from medseg.inference.tta import (  # noqa: E402
    TTATransform,
    flip_combinations,
    parse_scales,
    resample,
    tta_members,
    tta_predict,
    tta_windows,
)


def _net(seed=0):
    torch.manual_seed(seed)
    layers = [torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 3, 3, padding=1)]
    return torch.nn.Sequential(*layers).eval()


def _smooth(shape, seed=0):
    """A smooth field (one slow cosine per axis, random phases) ``(1, 1, *shape)``."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    phases = torch.rand(len(shape), generator=g) * 6.28
    return sum(torch.cos(2 * torch.pi * grid / (2 * s) + p) for grid, s, p in zip(grids, shape, phases))[None, None]


def test_flip_combinations():
    assert flip_combinations("all", 3) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert flip_combinations("inplane", 3) == [(), (0,), (1,), (0, 1)]
    assert flip_combinations("all", 2) == [(), (0,), (1,), (0, 1)]
    assert flip_combinations("none", 3) == [()]
    assert len(tta_members((0.75, 1, 1.25), "all", 3)) == 24
    with pytest.raises(UsageError, match="all, inplane, none"):
        flip_combinations("diagonal", 3)


def test_parse_scales():
    assert parse_scales("0.75, 1,1.25") == (0.75, 1.0, 1.25)
    assert parse_scales([1]) == (1.0,)
    for bad in ("", "a,b", "0", "-1,1", "9"):
        with pytest.raises(UsageError):
            parse_scales(bad)


@pytest.mark.parametrize("transform", [TTATransform(1.0, (0,)), TTATransform(1.0, (0, 1, 2)), TTATransform(1.0, ())])
def test_flip_undone_on_its_own_output_is_exact(transform):
    x = torch.randn(2, 3, 7, 6, 5)
    assert torch.equal(transform.invert(transform.apply(x), x.shape[2:]), x)


@pytest.mark.parametrize("transform", [TTATransform(0.75, (1,)), TTATransform(1.25, (0, 2)), TTATransform(2.0, ())])
def test_scale_undone_on_its_own_output_gives_back_a_smooth_input(transform):
    x = _smooth((24, 20, 16))
    y = transform.apply(x)
    assert y.shape[2:] == tuple(round(s * transform.scale) for s in (24, 20, 16))
    back = transform.invert(y, x.shape[2:])
    assert back.shape == x.shape
    interior = (..., slice(2, -2), slice(2, -2), slice(2, -2))
    assert float((back - x)[interior].abs().max()) < 0.02 * float(x.abs().max())


def test_one_scale_no_flips_equals_plain_inference():
    net = _net()
    x = torch.randn(1, 1, 21, 18, 13)
    plain, _ = sliding_window_predict(net, x, (12, 12, 8), 0.5, 2)
    tta, _ = tta_predict(net, x, (12, 12, 8), scales=(1.0,), flip_mode="none", batch_size=2)
    assert torch.equal(plain, tta)


def test_multiscale_flips_equal_the_mean_of_members():
    net = _net(1)
    x = _smooth((20, 16, 12), seed=2)
    scales = (0.75, 1.0, 1.25)
    got, sq = tta_predict(net, x, (8, 8, 8), scales=scales, flip_mode="inplane", batch_size=3, second_moment=True)
    expected = []
    for scale in scales:
        scaled = TTATransform(scale).apply(x)
        members = []
        for f in flip_combinations("inplane", 3):
            t = TTATransform(1.0, f)
            member_net = (lambda t: lambda z: t.invert(net(t.apply(z)), z.shape[2:]))(t)
            members.append(sliding_window_predict(member_net, scaled, (8, 8, 8), 0.5, 4)[0])
        expected.append(resample(torch.stack(members).mean(0), x.shape[2:]))
    torch.testing.assert_close(got, torch.stack(expected).mean(0), atol=1e-5, rtol=1e-4)
    assert got.shape == (1, 3, 20, 16, 12)
    assert float((sq - got**2).min()) > -1e-5  # a variance


def test_tta_keeps_an_exact_prediction_exact_and_counts_windows():
    labels = torch.zeros(1, 1, 24, 24, 12)
    labels[..., 4:18, 6:20, 3:9] = 1
    labels[..., 8:12, 8:12, 4:7] = 2
    done = []
    probs, _ = tta_predict(ValueToClass(3), labels, (16, 16, 8), scales=(1.0,), flip_mode="all", batch_size=4,
                           progress=done.append)
    assert torch.equal(probs.argmax(1), labels[:, 0].long())
    assert sum(done) == tta_windows((24, 24, 12), (16, 16, 8), 0.5, (1.0,))
