"""Res2Net v1b encoder (the CM-MLP backbone), written from the paper; no timm, no downloads.

Paper: S.-H. Gao, M.-M. Cheng, K. Zhao, X.-Y. Zhang, M.-H. Yang, P. Torr. "Res2Net: A New Multi-scale
Backbone Architecture". TPAMI 2021. ``v1b`` = deep stem (three 3×3 convs 32, 32, 64) and average-pool
shortcuts on down-sampling (ResNet-D). A bottleneck splits its 1×1-conv output into ``scale`` groups of
``width = floor(planes · base_width / 64)`` channels; group i (i ≥ 1) gets a 3×3 conv of its input plus
the previous group's output (hierarchical residual-like connections); the last group is passed through.

Module names follow the authors' release (``conv1.0``, ``bn1``, ``layer1.0.convs.0``,
``layer1.0.downsample.1`` ...) so that a local ``res2net101_v1b_26w_4s`` state dict loads as is
(see ``load_encoder_weights``).

Shapes: input ``(B, in_channels, H, W)`` → features at 1/4, 1/8, 1/16, 1/32 with
``planes · 4 · (1, 2, 4, 8)`` channels (256, 512, 1024, 2048 for the default width).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from medseg.errors import CheckpointError

RES2NET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EXPANSION = 4


class Bottle2neck(nn.Module):
    """Res2Net bottleneck: ``(B, C_in, H, W) -> (B, planes·4, H/stride, W/stride)``."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        stage_first: bool = False,
        base_width: int = 26,
        scale: int = 4,
    ):
        super().__init__()
        width = int(math.floor(planes * base_width / 64.0))
        self.width, self.scale, self.stage_first = width, scale, stage_first
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        n_convs = max(scale - 1, 1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(n_convs))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(n_convs))
        # The first block of a stage pools its pass-through group (stride) instead of adding groups.
        self.pool = nn.AvgPool2d(3, stride, 1) if stage_first and scale > 1 else None
        self.conv3 = nn.Conv2d(width * scale, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        outs = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = groups[i] if i == 0 or self.stage_first else sp + groups[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        if self.scale > 1:
            outs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        out = self.bn3(self.conv3(torch.cat(outs, dim=1)))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Res2Net(nn.Module):
    """Res2Net v1b without the classifier; ``forward`` returns the four stage outputs (1/4 … 1/32).

    ``layers``: blocks per stage ((3, 4, 23, 3) for Res2Net-101); ``planes``: the first stage's bottleneck
    width (64 in the paper); ``stem_width``: the deep stem's first two convs (32).
    """

    def __init__(
        self,
        in_channels: int = 3,
        layers: Sequence[int] = RES2NET_LAYERS[101],
        planes: int = 64,
        base_width: int = 26,
        scale: int = 4,
        stem_width: int = 32,
    ):
        super().__init__()
        self.base_width, self.scale = base_width, scale
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, planes, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = planes
        self.layer1 = self._make_layer(planes, layers[0], 1)
        self.layer2 = self._make_layer(planes * 2, layers[1], 2)
        self.layer3 = self._make_layer(planes * 4, layers[2], 2)
        self.layer4 = self._make_layer(planes * 8, layers[3], 2)
        self.out_channels = tuple(planes * EXPANSION * 2**i for i in range(4))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * EXPANSION:
            downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(self.inplanes, planes * EXPANSION, 1, bias=False),
                nn.BatchNorm2d(planes * EXPANSION),
            )
        kw = dict(base_width=self.base_width, scale=self.scale)
        layers = [Bottle2neck(self.inplanes, planes, stride, downsample, stage_first=True, **kw)]
        self.inplanes = planes * EXPANSION
        layers += [Bottle2neck(self.inplanes, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state dict (``torch.load(weights_only=True)``) into ``encoder``, in place.

    Accepts a bare state dict or one under ``state_dict``/``model``, with or without a ``module.`` prefix.
    The classifier (``fc.*``) is ignored. A first conv trained on 3 channels is adapted to the encoder's
    input channels (summed for 1 channel, cycled and rescaled otherwise, as timm does). Missing keys or
    shape mismatches raise ``CheckpointError`` naming the file and the first keys; other unexpected keys
    give a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("encoder weight file does not exist", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file ...
        raise CheckpointError(f"cannot load encoder weights with weights_only=True ({type(exc).__name__})", path) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("not a state dict of tensors", path)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = encoder.state_dict()
    first = "conv1.0.weight"
    if first in state and first in own and state[first].shape[1] != own[first].shape[1]:
        state[first] = _adapt_input_conv(state[first], own[first].shape[1])
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if len(missing) == len(own):
        raise CheckpointError(f"no encoder weights found (expected keys like {first}, layer1.0.conv1.weight)", path)
    if missing or mismatched:
        problems = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})"] if missing else []
        problems += [f"{len(mismatched)} with a different shape (e.g. {', '.join(mismatched[:3])})"] if mismatched else []
        raise CheckpointError(f"encoder weights do not fit this encoder: {'; '.join(problems)}", path)
    if unexpected:
        warnings.warn(f"{path}: {len(unexpected)} unexpected encoder weights ignored (e.g. {', '.join(unexpected[:3])})", stacklevel=2)
    encoder.load_state_dict({k: state[k] for k in own}, strict=True)


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-conv weight ``(O, 3, k, k)`` to ``in_channels`` inputs (timm's ``adapt_input_conv``)."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)
