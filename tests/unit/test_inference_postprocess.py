"""Post-processing (largest component, uncertainty) and the memory decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.inference.memory import accumulate_on_device, accumulation_bytes, accumulation_device
from medseg.inference.postprocess import keep_largest_component, member_variance, normalized_entropy, uncertainty_map


def test_keep_largest_component_per_class():
    labels = np.zeros((12, 10, 6), np.uint8)
    labels[1:5, 1:5, 1:4] = 1  # 48 voxels
    labels[8:10, 8:10, 4:5] = 1  # 4 voxels: removed
    labels[6:8, 1:3, 1:3] = 2  # 8 voxels
    labels[10, 1, 1] = 2  # removed
    labels[0, 9, 5] = 3  # a single component: kept
    out = keep_largest_component(labels)
    assert out.dtype == labels.dtype
    assert (out == 1).sum() == 48 and (out == 2).sum() == 8 and (out == 3).sum() == 1
    assert out[9, 9, 4] == 0 and out[10, 1, 1] == 0
    assert (labels == keep_largest_component(labels, classes=[])).all()
    only_two = keep_largest_component(labels, classes=[2])
    assert (only_two == 1).sum() == 52 and (only_two == 2).sum() == 8
    assert (keep_largest_component(np.zeros((3, 3, 3), np.uint8)) == 0).all()


def test_uncertainty_maps():
    probs = torch.tensor([[1.0, 0.5, 0.25], [0.0, 0.5, 0.25], [0.0, 0.0, 0.5]])  # (K=3, 3 voxels)
    entropy = normalized_entropy(probs)
    assert entropy[0] == pytest.approx(0, abs=1e-6)
    assert entropy[1] == pytest.approx(math.log(2) / math.log(3), rel=1e-5)
    assert entropy[2] == pytest.approx(1.5 * math.log(2) / math.log(3), rel=1e-5)
    # Two members: [1, 0] and [0, 1] at one voxel, identical members at the other.
    members = torch.tensor([[[1.0, 0.3], [0.0, 0.7]], [[0.0, 0.3], [1.0, 0.7]]])  # (M, K, voxels)
    variance = member_variance(members.mean(0), (members**2).mean(0))
    torch.testing.assert_close(variance, torch.tensor([0.5, 0.0]))
    assert torch.equal(uncertainty_map("entropy", probs), entropy)
    with pytest.raises(ValueError, match="second moment"):
        uncertainty_map("variance", probs)
    with pytest.raises(ValueError, match="unknown uncertainty"):
        uncertainty_map("mutual", probs)


def test_memory_decision_is_a_pure_function_of_sizes():
    small = accumulation_bytes(4, (64, 64, 32), 1)
    assert small == 4 * 64 * 64 * 32 * (1 + 4 + 1)
    big = accumulation_bytes(14, (512, 512, 600), 1, scales=(0.75, 1.0, 1.25), second_moment=True)
    assert big > 30 * 2**30  # several tens of GiB of buffers
    assert accumulate_on_device(small, 8 * 2**30)
    assert not accumulate_on_device(big, 8 * 2**30)
    assert accumulate_on_device(big, None)  # CPU: nowhere else to go
    assert not accumulate_on_device(100, 150, fraction=0.6) and accumulate_on_device(90, 150, fraction=0.6)
    assert accumulation_device("cpu", big) == torch.device("cpu")
