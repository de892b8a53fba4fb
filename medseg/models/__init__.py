"""The networks: a registry and five architectures (plus ``*_tiny`` test variants).

```
create_model(name, in_channels, num_classes, **options) -> SegmentationModel
list_models() -> list[str]
model_spec(name) -> ModelSpec(name, spatial_dims, size_multiple, deep_supervision, description)
forward_padded(model, x) -> logits          pads sides to model.size_multiple, crops back
pad_to_multiple(x, multiple) -> (padded, crop slices)
count_parameters(name, in_channels=1, num_classes=2, **options) -> int   (built on the meta device)
count_macs(name, in_channels, num_classes, spatial_shape, **options) -> float   (one forward pass, meta device)
```

Every model has ``spatial_dims``, ``size_multiple`` and ``deep_supervision`` attributes; input
``(B, C, *spatial)``, output logits ``(B, num_classes, *spatial)``; in ``train()`` mode a deep-supervision
model returns a list of logits, full resolution first. Calling a model directly with sides that are not
multiples of ``size_multiple`` raises ``medseg.errors.ConfigError`` naming the multiple.
"""

from __future__ import annotations

from medseg.models.layers import SegmentationModel
from medseg.models.padding import crop_output, forward_padded, pad_to_multiple
from medseg.models.registry import (ModelSpec, count_macs, count_parameters, create_model, list_models, model_spec,
                                    register_model)

# Importing the architecture modules registers their variants.
from medseg.models import unet as _unet  # noqa: E402,F401
from medseg.models import vnet as _vnet  # noqa: E402,F401
from medseg.models import unext as _unext  # noqa: E402,F401
from medseg.models import cm_mlp as _cm_mlp  # noqa: E402,F401

__all__ = [
    "ModelSpec",
    "SegmentationModel",
    "count_macs",
    "count_parameters",
    "create_model",
    "crop_output",
    "forward_padded",
    "list_models",
    "model_spec",
    "pad_to_multiple",
    "register_model",
]
