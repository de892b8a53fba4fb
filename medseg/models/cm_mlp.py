"""CM-MLP (2D).

Paper: J. Lv, Y. Hu, Q. Fu, Z. Zhang, Y. Hu, L. Lv, G. Yang, J. Li, Y. Zhao. "CM-MLP: Cascade Multi-scale
MLP with Axial Context Relation Encoder for Edge Segmentation of Medical Image". arXiv 2208.10701 (2022),
IEEE Trans. NanoBioscience 2023. Figures: ``shared/docs/figures/cmmlp_{Overview,MFI,ACRE}.png``.

- Encoder: Res2Net-101 v1b 26w×4s (``medseg.models.res2net``), features F at 1/4 … 1/32; the three used
  levels (1/8, 1/16, 1/32) are each reduced to 32 channels by a small conv block (1×1 then 3×3 conv,
  BN, ReLU).
- Partial decoder (PraNet): the three reduced levels, multiplied and concatenated coarse to fine, give
  the coarse map M0 at 1/8.
- Parallel branch at 1/32, 1/16, 1/8 (coarse to fine). At each level:
  * MFI: split into two halves; each half FC → LN → FC → GELU (F¹) → cascade MLP at
    (grid, block) = (8, 2), (4, 4), (2, 8), each a global grid MLP (an FC across the cells of a fixed g×g
    grid) then a local block MLP (an FC across the pixels of each fixed b×b block) → FC + dropout (F⁴);
    cross gating as drawn in the figure (the product F⁴_up ⊙ F⁴_bottom feeds an FC + dropout on each
    half), residual F¹; the halves are concatenated and fused by a 3×3 conv.
  * ACRE: axial multi-head self-attention along height, then width; the previous map through a sigmoid
    (M) splits the features into F·M and F·(1−M), each through a 3×3 conv; their concatenation goes
    through 3×3 convs to the output maps, which are added to the previous map resized to this level.
- Deep supervision: M0 and the three refined maps; in ``train()`` mode the model returns the four maps
  up-sampled (bilinear) to the input size, finest level first ``[M3, M2, M1, M0]``; in ``eval()`` mode
  only M3 up-sampled to the input size.

What differs from the paper (practical requirements, see MODELS.md):
- The grid and block sizes are fixed (MAXIM-style), so any input whose sides are multiples of 32 works:
  a feature map whose side is not a multiple of g (or b) is zero-padded for that MLP and cropped back
  (the released spatial MLPs are sized for one input resolution).
- Multi-class: ``num_classes`` maps everywhere (softmax over classes); the sigmoid of the single map is
  used for binary output, and for K ≥ 2 classes M = 1 − softmax(maps)[background].
- The encoder trains from scratch by default (no downloads); ``encoder_weights=PATH`` loads a local
  Res2Net state dict (e.g. ``res2net101_v1b_26w_4s``); ``encoder_depth=50`` gives Res2Net-50; any number
  of input channels.
- ACRE's axial attention has a residual connection around each axis, and the previous map is added to
  ACRE's output (as MODELS.md and PraNet's reverse attention specify; the overview figure draws a
  concatenation with the previous map followed by a 3×3 conv). The spatial FCs of the cascade MLP start
  as identities (six stacked random spatial FCs would otherwise shrink the signal by orders of magnitude
  at initialization).
- ``cm_mlp_tiny``: Res2Net with one block per stage, 8-wide bottlenecks, 8-channel branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.layers import ConvNormAct, SegmentationModel
from medseg.models.registry import build, register_model
from medseg.models.res2net import RES2NET_LAYERS, Res2Net, load_encoder_weights

CASCADE = ((8, 2), (4, 4), (2, 8))  # (grid g, block b) of the three cascade-MLP scales


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return x if tuple(x.shape[2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SpatialMLP(nn.Module):
    """An FC across a fixed ``size × size`` spatial axis of ``(B, H, W, C)`` (channels-last).

    ``mode="grid"``: the map is cut into a ``size × size`` grid of cells; the FC mixes the ``size²`` cells
    (global MLP) at each position within a cell. ``mode="block"``: the map is cut into ``size × size``
    blocks; the FC mixes the ``size²`` pixels of each block (local MLP). Sides that are not multiples of
    ``size`` are zero-padded, and the output is cropped back. Initialized as the identity.
    """

    def __init__(self, size: int, mode: str):
        super().__init__()
        if mode not in ("grid", "block"):
            raise ValueError(f"mode must be 'grid' or 'block', got {mode!r}")
        self.size, self.mode = size, mode
        self.fc = nn.Linear(size * size, size * size)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(size * size))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.size
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        if self.mode == "grid":  # (B, g, H/g, g, W/g, C): mix axes 1 and 3
            x = x.reshape(b, s, hp // s, s, wp // s, c).permute(0, 2, 4, 5, 1, 3)
        else:  # (B, H/b, b, W/b, b, C): mix axes 2 and 4
            x = x.reshape(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 5, 2, 4)
        shape = x.shape
        x = self.fc(x.reshape(*shape[:4], s * s)).reshape(shape)
        inverse = (0, 4, 1, 5, 2, 3) if self.mode == "grid" else (0, 1, 4, 2, 5, 3)
        x = x.permute(inverse).reshape(b, hp, wp, c)
        return x[:, :h, :w] if ph or pw else x


class CascadeMLP(nn.Sequential):
    """One cascade scale: global grid MLP (grid ``g``) then local block MLP (block ``b``). ``(B, H, W, C) -> same``."""

    def __init__(self, grid: int, block: int):
        super().__init__(SpatialMLP(grid, "grid"), SpatialMLP(block, "block"))


class MFIBranch(nn.Module):
    """One half of MFI up to F⁴: FC → LN → FC → GELU (F¹) → three cascade MLPs → FC + dropout (F⁴)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.fc_in = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, channels)
        self.act = nn.GELU()
        self.cascade = nn.Sequential(*(CascadeMLP(g, b) for g, b in CASCADE))
        self.fc_out = nn.Linear(channels, channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.act(self.fc(self.norm(self.fc_in(x))))
        f4 = self.drop(self.fc_out(self.cascade(f1)))
        return f1, f4


class MFI(nn.Module):
    """Multi-scale feature interaction: ``(B, C, H, W) -> (B, C, H, W)`` (C even)."""

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()
        half = channels // 2
        self.branches = nn.ModuleList([MFIBranch(half, dropout), MFIBranch(half, dropout)])
        self.gate_fc = nn.ModuleList([nn.Linear(half, half), nn.Linear(half, half)])
        self.drop = nn.Dropout(dropout)
        self.fuse = ConvNormAct(2, channels, channels, 3, norm_name="batch", act_name="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = x.permute(0, 2, 3, 1).chunk(2, dim=-1)  # channels-last halves (B, H, W, C/2)
        (f1_up, f4_up), (f1_bottom, f4_bottom) = (branch(h) for branch, h in zip(self.branches, halves))
        gated = f4_up * f4_bottom  # cross gating: each half multiplied by the other's output
        out = [f1 + self.drop(fc(gated)) for f1, fc in zip((f1_up, f1_bottom), self.gate_fc)]
        return self.fuse(torch.cat(out, dim=-1).permute(0, 3, 1, 2))


class AxialAttention(nn.Module):
    """Multi-head self-attention along one spatial axis (2 = H, 3 = W) with a residual: ``(B, C, H, W) -> same``."""

    def __init__(self, channels: int, num_heads: int, axis: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.axis, self.heads = axis, num_heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # Sequences along the axis: (B·W, H, C) for H, (B·H, W, C) for W.
        seq = x.permute(0, 3, 2, 1) if self.axis == 2 else x.permute(0, 2, 3, 1)
        n_seq, length = seq.shape[0] * seq.shape[1], seq.shape[2]
        qkv = self.qkv(seq.reshape(n_seq, length, c)).reshape(n_seq, length, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, L, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n_seq, length, c)
        out = self.proj(out).reshape(seq.shape)
        out = out.permute(0, 3, 2, 1) if self.axis == 2 else out.permute(0, 3, 1, 2)
        return x + out


class ACRE(nn.Module):
    """Axial context relation encoder: features ``(B, C, H, W)`` + previous maps ``(B, K, h, w)`` → refined ``(B, K, H, W)``."""

    def __init__(self, channels: int, num_classes: int, num_heads: int):
        super().__init__()
        self.attention = nn.Sequential(AxialAttention(channels, num_heads, 2), AxialAttention(channels, num_heads, 3))
        self.fore = ConvNormAct(2, channels, channels, 3)
        self.back = ConvNormAct(2, channels, channels, 3)
        self.out = nn.Sequential(ConvNormAct(2, 2 * channels, channels, 3), nn.Conv2d(channels, num_classes, 3, padding=1))

    @staticmethod
    def foreground(maps: torch.Tensor) -> torch.Tensor:
        """Foreground probability ``(B, 1, H, W)``: sigmoid of one map, else 1 − softmax background."""
        if maps.shape[1] == 1:
            return torch.sigmoid(maps)
        return 1 - torch.softmax(maps, dim=1)[:, :1]

    def forward(self, features: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        previous = _resize(previous, features.shape[2:])
        f = self.attention(features)
        m = self.foreground(previous)
        refined = self.out(torch.cat([self.fore(f * m), self.back(f * (1 - m))], dim=1))
        return previous + refined


class PartialDecoder(nn.Module):
    """PraNet's aggregation: reduced features at 1/32, 1/16, 1/8 (``C`` channels each) → maps ``(B, K, H/8, W/8)``."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        c = channels

        def basic(cin: int, cout: int) -> nn.Module:  # PraNet's BasicConv2d: conv + BN
            return ConvNormAct(2, cin, cout, 3, act_name="none")

        self.up1, self.up2, self.up3, self.up4 = basic(c, c), basic(c, c), basic(c, c), basic(c, c)
        self.up5 = basic(2 * c, 2 * c)
        self.concat2 = basic(2 * c, 2 * c)
        self.concat3 = basic(3 * c, 3 * c)
        self.conv4 = basic(3 * c, 3 * c)
        self.conv5 = nn.Conv2d(3 * c, num_classes, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        s2, s3 = x2.shape[2:], x3.shape[2:]
        x1_to2, x1_to3, x2_to3 = _resize(x1, s2), _resize(x1, s3), _resize(x2, s3)
        x2_1 = self.up1(x1_to2) * x2
        x3_1 = self.up2(x1_to3) * self.up3(x2_to3) * x3
        x2_2 = self.concat2(torch.cat([x2_1, self.up4(x1_to2)], dim=1))
        x3_2 = self.concat3(torch.cat([x3_1, self.up5(_resize(x2_2, s3))], dim=1))
        return self.conv5(self.conv4(x3_2))


class CMMLP(SegmentationModel):
    """CM-MLP: input ``(B, in_channels, H, W)``, sides multiples of 32; logits ``(B, num_classes, H, W)``.

    In train mode with ``deep_supervision`` (default): a list of four logits ``[M3, M2, M1, M0]``, each
    up-sampled to ``(H, W)``. ``encoder_depth``: 50, 101 or explicit blocks per stage.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        encoder_depth: int | Sequence[int] = 101,
        encoder_planes: int = 64,
        encoder_stem: int = 32,
        base_width: int = 26,
        scale: int = 4,
        channels: int = 32,
        num_heads: int = 4,
        dropout: float = 0.1,
        deep_supervision: bool = True,
        encoder_weights: str | Path | None = None,
    ):
        super().__init__()
        if isinstance(encoder_depth, int):
            if encoder_depth not in RES2NET_LAYERS:
                raise ValueError(f"encoder_depth must be one of {sorted(RES2NET_LAYERS)} or 4 block counts, got {encoder_depth}")
            encoder_depth = RES2NET_LAYERS[encoder_depth]
        self.spatial_dims = 2
        self.size_multiple = 32
        self.deep_supervision = deep_supervision
        self.encoder = Res2Net(in_channels, encoder_depth, encoder_planes, base_width, scale, encoder_stem)
        self.reduce = nn.ModuleList(  # for the 1/8, 1/16, 1/32 features
            nn.Sequential(ConvNormAct(2, cin, channels, 1), ConvNormAct(2, channels, channels, 3))
            for cin in self.encoder.out_channels[1:]
        )
        self.partial_decoder = PartialDecoder(channels, num_classes)
        self.mfi = nn.ModuleList(MFI(channels, dropout) for _ in range(3))  # 1/32, 1/16, 1/8
        self.acre = nn.ModuleList(ACRE(channels, num_classes, num_heads) for _ in range(3))
        if encoder_weights is not None:
            load_encoder_weights(self.encoder, encoder_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        size = x.shape[2:]
        _, *feats = self.encoder(x)  # 1/8, 1/16, 1/32
        reduced = [r(f) for r, f in zip(self.reduce, feats)][::-1]  # 1/32, 1/16, 1/8
        maps = [self.partial_decoder(*reduced)]  # M0 at 1/8
        for feature, mfi, acre in zip(reduced, self.mfi, self.acre):
            maps.append(acre(mfi(feature), maps[-1]))  # M1 at 1/32, M2 at 1/16, M3 at 1/8
        if self.deep_supervision and self.training:
            return [_resize(m, size) for m in reversed(maps)]
        return _resize(maps[-1], size)


_CM_MLP = {"encoder_depth": 101}
_CM_MLP_TINY = {"encoder_depth": (1, 1, 1, 1), "encoder_planes": 8, "encoder_stem": 8, "channels": 8, "num_heads": 2}


@register_model(spatial_dims=2, size_multiple=32, deep_supervision=True,
                description="CM-MLP (Lv 2022): Res2Net-101 + partial decoder + cascade-MLP MFI + axial ACRE, edge-focused")
def cm_mlp(in_channels: int, num_classes: int, **options) -> CMMLP:
    return build(CMMLP, "cm_mlp", in_channels, num_classes, _CM_MLP, options)


@register_model(spatial_dims=2, size_multiple=32, deep_supervision=True,
                description="CM-MLP, small Res2Net (1 block per stage, width 8) for tests")
def cm_mlp_tiny(in_channels: int, num_classes: int, **options) -> CMMLP:
    return build(CMMLP, "cm_mlp_tiny", in_channels, num_classes, _CM_MLP_TINY, options)
