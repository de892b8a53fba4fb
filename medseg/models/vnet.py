"""V-Net (3D).

Paper: F. Milletari, N. Navab, S.-A. Ahmadi. "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation". 3DV 2016. Encoder stages of 1, 2, 3, 3 convolutions (5×5×5) and a bottom
stage of 3, each stage residual (its input is added to the output of its last convolution), 16 → 256
channels, down-sampling by 2×2×2 convolutions with stride 2 (no pooling) that double the channels,
PReLU non-linearities, decoder stages of 3, 3, 2, 1 convolutions after 2×2×2 de-convolutions, skips by
concatenation, a final 1×1×1 convolution to the classes. The first stage's residual is the input
replicated to 16 channels.

Why not MONAI's ``VNet``: MONAI 1.6's implementation uses stages of 1, 1, 2, 3, 2 convolutions (encoder)
and 2, 2, 1, 1 (decoder), ELU by default and dropout, adds a 5×5×5 conv before the output, has fixed
widths (no narrow test variant), and rejects ``in_channels`` that do not divide 16 (3 fails). This is a
faithful implementation written from the paper.

What differs from the paper:
- A normalization after every convolution (batch norm by default, ``norm="instance"``/``"group"``/``"none"``;
  the 2016 Caffe model had none); convolutions followed by a norm carry no bias.
- The first stage's residual replicates the input channels to the stage width when they divide it (as
  in the paper, for 1, 2, 4, 8 or 16 channels); other channel counts use a 1×1×1 projection.
- ``base_channels`` (default 16) scales every width; ``vnet_tiny`` uses 4. Training uses medseg's
  losses (the paper's Dice loss is one of them).
Input sides must be multiples of 16 (four stride-2 down-samplings).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.layers import ConvNormAct, SegmentationModel, act, conv, conv_transpose, init_weights
from medseg.models.layers import norm as layer_norm
from medseg.models.registry import build, register_model

ENCODER_CONVS = (1, 2, 3, 3, 3)  # stages at 1, 1/2, 1/4, 1/8, 1/16 (the last is the bottom stage)
DECODER_CONVS = (3, 3, 2, 1)  # stages at 1/8, 1/4, 1/2, 1


class ResidualStage(nn.Module):
    """``n`` 5×5×5 convs at constant width; the last conv's output plus the stage input, then PReLU.

    ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int, n_convs: int, norm_name: str):
        super().__init__()
        layers = [ConvNormAct(spatial_dims, channels, channels, 5, norm_name=norm_name, act_name="prelu") for _ in range(n_convs - 1)]
        has_norm = norm_name != "none"
        layers += [conv(spatial_dims, channels, channels, 5, bias=not has_norm), layer_norm(norm_name, spatial_dims, channels)]
        self.convs = nn.Sequential(*layers)
        self.act = act("prelu", channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.act(self.convs(x) + (x if residual is None else residual))


class InputStage(nn.Module):
    """First stage (one 5×5×5 conv): ``(B, in_channels, *S) -> (B, width, *S)``; residual = the input
    replicated to ``width`` channels (a 1×1×1 projection when ``in_channels`` does not divide ``width``)."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, norm_name: str):
        super().__init__()
        self.repeats = width // in_channels if width % in_channels == 0 else 0
        self.project = None if self.repeats else conv(spatial_dims, in_channels, width, 1, bias=False)
        self.lift = ConvNormAct(spatial_dims, in_channels, width, 5, norm_name=norm_name, act_name="none")
        self.act = act("prelu", width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.repeat_interleave(self.repeats, dim=1) if self.repeats else self.project(x)
        return self.act(self.lift(x) + residual)


class VNet(SegmentationModel):
    """V-Net: input ``(B, in_channels, D, H, W)``, sides multiples of 16; logits ``(B, num_classes, D, H, W)``."""

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 3, base_channels: int = 16, norm: str = "batch"):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.base_channels = base_channels  # the width the planner scales
        self.size_multiple = 2 ** (len(ENCODER_CONVS) - 1)
        self.deep_supervision = False
        widths = [base_channels * 2**i for i in range(len(ENCODER_CONVS))]  # 16, 32, 64, 128, 256
        self.input_stage = InputStage(spatial_dims, in_channels, widths[0], norm)  # ENCODER_CONVS[0] == 1
        self.down = nn.ModuleList(  # 2×2×2 conv, stride 2, doubling the channels
            ConvNormAct(spatial_dims, widths[i], widths[i + 1], 2, stride=2, norm_name=norm, act_name="prelu", padding=0)
            for i in range(len(widths) - 1)
        )
        self.encoder = nn.ModuleList(ResidualStage(spatial_dims, w, n, norm) for w, n in zip(widths[1:], ENCODER_CONVS[1:]))
        # Decoder stage at encoder level i: de-conv (2×2×2, stride 2) from the stage below to widths[i]
        # channels, concatenated with the skip (widths[i]) → a residual stage of 2·widths[i] channels
        # (256, 128, 64, 32 in the paper).
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        below = widths[-1]
        for i, n in zip(reversed(range(len(widths) - 1)), DECODER_CONVS):
            self.up.append(nn.Sequential(
                conv_transpose(spatial_dims, below, widths[i], bias=norm == "none"),
                layer_norm(norm, spatial_dims, widths[i]),
                act("prelu", widths[i]),
            ))
            below = 2 * widths[i]
            self.decoder.append(ResidualStage(spatial_dims, below, n, norm))
        self.head = conv(spatial_dims, below, num_classes, 1)
        init_weights(self, "leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.input_stage(x)
        skips = [x]
        for down, stage in zip(self.down, self.encoder):
            x = stage(down(x))
            skips.append(x)
        skips.pop()
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@register_model(spatial_dims=3, size_multiple=16, deep_supervision=False,
                description="V-Net (Milletari 2016): residual 5×5×5 stages 1,2,3,3,3, strided-conv down, PReLU, 16→256")
def vnet(in_channels: int, num_classes: int, **options) -> VNet:
    return build(VNet, "vnet", in_channels, num_classes, {"spatial_dims": 3}, options)


@register_model(spatial_dims=3, size_multiple=16, deep_supervision=False,
                description="V-Net, narrow widths (4→64) for tests")
def vnet_tiny(in_channels: int, num_classes: int, **options) -> VNet:
    return build(VNet, "vnet_tiny", in_channels, num_classes, {"spatial_dims": 3, "base_channels": 4}, options)
