"""Shared building blocks: small factories by ``spatial_dims`` (2 or 3) and the model base class.

Every architecture builds its convolutions, normalizations, activations, pooling and up-sampling
through these factories so that one class serves 2D and 3D (MONAI-style), and so that options such
as ``norm="instance"`` mean the same thing everywhere.

Shapes: ``(B, C, *spatial)`` with ``len(spatial) == spatial_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError

NORMS = ("batch", "instance", "group", "none")
ACTS = ("relu", "leaky_relu", "prelu", "gelu", "none")


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims


def cpu_bf16_unsafe(x: torch.Tensor, kernel_size: Sequence[int]) -> bool:
    """A convolution oneDNN gets wrong in bf16 on a CPU: an input smaller than the kernel along some axis.

    Measured (torch 2.13, AMD EPYC with AVX512-BF16): a 5×5×5 ``Conv3d`` on a 3×4×3 input under CPU bf16
    autocast returned NaN or infinite weight gradients in about 1 backward pass in 20 (none at 6×8×6, none
    in fp32); V-Net's deepest stage on Hippocampus patches is such a case, and it lost a quarter of its
    training steps to it.
    """
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and any(size < k for size, k in zip(x.shape[2:], kernel_size)))


def memory_format_for(device_type: str, spatial_dims: int):
    """The tensor layout convolutions run fastest in: channels-last on a CPU, and for 2D on CUDA; else None.

    Measured on a 2-core AMD EPYC (oneDNN, torch 2.13; ``benchmarks/channels_last_cpu.py``), channels-last
    against the default layout: bf16 training steps 1.19× faster for ``unet3d``, 1.44× for ``unext``, 1.35×
    for ``unet``; fp32 inference 1.44× for ``unet3d``; V-Net (5×5×5 kernels) unchanged (0.99-1.01×). On
    CUDA, cuDNN's NHWC kernels for 2D; 3D stays in the default layout there (not measured). Results equal
    the default layout's up to rounding. Convolutions follow the layout of their weights, so the predictor
    converts only the network (``module.to(memory_format=...)``); training also lays out its batches so.
    """
    if device_type == "cpu":
        return torch.channels_last if _check_dims(spatial_dims) == 2 else torch.channels_last_3d
    if device_type == "cuda" and _check_dims(spatial_dims) == 2:
        return torch.channels_last
    return None


class _SafeConv:
    """Runs the convolutions of ``cpu_bf16_unsafe`` in fp32 (tiny inputs: the cost is negligible)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_bf16_unsafe(x, self.kernel_size):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class Conv2d(_SafeConv, nn.Conv2d):
    pass


class Conv3d(_SafeConv, nn.Conv3d):
    pass


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """``Conv2d``/``Conv3d``; ``padding`` defaults to ``kernel_size // 2`` (size-preserving at stride 1)."""
    cls = (Conv2d, Conv3d)[_check_dims(spatial_dims) - 2]
    padding = kernel_size // 2 if padding is None else padding
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=bias)


def conv_transpose(spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2, bias: bool = True) -> nn.Module:
    """Up-convolution: ``ConvTranspose{2,3}d`` with kernel = stride = ``scale`` (sides × scale)."""
    cls = (nn.ConvTranspose2d, nn.ConvTranspose3d)[_check_dims(spatial_dims) - 2]
    return cls(in_channels, out_channels, scale, stride=scale, bias=bias)


def norm(name: str | None, spatial_dims: int, channels: int, groups: int = 8) -> nn.Module:
    """Normalization by name: ``batch``, ``instance`` (affine), ``group`` (``groups`` groups) or ``none``."""
    name = (name or "none").lower()
    dims = _check_dims(spatial_dims)
    if name == "batch":
        return (nn.BatchNorm2d, nn.BatchNorm3d)[dims - 2](channels)
    if name == "instance":
        return (nn.InstanceNorm2d, nn.InstanceNorm3d)[dims - 2](channels, affine=True)
    if name == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    if name == "none":
        return nn.Identity()
    raise ConfigError(f"unknown normalization {name!r}; choose one of {', '.join(NORMS)}")


def act(name: str | None, channels: int | None = None) -> nn.Module:
    """Activation by name: ``relu``, ``leaky_relu``, ``prelu`` (one slope per channel), ``gelu`` or ``none``."""
    name = (name or "none").lower()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if name == "prelu":
        return nn.PReLU(channels or 1)
    if name == "gelu":
        return nn.GELU()
    if name == "none":
        return nn.Identity()
    raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTS)}")


def max_pool(spatial_dims: int, kernel_size: int = 2) -> nn.Module:
    """``MaxPool{2,3}d`` with stride = kernel (sides ÷ kernel)."""
    return (nn.MaxPool2d, nn.MaxPool3d)[_check_dims(spatial_dims) - 2](kernel_size)


class ConvNormAct(nn.Sequential):
    """conv (k×k, ``padding`` default k // 2: size-preserving at stride 1) → norm → act.

    The conv has no bias when a norm follows.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm_name: str | None = "batch",
        act_name: str | None = "relu",
        groups: int = 1,
        padding: int | None = None,
    ):
        has_norm = (norm_name or "none").lower() != "none"
        super().__init__(
            conv(spatial_dims, in_channels, out_channels, kernel_size, stride, padding, groups, bias=not has_norm),
            norm(norm_name, spatial_dims, out_channels),
            act(act_name, out_channels),
        )


class SegmentationModel(nn.Module):
    """Base class of every medseg network.

    Attributes every model sets: ``spatial_dims`` (2 or 3), ``size_multiple`` (each input side must be a
    multiple of it; ``medseg.models.forward_padded`` pads and crops back), ``deep_supervision`` (in
    ``train()`` mode ``forward`` returns a list of logits, the first at full resolution).
    """

    spatial_dims: int = 2
    size_multiple: int = 1
    deep_supervision: bool = False

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless ``x`` is ``(B, C, *spatial)`` with sides multiple of ``size_multiple``."""
        expected = self.spatial_dims + 2
        if x.dim() != expected:
            raise ConfigError(
                f"{type(self).__name__} expects a {expected}-D input (B, C, {self.spatial_dims} spatial sides), "
                f"got shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(side % self.size_multiple for side in spatial):
            raise ConfigError(
                f"{type(self).__name__} needs every spatial side to be a multiple of {self.size_multiple}, "
                f"got {spatial} (pad the input, e.g. with medseg.models.forward_padded)"
            )

    def outputs(self, logits: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Return ``logits`` (finest first) in train mode with deep supervision, else only the finest."""
        if self.deep_supervision and self.training:
            return list(logits)
        return logits[0]


def init_weights(module: nn.Module, nonlinearity: str = "relu") -> None:
    """Kaiming-normal (fan-out) convolutions, truncated-normal linears, unit norms, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
