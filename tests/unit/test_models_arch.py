"""Architecture-specific checks: sizes against the papers, building blocks computed by hand, registry, padding.

Full-size models are built on the meta device (no memory, no forward on real data) for parameter counts,
and their multiply-accumulates are counted there with ``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medseg.errors import CheckpointError, UsageError
from medseg.models import create_model, forward_padded, list_models, model_spec, pad_to_multiple


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_params_and_macs(name: str, in_channels: int, num_classes: int, size: tuple[int, ...], **options):
    """Parameters and multiply-accumulates of one forward pass, computed on the meta device.

    ``FlopCounterMode`` counts FLOPs = 2 × MACs for convolutions and matrix products; papers' "GFLOPs"
    (ptflops/thop) are MACs, so we divide by 2.
    """
    with torch.device("meta"):
        model = create_model(name, in_channels, num_classes, **options).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, in_channels, *size))
    return _params(model), counter.get_total_flops() / 2


# ---------------------------------------------------------------- sizes against the papers


def test_unext_matches_the_paper_size_and_macs():
    """UNeXt at 256×256, 3 channels in, 1 out: 1.47 M parameters, 0.57 G MACs (the paper's "GFLOPs")."""
    params, macs = _meta_params_and_macs("unext", 3, 1, (256, 256))
    assert params == pytest.approx(1.47e6, rel=0.02)
    assert macs == pytest.approx(0.57e9, rel=0.10)


def test_unext_macs_by_forward_hooks_agree_on_cpu():
    """An independent count: hooks on every Conv/Linear of a real CPU forward (ptflops/thop convention)."""
    torch.manual_seed(0)
    model = create_model("unext", 3, 1).eval()
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs.append(output.numel() * per_output)
        else:
            macs.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.randn(1, 3, 256, 256))
    for h in handles:
        h.remove()
    assert sum(macs) == pytest.approx(0.57e9, rel=0.10)


def test_unet_matches_the_unext_papers_table_parameters():
    """U-Net, 3 in / 1 out: 31.13 M parameters in the UNeXt paper's table (31.04 M here, within 1 %)."""
    params, _ = _meta_params_and_macs("unet", 3, 1, (64, 64))
    assert params == pytest.approx(31.13e6, rel=0.01)


def test_unet3d_matches_the_3d_unet_paper():
    """Çiçek et al. report 19,069,955 parameters (3 in-channels-free levels + BN); widths 32,64 → 256,512."""
    with torch.device("meta"):
        model = create_model("unet3d", 1, 3, deep_supervision=False)
    assert _params(model) == pytest.approx(19_069_955, rel=0.001)
    widths = [[m.out_channels for m in level.modules() if isinstance(m, nn.Conv3d)] for level in model.encoder]
    assert widths == [[32, 64], [64, 128], [128, 256], [256, 512]]
    assert [up.out_channels for up in model.ups] == [512, 256, 128]  # up-convolutions keep the width


def test_unet_widths_follow_the_paper():
    with torch.device("meta"):
        model = create_model("unet", 1, 2)
    widths = [[m.out_channels for m in level.modules() if isinstance(m, nn.Conv2d)] for level in model.encoder]
    assert widths == [[64, 64], [128, 128], [256, 256], [512, 512], [1024, 1024]]
    assert [up.out_channels for up in model.ups] == [512, 256, 128, 64]  # up-convolutions halve the width


def test_vnet_structure_follows_the_paper():
    with torch.device("meta"):
        model = create_model("vnet", 1, 2)
    convs5 = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (5, 5, 5)]
    assert len(convs5) == (1 + 2 + 3 + 3 + 3) + (3 + 3 + 2 + 1)
    downs = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.stride == (2, 2, 2)]
    assert [(d.kernel_size, d.out_channels) for d in downs] == [((2, 2, 2), w) for w in (32, 64, 128, 256)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [u.out_channels for u in ups] == [128, 64, 32, 16]
    assert not any(isinstance(m, (nn.MaxPool3d, nn.AvgPool3d)) for m in model.modules())
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) > 0
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_vnet_first_stage_residual_replicates_the_input():
    torch.manual_seed(0)
    model = create_model("vnet_tiny", 2, 2).eval()
    stage = model.input_stage
    assert stage.repeats == 2 and stage.project is None  # 4 channels = 2 inputs × 2
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        expected = stage.act(stage.lift(x) + torch.cat([x[:, :1], x[:, :1], x[:, 1:], x[:, 1:]], dim=1))
        assert torch.allclose(stage(x), expected)
    assert create_model("vnet_tiny", 3, 2).input_stage.project is not None  # 3 does not divide 4


def test_cm_mlp_encoder_is_res2net_101_v1b():
    """Res2Net-101 v1b 26w×4s without its classifier: about 43.2 M parameters; Res2Net-50: about 23.7 M."""
    with torch.device("meta"):
        model = create_model("cm_mlp", 3, 1)
        model50 = create_model("cm_mlp", 3, 1, encoder_depth=50)
    assert [len(layer) for layer in (model.encoder.layer1, model.encoder.layer2, model.encoder.layer3, model.encoder.layer4)] == [3, 4, 23, 3]
    assert _params(model.encoder) == pytest.approx(43.18e6, rel=0.01)
    assert _params(model50.encoder) == pytest.approx(23.67e6, rel=0.01)
    assert model.encoder.layer1[0].width == 26 and model.encoder.layer1[0].scale == 4


@pytest.mark.parametrize("name", [n for n in list_models() if not n.endswith("_tiny")])
def test_full_models_build_on_meta_with_any_channels(name):
    with torch.device("meta"):
        model = create_model(name, 4, 5)
    assert _params(model) > 1e6
    assert model.spatial_dims == model_spec(name).spatial_dims


# ---------------------------------------------------------------- UNeXt blocks


def _released_shift(x: torch.Tensor, dim: int, groups: int = 5) -> torch.Tensor:
    """The released UNeXt shift on (B, C, H, W): pad, chunk, torch.roll, narrow."""
    _, _, h, w = x.shape
    pad = groups // 2
    chunks = torch.chunk(F.pad(x, (pad, pad, pad, pad)), groups, 1)
    shifted = torch.cat([torch.roll(c, s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], 1)
    return shifted.narrow(2, pad, h).narrow(3, pad, w)


@pytest.mark.parametrize("channels", [160, 256, 128, 7])
def test_unext_shift_equals_the_released_code(channels):
    from medseg.models.unext import shift_tokens

    x = torch.randn(2, channels, 8, 6)
    for dim in (1, 2):  # H, W in channels-last
        ours = shift_tokens(x.permute(0, 2, 3, 1), dim).permute(0, 3, 1, 2)
        assert torch.equal(ours, _released_shift(x, dim + 1))


def test_unext_shift_is_zero_filled_by_hand():
    from medseg.models.unext import shift_tokens

    x = torch.arange(1, 6, dtype=torch.float32).reshape(1, 5, 1, 1).expand(1, 5, 5, 5).permute(0, 2, 3, 1)  # (1,5,5,5)
    out = shift_tokens(x.contiguous(), 1)  # along H; group k shifted by k - 2
    assert out[0, :, 0, 2].tolist() == [3, 3, 3, 3, 3]  # group 2: no shift
    assert out[0, :, 0, 3].tolist() == [0, 4, 4, 4, 4]  # group 3: down by 1, zero at the top
    assert out[0, :, 0, 0].tolist() == [1, 1, 1, 0, 0]  # group 0: up by 2, zeros at the bottom


def test_unext_skips_are_added_and_in_channels_honoured():
    model = create_model("unext", 1, 1)
    assert model.encoder[0][0].in_channels == 1
    assert [s[0].out_channels for s in model.decoder] == [160, 128, 32, 16, 16]


# ---------------------------------------------------------------- CM-MLP blocks


def test_grid_and_block_mlps_mix_the_right_pixels():
    from medseg.models.cm_mlp import SpatialMLP

    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4, 1)
    grid = SpatialMLP(2, "grid")  # 2×2 grid of 2×2 cells; swap cell 0 (top-left) and cell 3 (bottom-right)
    block = SpatialMLP(2, "block")  # 2×2 blocks; swap pixel 0 and pixel 3 inside every block
    swap = torch.eye(4)[[3, 1, 2, 0]]
    with torch.no_grad():
        grid.fc.weight.copy_(swap)
        block.fc.weight.copy_(swap)
        g, b = grid(x)[0, :, :, 0], block(x)[0, :, :, 0]
    assert g[0, 0] == x[0, 2, 2, 0] and g[3, 3] == x[0, 1, 1, 0] and g[0, 2] == x[0, 0, 2, 0]
    assert b[0, 0] == x[0, 1, 1, 0] and b[1, 1] == x[0, 0, 0, 0] and b[2, 2] == x[0, 3, 3, 0] and b[0, 1] == x[0, 0, 1, 0]


@pytest.mark.parametrize("mode", ["grid", "block"])
def test_spatial_mlps_work_at_any_size_and_start_as_identity(mode):
    from medseg.models.cm_mlp import SpatialMLP

    x = torch.randn(2, 3, 5, 4)  # sides not multiples of 8: padded and cropped back
    mlp = SpatialMLP(8, mode)
    assert torch.allclose(mlp(x), x)
    with torch.no_grad():
        mlp.fc.weight.normal_()
    assert mlp(x).shape == x.shape


def test_acre_foreground_is_sigmoid_or_one_minus_background():
    from medseg.models.cm_mlp import ACRE

    one = torch.randn(2, 1, 4, 4)
    assert torch.allclose(ACRE.foreground(one), torch.sigmoid(one))
    two = torch.randn(2, 2, 4, 4)
    assert torch.allclose(ACRE.foreground(two), torch.sigmoid(two[:, 1:] - two[:, :1]), atol=1e-6)


def test_cm_mlp_deep_supervision_maps():
    torch.manual_seed(0)
    model = create_model("cm_mlp_tiny", 3, 2).train()
    out = model(torch.randn(2, 3, 64, 96))
    assert len(out) == 4 and all(o.shape == (2, 2, 64, 96) for o in out)  # [M3, M2, M1, M0]
    assert isinstance(create_model("cm_mlp_tiny", 3, 2, deep_supervision=False).train()(torch.randn(2, 3, 32, 32)), torch.Tensor)


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_cm_mlp_loads_local_encoder_weights(tmp_path):
    torch.manual_seed(0)
    source = create_model("cm_mlp_tiny", 3, 1)
    state = {f"module.{k}": v for k, v in source.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 256)  # the classifier is ignored
    path = _save({"state_dict": state}, tmp_path / "res2net.pth")
    torch.manual_seed(1)
    model = create_model("cm_mlp_tiny", 3, 1, encoder_weights=str(path))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    # A 3-channel first conv is adapted to 1 channel by summing (timm's rule).
    gray = create_model("cm_mlp_tiny", 1, 1, encoder_weights=path)
    expected = source.encoder.conv1[0].weight.sum(dim=1, keepdim=True)
    assert torch.allclose(gray.encoder.conv1[0].weight, expected)


def test_cm_mlp_encoder_weights_errors(tmp_path):
    source = create_model("cm_mlp_tiny", 3, 1).encoder.state_dict()
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("cm_mlp_tiny", 3, 1, encoder_weights=tmp_path / "absent.pth")
    partial = _save({k: v for k, v in source.items() if not k.startswith("layer4")}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial\.pth: encoder weights do not fit this encoder: \d+ missing"):
        create_model("cm_mlp_tiny", 3, 1, encoder_weights=partial)
    unrelated = _save({"other.weight": torch.zeros(3)}, tmp_path / "unrelated.pth")
    with pytest.raises(CheckpointError, match="no encoder weights found"):
        create_model("cm_mlp_tiny", 3, 1, encoder_weights=unrelated)
    extra = _save({**source, "head.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.warns(UserWarning, match="1 unexpected encoder weights ignored"):
        create_model("cm_mlp_tiny", 3, 1, encoder_weights=extra)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"x": warnings.WarningMessage}, unsafe)  # needs pickle code execution
    with pytest.raises(CheckpointError, match="weights_only=True"):
        create_model("cm_mlp_tiny", 3, 1, encoder_weights=unsafe)


# ---------------------------------------------------------------- registry and padding


def test_registry_errors_are_usage_errors():
    with pytest.raises(UsageError, match="unknown option.*colour.*valid options: .*base_channels"):
        create_model("unet", 1, 2, colour="red")
    with pytest.raises(UsageError, match="spatial_dims"):
        create_model("unet", 1, 2, spatial_dims=3)  # fixed by the variant: use unet3d
    with pytest.raises(UsageError, match="in_channels must be a positive integer"):
        create_model("unet", 0, 2)
    with pytest.raises(UsageError, match="choose one of: cm_mlp, cm_mlp_tiny, unet"):
        model_spec("nnunet")


def test_planner_options_change_depth_and_widths():
    model = create_model("unet3d_tiny", 1, 2, depth=2, base_channels=2, max_channels=6)
    assert model.size_multiple == 4
    assert [len(h.weight) for h in model.heads] == [2, 2]
    out = model.train()(torch.randn(2, 1, 8, 8, 4))
    assert [o.shape[2:] for o in out] == [(8, 8, 4), (4, 4, 2)]
    assert max(m.out_channels for m in model.modules() if isinstance(m, nn.Conv3d)) == 6


def test_pad_to_multiple_and_crop_back():
    x = torch.randn(1, 2, 30, 17)
    padded, crop = pad_to_multiple(x, 16)
    assert padded.shape == (1, 2, 32, 32)
    assert torch.equal(padded[(..., *crop)], x)
    assert padded[0, 0, 0].abs().sum() == 0  # one row of zeros before (30 → 32: 1 before, 1 after)
    same, crop = pad_to_multiple(x, 1)
    assert same is x and crop == (slice(0, 30), slice(0, 17))


def test_forward_padded_crops_deep_supervision_outputs():
    torch.manual_seed(0)
    model = create_model("unet3d_tiny", 1, 2).train()
    out = forward_padded(model, torch.randn(2, 1, 12, 16, 9))
    assert [tuple(o.shape[2:]) for o in out] == [(12, 16, 9), (6, 8, 5), (3, 4, 3)]
