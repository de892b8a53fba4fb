"""UNeXt (2D).

Paper: J. M. J. Valanarasu, V. M. Patel. "UNeXt: MLP-based Rapid Medical Image Segmentation Network".
MICCAI 2022 (arXiv 2203.04967); the released code (``archs.py``) fixes the widths.

- Encoder: three convolutional stages, each 3×3 conv → batch norm → 2×2 max-pool → ReLU, widths
  16, 32, 128 (as in the released code, which gives the paper's 1.47 M parameters; the paper's text says
  32, 64, 128). Then two tokenized-MLP stages at 1/16 (160) and 1/32 (256): overlapping patch embedding
  (3×3 conv, stride 2) + layer norm, a shifted-MLP block with a pre-norm residual, a layer norm.
- Shifted MLP: channels split into 5 groups, group k shifted by k−2 pixels along height (zero fill),
  linear, depthwise 3×3 conv on the token grid, GELU, the same shift along width, linear; hidden width =
  channel width.
- Decoder: 3×3 conv → batch norm (not on the last stage) → bilinear ×2 → ReLU, skips *added*;
  shifted-MLP blocks (+ layer norm) at the 1/16 and 1/8 decoder levels; a final 1×1 conv to the classes.

What differs from the released code (same parameters and arithmetic otherwise):
- ``in_channels`` is honoured (the released first conv is hard-coded to 3 channels).
- The token shift is one pad + slices in a channels-last ``(B, H, W, C)`` layout instead of pad → chunk
  → ``torch.roll`` → narrow on ``(B, C, H, W)`` with transposes; the result is identical.
- ``channels`` (default ``(16, 32, 128, 160, 256)``) scales the widths; ``unext_tiny`` uses
  ``(4, 8, 16, 20, 32)``. No drop-path (the released default rate is 0).
Input sides must be multiples of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.layers import SegmentationModel, init_weights
from medseg.models.registry import build, register_model

SHIFT_GROUPS = 5


def shift_tokens(x: torch.Tensor, dim: int, groups: int = SHIFT_GROUPS) -> torch.Tensor:
    """Shift channel group ``k`` of ``x`` ``(B, H, W, C)`` by ``k - groups // 2`` pixels along ``dim`` (1 = H, 2 = W).

    Zero fill at the borders (not circular). Groups follow ``torch.chunk`` (``ceil(C / groups)`` channels
    each, the last one smaller), as the released code does.
    """
    pad = groups // 2
    n = x.shape[dim]
    pads = [0, 0, 0, 0, 0, 0]  # F.pad order: C, W, H (last dimension first)
    pads[2 * (3 - dim)] = pads[2 * (3 - dim) + 1] = pad
    padded = F.pad(x, pads)
    size = -(-x.shape[-1] // groups)
    parts = []
    for k, start in enumerate(range(0, x.shape[-1], size)):
        shift = k - pad  # out[i] = x[i - shift]
        parts.append(padded[..., start:start + size].narrow(dim, pad - shift, n))
    return torch.cat(parts, dim=-1)


class ShiftedMLP(nn.Module):
    """shift along H → linear → depthwise 3×3 conv → GELU → shift along W → linear. ``(B, H, W, C) -> same``."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels)
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(shift_tokens(x, 1))
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(shift_tokens(self.act(x), 2))


class ShiftedBlock(nn.Module):
    """Pre-norm residual shifted MLP followed by a layer norm: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(channels)
        self.mlp = ShiftedMLP(channels)
        self.norm_out = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.permute(0, 2, 3, 1)  # channels-last token grid
        tokens = tokens + self.mlp(self.norm_in(tokens))
        return self.norm_out(tokens).permute(0, 3, 1, 2)


class TokenizedStage(nn.Module):
    """Overlapping patch embedding (3×3 conv, stride 2) + layer norm, then a ``ShiftedBlock``.

    ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.embed_norm = nn.LayerNorm(out_channels)
        self.block = ShiftedBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.embed(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.block(x)


class ConvStage(nn.Sequential):
    """3×3 conv → batch norm → 2×2 max-pool → ReLU: ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.MaxPool2d(2), nn.ReLU(inplace=True)
        )


class DecoderStage(nn.Sequential):
    """3×3 conv → batch norm (optional) → bilinear ×2 → ReLU: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.ReLU(inplace=True),
        )


class UNeXt(SegmentationModel):
    """UNeXt: input ``(B, in_channels, H, W)`` with sides multiples of 32; logits ``(B, num_classes, H, W)``.

    ``channels``: (conv stage 1, 2, 3, tokenized stage at 1/16, tokenized bottleneck at 1/32).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32, 128, 160, 256)):
        super().__init__()
        if len(channels) != 5 or min(channels[2:]) < SHIFT_GROUPS:
            raise ValueError(f"channels must be 5 widths, the last three at least {SHIFT_GROUPS}, got {tuple(channels)}")
        c1, c2, c3, c4, c5 = channels
        self.spatial_dims = 2
        self.size_multiple = 32
        self.deep_supervision = False
        self.encoder = nn.ModuleList([ConvStage(in_channels, c1), ConvStage(c1, c2), ConvStage(c2, c3)])
        self.tokenized = nn.ModuleList([TokenizedStage(c3, c4), TokenizedStage(c4, c5)])
        self.decoder = nn.ModuleList(
            [DecoderStage(c5, c4), DecoderStage(c4, c3), DecoderStage(c3, c2), DecoderStage(c2, c1), DecoderStage(c1, c1, batch_norm=False)]
        )
        self.decoder_blocks = nn.ModuleList([ShiftedBlock(c4), ShiftedBlock(c3)])  # at 1/16 and 1/8
        self.head = nn.Conv2d(c1, num_classes, 1)
        init_weights(self, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for stage in (*self.encoder, self.tokenized[0]):
            x = stage(x)
            skips.append(x)  # 1/2, 1/4, 1/8, 1/16
        x = self.tokenized[1](x)  # 1/32 bottleneck
        for i, stage in enumerate(self.decoder[:4]):
            x = stage(x) + skips.pop()
            if i < len(self.decoder_blocks):
                x = self.decoder_blocks[i](x)
        return self.head(self.decoder[4](x))


_UNEXT = {"channels": (16, 32, 128, 160, 256)}


@register_model(spatial_dims=2, size_multiple=32, deep_supervision=False,
                description="UNeXt (Valanarasu 2022): conv stages 16,32,128 + shifted-MLP stages 160,256, added skips")
def unext(in_channels: int, num_classes: int, **options) -> UNeXt:
    return build(UNeXt, "unext", in_channels, num_classes, _UNEXT, options)


@register_model(spatial_dims=2, size_multiple=32, deep_supervision=False,
                description="UNeXt, narrow widths (4,8,16,20,32) for tests")
def unext_tiny(in_channels: int, num_classes: int, **options) -> UNeXt:
    return build(UNeXt, "unext_tiny", in_channels, num_classes, {"channels": (4, 8, 16, 20, 32)}, options)
