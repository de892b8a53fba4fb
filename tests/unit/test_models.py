"""One shared test base applied to every registered architecture through its ``*_tiny`` variant.

Each architecture is checked the same way (segmentation_models_pytorch-style): forward shapes, padding,
backward to every parameter, ``in_channels``/``num_classes`` honoured, determinism, state-dict round trip,
bf16 autocast on CPU, and a clear error for input sizes that are not multiples of ``size_multiple``.
Inputs stay small (2D 64×64-ish, 3D 32³-ish, batch ≤ 2) so that all of them run in seconds.
"""

from __future__ import annotations

import io

import pytest
import torch

from medseg.errors import ConfigError, UsageError
from medseg.models import create_model, forward_padded, list_models, model_spec

TINY = [name for name in list_models() if name.endswith("_tiny")]
FULL = [name for name in list_models() if not name.endswith("_tiny")]


def _sizes(name: str) -> list[tuple[int, ...]]:
    """Valid spatial sizes for a variant: small multiples of its ``size_multiple``."""
    spec = model_spec(name)
    m = spec.size_multiple
    if spec.spatial_dims == 2:
        return [(max(64, m), max(64, m)), (m, 3 * m)]
    return [(32, 32, 32), (m, m, 2 * m)]


def _build(name: str, in_channels: int = 1, num_classes: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_channels, num_classes)


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def test_every_architecture_has_a_tiny_variant():
    assert sorted(FULL) == ["cm_mlp", "unet", "unet3d", "unext", "vnet"]
    assert sorted(TINY) == sorted(f"{name}_tiny" for name in FULL)


@pytest.mark.parametrize("name", TINY)
class TestArchitecture:
    def test_attributes_match_the_spec(self, name):
        spec = model_spec(name)
        model = _build(name)
        assert (model.spatial_dims, model.size_multiple, model.deep_supervision) == (
            spec.spatial_dims, spec.size_multiple, spec.deep_supervision,
        )
        full = model_spec(name.removesuffix("_tiny"))
        assert (full.spatial_dims, full.size_multiple) == (spec.spatial_dims, spec.size_multiple)

    def test_forward_shapes(self, name):
        model = _build(name, 2, 3).eval()
        with torch.no_grad():
            for size in _sizes(name):
                out = model(torch.randn(2, 2, *size))
                assert isinstance(out, torch.Tensor)
                assert out.shape == (2, 3, *size)
                assert torch.isfinite(out).all()

    def test_forward_padded_handles_any_size(self, name):
        model = _build(name, 1, 2).eval()
        size = (50, 37) if model.spatial_dims == 2 else (20, 13, 9)
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            out = forward_padded(model, x)
        assert out.shape == (1, 2, *size)
        with pytest.raises(ConfigError, match=f"multiple of {model.size_multiple}"):
            model(x)

    def test_train_mode_outputs_and_backward_reach_every_parameter(self, name):
        model = _build(name, 1, 2).train()
        size = _sizes(name)[0]
        out = _as_list(model(torch.randn(2, 1, *size)))
        assert len(out) > 1 if model.deep_supervision else len(out) == 1
        assert out[0].shape == (2, 2, *size)  # first output at full resolution
        for o in out[1:]:
            assert o.shape[:2] == (2, 2) and all(s <= t for s, t in zip(o.shape[2:], size))
        sum(o.float().square().mean() for o in out).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"parameters without gradient: {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        assert any(p.grad.abs().sum() > 0 for p in model.parameters())

    @pytest.mark.parametrize("in_channels,num_classes", [(1, 2), (2, 2), (3, 2), (4, 2), (1, 1), (1, 5)])
    def test_channels_and_classes_are_honoured(self, name, in_channels, num_classes):
        model = _build(name, in_channels, num_classes).eval()
        size = _sizes(name)[1]
        with torch.no_grad():
            out = model(torch.randn(1, in_channels, *size))
        assert out.shape == (1, num_classes, *size)
        with pytest.raises(RuntimeError):  # the wrong number of input channels is not silently accepted
            model(torch.randn(1, in_channels + 1, *size))

    def test_eval_mode_is_deterministic_and_state_dict_round_trips(self, name):
        model = _build(name, 1, 2, seed=1).eval()
        x = torch.randn(1, 1, *_sizes(name)[1])
        with torch.no_grad():
            first, second = model(x), model(x)
        assert torch.equal(first, second)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        other = _build(name, 1, 2, seed=2).eval()
        with torch.no_grad():
            assert not torch.allclose(other(x), first)
            other.load_state_dict(torch.load(buffer, weights_only=True))
            assert torch.equal(other(x), first)

    def test_bf16_autocast_on_cpu(self, name):
        model = _build(name, 1, 2).eval()
        size = _sizes(name)[1]
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            reference = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
        assert out.shape == (1, 2, *size)
        assert torch.isfinite(out.float()).all()
        # bf16 has ~3 significant digits: the logits agree with float32 to a loose tolerance.
        assert (out.float() - reference).abs().mean() < 0.05 * reference.abs().mean() + 0.05

    def test_wrong_rank_is_a_clear_error(self, name):
        model = _build(name).eval()
        with pytest.raises(ConfigError, match=f"expects a {model.spatial_dims + 2}-D input"):
            model(torch.randn(1, 1, *([32] * (model.spatial_dims + 1))))


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UsageError) as info:
        create_model("unet4d", 1, 2)
    message = str(info.value)
    assert "unet4d" in message
    assert all(name in message for name in list_models())


def test_convolutions_smaller_than_their_input_run_in_fp32_under_cpu_bf16():
    """oneDNN's bf16 weight gradients are unreliable when the input is smaller than the kernel (layers.py)."""
    from medseg.models.layers import conv, cpu_bf16_unsafe

    layer = conv(3, 4, 4, kernel_size=5)
    small, large = torch.randn(1, 4, 3, 4, 3), torch.randn(1, 4, 6, 8, 6)
    assert not cpu_bf16_unsafe(small, layer.kernel_size)  # no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpu_bf16_unsafe(small, layer.kernel_size) and not cpu_bf16_unsafe(large, layer.kernel_size)
        assert layer(small).dtype == torch.float32 and layer(large).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(small)
    out.square().mean().backward()
    assert torch.isfinite(layer.weight.grad).all()
    with torch.autocast("cpu", dtype=torch.float16):
        assert not cpu_bf16_unsafe(small, layer.kernel_size)


def test_the_memory_format_follows_the_device_and_leaves_results_unchanged():
    """Channels-last on a CPU (oneDNN's faster layout) and for 2D on CUDA; same results as the default layout."""
    from medseg.models.layers import memory_format_for

    assert memory_format_for("cpu", 2) == torch.channels_last
    assert memory_format_for("cpu", 3) == torch.channels_last_3d
    assert memory_format_for("cuda", 2) == torch.channels_last
    assert memory_format_for("cuda", 3) is None and memory_format_for("mps", 2) is None
    for arch, shape in (("unet3d_tiny", (1, 1, 16, 24, 16)), ("unext_tiny", (1, 3, 64, 64))):
        torch.manual_seed(0)
        network = create_model(arch, shape[1], 3).double().eval()
        x = torch.randn(shape, dtype=torch.float64)
        with torch.no_grad():
            expected = network(x)
            network.to(memory_format=memory_format_for("cpu", len(shape) - 2))
            assert torch.allclose(network(x), expected, atol=1e-10), arch
