"""The model registry (timm-style): ``@register_model`` stores a builder under its function name.

A builder is ``fn(in_channels: int, num_classes: int, **options) -> SegmentationModel``; the decorator
records the static facts of the variant (``ModelSpec``) so that callers can plan without building it.
``create_model`` builds one; an unknown name or option is a ``UsageError`` that lists the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    """Static facts of a registered variant (with its default options).

    ``size_multiple`` and ``deep_supervision`` are the defaults; options such as ``depth`` or
    ``deep_supervision=False`` may change them, and the built model's attributes are authoritative.
    """

    name: str
    spatial_dims: int
    size_multiple: int
    deep_supervision: bool
    description: str
    builder: Callable[..., Any] = field(repr=False, compare=False)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(*, spatial_dims: int, size_multiple: int, deep_supervision: bool, description: str):
    """Decorator: register ``fn`` under ``fn.__name__`` with its ``ModelSpec``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, spatial_dims, size_multiple, deep_supervision, description, fn)
        return fn

    return decorator


def list_models() -> list[str]:
    """All registered names, sorted (full-size and ``*_tiny`` variants)."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``; ``UsageError`` listing the valid names when unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}") from None


def create_model(name: str, in_channels: int = 1, num_classes: int = 2, **options: Any):
    """Build ``name`` for ``in_channels`` input channels and ``num_classes`` output maps.

    Returns a ``SegmentationModel`` taking ``(B, in_channels, *spatial)`` and returning logits
    ``(B, num_classes, *spatial)`` (a list, finest first, in train mode with deep supervision).
    Build on the meta device with ``with torch.device("meta"): create_model(...)`` to count parameters.
    """
    spec = model_spec(name)
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name}: {label} must be a positive integer, got {value!r}")
    return spec.builder(in_channels, num_classes, **options)


def build(cls: type, name: str, in_channels: int, num_classes: int, defaults: dict[str, Any], options: dict[str, Any]):
    """Instantiate ``cls(in_channels=..., num_classes=..., **{defaults, **options})`` for variant ``name``.

    Options that ``cls.__init__`` does not take (or ``spatial_dims``, fixed by the variant) are a
    ``UsageError`` naming the valid options.
    """
    fixed = ("self", "in_channels", "num_classes", "spatial_dims")  # spatial_dims is part of the variant's spec
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UsageError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
    return cls(in_channels=in_channels, num_classes=num_classes, **{**defaults, **options})


def count_parameters(name: str, in_channels: int = 1, num_classes: int = 2, **options: Any) -> int:
    """Trainable parameters of ``name``, built on the meta device (no memory, no weights initialized)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, in_channels, num_classes, **options)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(name: str, in_channels: int, num_classes: int, spatial_shape, **options: Any) -> float:
    """Multiply-accumulates of one forward pass of one image of ``spatial_shape`` (FLOPs / 2 of
    ``torch.utils.flop_counter``: convolutions and matrix products), counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(name, in_channels, num_classes, **options).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, in_channels, *spatial_shape))
    return counter.get_total_flops() / 2
