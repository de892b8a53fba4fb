"""U-Net (2D) and 3D U-Net from one implementation through ``spatial_dims``.

Papers:
- O. Ronneberger, P. Fischer, T. Brox. "U-Net: Convolutional Networks for Biomedical Image
  Segmentation". MICCAI 2015. 4 down / 4 up levels, two 3×3 convs + ReLU per level, 64 → 1024
  features (doubling *between* levels), 2×2 max pooling, 2×2 up-convolution halving the features,
  skips by concatenation, final 1×1 conv.
- Ö. Çiçek, A. Abdulkadir, S. Lienkamp, T. Brox, O. Ronneberger. "3D U-Net: Learning Dense Volumetric
  Segmentation from Sparse Annotation". MICCAI 2016. 3 down / 3 up levels, two 3×3×3 convs + BN + ReLU,
  features doubling *inside* each encoder level (32,64 → 64,128 → 128,256 → 256,512), 2×2×2 max pooling,
  2×2×2 up-convolutions that keep the features (512 → 512), concatenated skips, final 1×1×1 conv.

What differs from the papers (the common modern form):
- Padded convolutions: the output has the input's size (the papers use valid convolutions and crop
  the skips). Every side must therefore be a multiple of ``2 ** depth`` (16 for ``unet``, 8 for ``unet3d``).
- A normalization layer after every conv: batch norm by default (as in 3D U-Net), ``norm="instance"``
  or ``"group"`` for small batches; convs followed by a norm carry no bias.
- Options for the planner: ``base_channels``, ``depth`` and ``max_channels`` (a cap on the widths, as
  in nnU-Net) keep the block structure.
- Optional deep supervision (nnU-Net style): a 1×1 head on every decoder level; in ``train()`` mode the
  model returns ``depth`` logits, full resolution first. Off by default for ``unet`` (not in the paper,
  and 2D training does not need it), on by default for ``unet3d`` (the 3D trainer uses it). In
  ``eval()`` mode only the full-resolution logits are returned.
- No dropout at the end of the contracting path (the 2015 paper's "drop-out layers at the end of the
  contracting path" is a training trick that normalization makes unnecessary).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medseg.models.layers import ConvNormAct, SegmentationModel, conv, conv_transpose, init_weights, max_pool
from medseg.models.registry import build, register_model


class DoubleConv(nn.Sequential):
    """Two ConvNormAct 3×3(×3): ``in_channels → mid_channels → out_channels``; sides unchanged."""

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int, norm: str, act: str):
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, mid_channels, 3, norm_name=norm, act_name=act),
            ConvNormAct(spatial_dims, mid_channels, out_channels, 3, norm_name=norm, act_name=act),
        )


class UNet(SegmentationModel):
    """U-Net for 2D (Ronneberger 2015) or 3D (Çiçek 2016) input.

    Input ``(B, in_channels, *spatial)`` with every side a multiple of ``2 ** depth``; output logits
    ``(B, num_classes, *spatial)`` (with deep supervision in train mode: a list of ``depth`` logits with
    sides ``spatial / 2**k``, ``k = 0 .. depth-1``).

    ``doubling="between"`` (U-Net): level ``i`` has two convs of ``base·2^i`` features, ``i = 0..depth``;
    up-convs halve the features. ``doubling="inside"`` (3D U-Net): level ``i`` has convs of ``base·2^i`` then
    ``base·2^(i+1)`` features; up-convs keep the features. Decoder level ``i`` outputs the width of encoder
    level ``i``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        base_channels: int = 64,
        depth: int = 4,
        doubling: Literal["between", "inside"] = "between",
        max_channels: int | None = None,
        norm: str = "batch",
        act: str = "relu",
        deep_supervision: bool = False,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if doubling not in ("between", "inside"):
            raise ValueError(f"doubling must be 'between' or 'inside', got {doubling!r}")
        self.spatial_dims = spatial_dims
        self.size_multiple = 2**depth
        self.base_channels = base_channels  # the width the planner scales
        self.deep_supervision = deep_supervision
        cap = max_channels or 1 << 30
        shift = 1 if doubling == "inside" else 0
        widths = [min(base_channels * 2 ** (i + shift), cap) for i in range(depth + 1)]
        mids = [min(base_channels * 2**i, cap) for i in range(depth + 1)] if shift else widths

        self.pool = max_pool(spatial_dims, 2)
        self.encoder = nn.ModuleList()
        for i in range(depth + 1):
            self.encoder.append(DoubleConv(spatial_dims, widths[i - 1] if i else in_channels, mids[i], widths[i], norm, act))
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):  # coarse to fine
            up_width = widths[i + 1] if shift else widths[i]
            self.ups.append(conv_transpose(spatial_dims, widths[i + 1], up_width))
            self.decoder.append(DoubleConv(spatial_dims, widths[i] + up_width, widths[i], widths[i], norm, act))
        # heads[0] is the final 1×1 conv; heads[k] (k ≥ 1) supervise decoder level k (sides / 2^k).
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(conv(spatial_dims, widths[k], num_classes, 1) for k in range(n_heads))
        init_weights(self, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        skips = []
        for i, level in enumerate(self.encoder):
            x = level(self.pool(x) if i else x)
            skips.append(x)
        x = skips.pop()
        features = []  # decoder outputs, coarse to fine
        for up, level in zip(self.ups, self.decoder):
            x = level(torch.cat([skips.pop(), up(x)], dim=1))
            features.append(x)
        features.reverse()  # fine to coarse
        n = len(self.heads) if self.deep_supervision and self.training else 1
        return self.outputs([self.heads[k](features[k]) for k in range(n)])


_UNET_2D = dict(spatial_dims=2, base_channels=64, depth=4, doubling="between", deep_supervision=False)
_UNET_3D = dict(spatial_dims=3, base_channels=32, depth=3, doubling="inside", deep_supervision=True)


@register_model(spatial_dims=2, size_multiple=16, deep_supervision=False,
                description="U-Net (Ronneberger 2015): 4 levels, 64→1024, concatenated skips, up-convolutions")
def unet(in_channels: int, num_classes: int, **options) -> UNet:
    return build(UNet, "unet", in_channels, num_classes, _UNET_2D, options)


@register_model(spatial_dims=2, size_multiple=16, deep_supervision=False,
                description="U-Net, narrow widths (4→64) for tests")
def unet_tiny(in_channels: int, num_classes: int, **options) -> UNet:
    return build(UNet, "unet_tiny", in_channels, num_classes, {**_UNET_2D, "base_channels": 4}, options)


@register_model(spatial_dims=3, size_multiple=8, deep_supervision=True,
                description="3D U-Net (Çiçek 2016): 3 levels, 32,64→256,512, BN, deep supervision")
def unet3d(in_channels: int, num_classes: int, **options) -> UNet:
    return build(UNet, "unet3d", in_channels, num_classes, _UNET_3D, options)


@register_model(spatial_dims=3, size_multiple=8, deep_supervision=True,
                description="3D U-Net, narrow widths (4,8→32,64) for tests")
def unet3d_tiny(in_channels: int, num_classes: int, **options) -> UNet:
    return build(UNet, "unet3d_tiny", in_channels, num_classes, {**_UNET_3D, "base_channels": 4}, options)
