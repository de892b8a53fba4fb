"""Pure pieces of training: planner, mixed-precision choice, recipes and LR schedules, losses, Dice counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.config import RunConfig, merge
from medseg.errors import ConfigError
from medseg.devices import resolve_device
from medseg.training.device import amp_label, choose_amp_dtype, needs_grad_scaler
from medseg.training.losses import (compute_loss, deep_supervision_weights, dice_ce_loss, edge_bce_iou_loss,
                                    edge_weights)
from medseg.models import count_macs
from medseg.training.planner import CPU_BATCH_VOXELS, CPU_FP32_MACS_PER_VOXEL, CPU_MACS_PER_VOXEL, CPU_MAX_BATCH, plan_patch_and_batch, plan_width
from medseg.training.recipe import family_of, learning_rate, resolve_recipe
from medseg.training.validation import confusion_counts, dice_from_counts, mean_dice

GB = 1024**3


# --- planner -----------------------------------------------------------------------------------


def test_small_cases_get_the_whole_padded_case_and_a_larger_batch():
    small = plan_patch_and_batch((36, 50, 35), (1, 1, 1), 3, 4 * GB, size_multiple=8)
    assert small.patch_size == (40, 56, 40)  # whole case, rounded up to multiples of 8
    assert small.covers_case
    # 4 GB × 0.7 / 2048 bytes per voxel = 1.47 M voxels = 16 patches of 89 600 voxels, capped at 16
    assert small.batch_size == 16
    tighter = plan_patch_and_batch((36, 50, 35), (1, 1, 1), 3, 1 * GB, size_multiple=8)
    assert tighter.patch_size == small.patch_size
    assert tighter.batch_size == int(1 * GB * 0.7 / 2048) // (40 * 56 * 40) == 4


def test_large_cases_shrink_the_coarsest_physical_side_first():
    plan = plan_patch_and_batch((512, 512, 300), (0.8, 0.8, 2.5), 3, 24 * GB, size_multiple=16)
    assert not plan.covers_case
    assert all(s % 16 == 0 for s in plan.patch_size)
    assert math.prod(plan.patch_size) <= 128**3
    x, y, z = plan.patch_size
    assert x == y and z < x  # the thick-slice axis shrank most...
    assert z * 2.5 >= x * 0.8 - 16 * 2.5  # ...until the patch is about isotropic in millimetres
    assert plan.batch_size >= 2
    assert plan.batch_size * math.prod(plan.patch_size) <= plan.budget_voxels


def test_less_memory_never_gives_a_larger_patch():
    sides = [math.prod(plan_patch_and_batch((400, 400, 400), (1, 1, 1), 3, m * GB, size_multiple=16).patch_size)
             for m in (2, 8, 80)]
    assert sides == sorted(sides)
    assert sides[0] < sides[-1]


def test_unknown_memory_uses_the_cpu_budget():
    plan = plan_patch_and_batch((256, 256), (1, 1), 2, None, size_multiple=32)
    assert plan.patch_size == (256, 256) and plan.covers_case
    assert plan.batch_size == CPU_BATCH_VOXELS // (256 * 256) == 8


def test_a_given_patch_only_plans_the_batch():
    plan = plan_patch_and_batch((100, 100, 100), (1, 1, 1), 3, None, size_multiple=8, patch_size=(32, 32, 32))
    assert plan.patch_size == (32, 32, 32)
    assert plan.batch_size == CPU_MAX_BATCH[3] == 2  # on a CPU, 3D batches stay at 2
    assert plan_patch_and_batch((100, 100, 100), (1, 1, 1), 3, 8 * GB, size_multiple=8,
                                patch_size=(32, 32, 32)).batch_size == 16
    with pytest.raises(ValueError):
        plan_patch_and_batch((100, 100), (1, 1, 1), 3, None)


def _unet3d_macs_per_voxel(width: int) -> float:
    return count_macs("unet3d", 1, 3, (40, 56, 40), base_channels=width) / (40 * 56 * 40)


def test_a_gpu_trains_the_published_width_and_a_cpu_a_narrower_one():
    assert plan_width(32, _unet3d_macs_per_voxel, 80 * GB) == 32
    cpu = plan_width(32, _unet3d_macs_per_voxel, None)
    assert cpu == 8  # 32: 0.93 M, 16: 0.23 M, 8: 58 k multiply-adds per voxel
    assert _unet3d_macs_per_voxel(cpu) <= CPU_MACS_PER_VOXEL < _unet3d_macs_per_voxel(2 * cpu)
    fp32 = plan_width(32, _unet3d_macs_per_voxel, None, budget=CPU_FP32_MACS_PER_VOXEL[3])
    assert fp32 == 4  # 15 k multiply-adds per voxel: a CPU without native bf16 trains 3D networks in fp32
    assert plan_width(32, lambda w: 1e12, None) == 4  # never below the narrowest width
    assert plan_width(16, lambda w: 1.0, None) == 16  # already cheap enough: unchanged


# --- devices and mixed precision ---------------------------------------------------------------


@pytest.mark.parametrize(
    "device_type, bf16, mode, expected",
    [
        ("cuda", True, "auto", torch.bfloat16),
        ("cuda", False, "auto", torch.float16),
        ("cpu", True, "auto", torch.bfloat16),
        ("cpu", False, "auto", None),
        ("mps", False, "auto", None),
        ("cpu", False, "bf16", torch.bfloat16),
        ("cuda", True, "fp16", torch.float16),
        ("cuda", True, "off", None),
    ],
)
def test_autocast_dtype_choice(device_type, bf16, mode, expected):
    assert choose_amp_dtype(device_type, bf16, mode) == expected


def test_grad_scaler_only_for_fp16_and_impossible_modes_are_errors():
    assert needs_grad_scaler(torch.float16)
    assert not needs_grad_scaler(torch.bfloat16) and not needs_grad_scaler(None)
    with pytest.raises(ConfigError, match="needs CUDA"):
        choose_amp_dtype("cpu", False, "fp16")
    with pytest.raises(ConfigError, match="bfloat16"):
        choose_amp_dtype("cuda", False, "bf16")


def test_printed_precision_warns_only_for_emulated_cpu_bf16():
    assert amp_label("cpu", None, False) == "off"
    assert amp_label("cpu", torch.bfloat16, True) == "bf16"
    assert amp_label("cuda", torch.bfloat16, True) == "bf16"
    assert amp_label("cuda", torch.float16, False) == "fp16 + gradient scaling"
    assert "emulated" in amp_label("cpu", torch.bfloat16, False)


def test_subnormals_flushed_in_every_pool_thread_and_only_inside_the_block():
    """With the pool started under the flag, a product of subnormals split over 2 threads comes out all zero
    inside ``subnormals_flushed`` (without it, it stays subnormal: the slow path); outside, this thread
    computes in IEEE arithmetic again (scipy's cKDTree crashed under the flag), torch and numpy alike."""
    import subprocess
    import sys

    script = ("import numpy as np, torch; from medseg.devices import start_flushing_pool, subnormals_flushed; "
              "a = np.full(1_000_000, 1e-39, np.float32); torch.set_num_threads(2); ok = start_flushing_pool(); "
              "x = torch.from_numpy(a); bits = lambda t: int(t.view(torch.int32).count_nonzero()); "
              "cm = subnormals_flushed(); cm.__enter__(); inner = subnormals_flushed(); inner.__enter__(); "
              "inner.__exit__(None, None, None); nested = bits(x * 1.0); cm.__exit__(None, None, None); "
              "print(ok, nested, bits(x), bits(x[:10] * 1.0), int(np.count_nonzero((a[:10] * np.float32(1)).view(np.int32))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    if out[0] == "False":  # not x86: nothing to flush with
        assert out[1:] == ["1000000", "1000000", "10", "10"]
    else:  # flushed in both threads, also after a nested block ended; stored values kept; IEEE again after
        assert out[1:] == ["0", "1000000", "10", "10"]


def test_device_auto_and_cpu():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_cuda_device_names_on_a_two_gpu_machine(monkeypatch):
    """The CUDA branch's logic, given a machine with two GPUs: an index, a rank's default, bad indices."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 0)
    for bad in ("cuda:2", "cuda:x", "cuda:"):
        with pytest.raises(ConfigError, match="CUDA devices 0 to 1"):
            resolve_device(bad)


# --- recipes and schedules ---------------------------------------------------------------------


def _resolved(arch: str, num_classes: int = 2, data_dims: int = 3, network_dims: int = 3, **overrides):
    config = merge(RunConfig(), {"data": {"name": "d"}, "model": {"arch": arch}}, overrides)
    return resolve_recipe(config, num_train_cases=10, data_dims=data_dims, network_dims=network_dims,
                          num_classes=num_classes, patch_size=(32, 32, 32), batch_size=2)


def test_the_weight_average_is_a_default_of_3d_u_net_family_networks_only():
    assert _resolved("unet3d").optim.ema_decay == _resolved("vnet").optim.ema_decay == 0.999
    assert _resolved("unet", data_dims=2, network_dims=2).optim.ema_decay == 0.0
    assert _resolved("unext", data_dims=2, network_dims=2).optim.ema_decay == 0.0
    assert _resolved("unet", data_dims=2, network_dims=2, optim={"ema_decay": 0.99}).optim.ema_decay == 0.99
    assert _resolved("unet3d", optim={"ema_decay": 0}).optim.ema_decay == 0.0


def _resolved_big_val():
    config = merge(RunConfig(), {"data": {"name": "d"}, "model": {"arch": "unet3d"}})
    return resolve_recipe(config, num_train_cases=10, data_dims=3, network_dims=3, num_classes=2,
                          patch_size=(32, 32, 32), batch_size=2, val_voxels=40 * 512 * 512 * 100)


def test_family_defaults():
    assert family_of("unet3d_tiny") == family_of("vnet") == "unet"
    sgd = _resolved("unet3d")
    assert (sgd.optim.optimizer, sgd.optim.lr, sgd.optim.momentum, sgd.optim.nesterov) == ("sgd", 1e-2, 0.99, True)
    assert (sgd.optim.weight_decay, sgd.optim.schedule, sgd.optim.grad_clip) == (3e-5, "poly", 12.0)
    assert sgd.loss.name == "dice_ce" and sgd.model.activation == "softmax"
    assert sgd.data.iterations_per_epoch == 250 and sgd.train.val_every == 1  # a small validation set
    assert _resolved_big_val().train.val_every == 5
    adam = _resolved("unext", data_dims=2)
    assert (adam.optim.optimizer, adam.optim.lr, adam.optim.weight_decay) == ("adam", 1e-3, 1e-4)
    assert (adam.optim.schedule, adam.optim.min_lr) == ("cosine", 1e-5)
    assert adam.data.iterations_per_epoch == 5  # one pass over 10 images in batches of 2
    cm = _resolved("cm_mlp")
    assert (cm.optim.optimizer, cm.optim.lr, cm.optim.grad_clip, cm.optim.schedule) == ("adam", 1e-4, 0.5, "step")
    assert cm.optim.step_every == cm.train.epochs // 4
    assert cm.loss.name == "edge_bce_iou" and cm.model.activation == "sigmoid"
    assert _resolved("cm_mlp", num_classes=4).model.activation == "softmax"


def test_explicit_settings_win_over_family_defaults():
    config = _resolved("unet3d", optim={"lr": 0.05, "optimizer": "adamw"}, train={"epochs": 3})
    assert config.optim.lr == 0.05 and config.optim.optimizer == "adamw"
    assert config.optim.momentum == 0.99  # the rest still comes from the family
    assert config.train.epochs == 3


def test_learning_rate_schedules():
    sgd = _resolved("unet3d").optim
    assert learning_rate(0, sgd, 100) == pytest.approx(1e-2)
    assert learning_rate(50, sgd, 100) == pytest.approx(1e-2 * 0.5**0.9)
    cos = _resolved("unext").optim
    assert learning_rate(0, cos, 100) == pytest.approx(1e-3)
    assert learning_rate(50, cos, 100) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert learning_rate(100, cos, 100) == pytest.approx(1e-5)
    step = _resolved("cm_mlp", train={"epochs": 60}).optim
    assert [learning_rate(e, step, 60) for e in (0, 14, 15, 30, 59)] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-6, 1e-7])


# --- losses ------------------------------------------------------------------------------------


def _labels(shape=(2, 16, 16), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, shape, generator=g)


def test_dice_ce_is_low_for_confident_correct_logits_and_high_for_uniform():
    target = _labels()
    perfect = F.one_hot(target, 3).movedim(-1, 1).float() * 50
    assert dice_ce_loss(perfect, target).item() < 1e-3
    uniform = torch.zeros(2, 3, 16, 16)
    assert dice_ce_loss(uniform, target).item() > math.log(3)  # CE alone is log K
    binary = (target > 0).long()
    sig = (binary.unsqueeze(1).float() * 2 - 1) * 50
    assert dice_ce_loss(sig, binary, activation="sigmoid").item() < 1e-3


def test_edge_weights_are_one_far_from_edges_and_larger_near_them():
    mask = torch.zeros(1, 1, 96, 96)
    mask[..., 30:70, 30:70] = 1
    w = edge_weights(mask)
    assert w[0, 0, 50, 50] == pytest.approx(1.0)  # deep inside (>15 px from the edge)
    assert w[0, 0, 5, 5] == pytest.approx(1.0)  # far outside
    assert w[0, 0, 30, 50] > 2.0 and w.max() <= 6.0  # on the edge: 1 + 5·|0.5 − 1|


def _structure_loss_reference(pred, mask):
    """PraNet / CM-MLP's released ``structure_loss``, copied formula for formula."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def test_edge_bce_iou_matches_the_released_loss_for_binary_maps():
    target = torch.zeros(2, 1, 48, 48, dtype=torch.long)
    target[:, :, 10:30, 12:40] = 1
    logits = torch.randn(2, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    ours = edge_bce_iou_loss(logits, target, activation="sigmoid")
    assert ours.item() == pytest.approx(_structure_loss_reference(logits, target.float()).item(), rel=1e-6)


def test_edge_bce_iou_softmax_form_prefers_the_right_answer():
    target = _labels((2, 32, 32))
    good = F.one_hot(target, 3).movedim(-1, 1).float() * 8
    bad = torch.roll(good, 1, dims=1)
    assert edge_bce_iou_loss(good, target, "softmax") < edge_bce_iou_loss(bad, target, "softmax")
    assert torch.isfinite(edge_bce_iou_loss(good * 100, target, "softmax"))


def test_deep_supervision_weights_halve_and_sum_to_one():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(4, "equal") == pytest.approx([0.25] * 4)


def test_deep_supervision_resizes_targets_by_nearest_neighbour():
    target = _labels((2, 1, 16, 16, 8))
    outputs = [torch.randn(2, 3, 16, 16, 8), torch.randn(2, 3, 8, 8, 4)]
    small_target = target[:, :, ::2, ::2, ::2]  # nearest neighbour at scale 1/2 picks even voxels
    expected = 2 / 3 * dice_ce_loss(outputs[0], target) + 1 / 3 * dice_ce_loss(outputs[1], small_target)
    assert compute_loss(outputs, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert compute_loss(outputs, target, deep_supervision=None).item() == pytest.approx(
        dice_ce_loss(outputs[0], target).item())


# --- validation Dice ---------------------------------------------------------------------------


def test_dice_counts_by_hand():
    ref = torch.tensor([[0, 1, 1, 2], [0, 1, 0, 0]])
    pred = torch.tensor([[0, 1, 0, 2], [1, 1, 0, 0]])
    counts = confusion_counts(pred, ref, num_classes=4)
    assert counts.tolist() == [[2, 1, 0], [1, 0, 0], [1, 0, 0]]  # TP, FP, FN × classes 1..3
    dice = dice_from_counts(counts)
    assert dice[0] == pytest.approx(4 / 6) and dice[1] == 1.0 and math.isnan(dice[2])
    assert mean_dice(dice) == pytest.approx((4 / 6 + 1) / 2)  # an absent class is left out


def test_the_weight_average_follows_its_decay_and_copies_integer_buffers():
    from medseg.training.ema import WeightAverage, ema_decay

    assert ema_decay(0.999, 1) == pytest.approx(2 / 11) and ema_decay(0.999, 10**6) == 0.999
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    average = WeightAverage(net, 0.5)
    assert all(not p.requires_grad for p in average.module.parameters()) and not average.module.training
    start = net[0].weight.detach().clone()
    expected = start.clone()
    for step in range(1, 4):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net(torch.randn(2, 1, 5, 5, 5))  # moves the batch-norm statistics
        average.update()
        d = ema_decay(0.5, step)
        expected = d * expected + (1 - d) * net[0].weight.detach()
    assert average.updates == 3
    assert torch.allclose(average.module[0].weight, expected)
    assert not torch.allclose(average.module[0].weight, net[0].weight)  # an average, not a copy
    assert int(average.module[1].num_batches_tracked) == 3  # copied
    assert not torch.equal(average.module[1].running_mean, net[1].running_mean)  # averaged
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(net, 1.0)
