"""An exponential moving average of a network's weights: the weights that are validated, saved and predicted.

Training steps with a large learning rate move the weights around a good region; their running average
sits nearer its middle (Polyak averaging). With batch norm the averaged running statistics are also
steadier than the last few batches' (a batch of 2 patches moves them a lot). After every optimizer step:

    decay_n = min(decay, (1 + n) / (10 + n))          n: the number of updates so far, from 1
    average ← decay_n · average + (1 − decay_n) · weights

The warm-up term keeps the first epochs from averaging in the random initial weights (the same rule as
TensorFlow's and timm's moving averages). Floating-point parameters and buffers are averaged; integer
buffers (batch norm's ``num_batches_tracked``) are copied. At the end of a decayed schedule the steps are
small and the average equals the final weights to within the last epochs' motion.
"""

from __future__ import annotations

import copy


def ema_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (1-based): ``decay`` after the warm-up."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """The moving average of ``model``'s weights, held in a copy of ``model`` (``module``, in eval mode)."""

    def __init__(self, model, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be between 0 and 1, not {decay}")
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # a deep copy: the same tensors in the same order
        ours = list(self.module.parameters()) + list(self.module.buffers())
        theirs = list(model.parameters()) + list(model.buffers())
        floats = [(a, b) for a, b in zip(ours, theirs) if a.is_floating_point()]
        self._avg, self._src = [a for a, _ in floats], [b.detach() for _, b in floats]  # views: see every step
        self._copies = [(a, b) for a, b in zip(ours, theirs) if not a.is_floating_point()]

    def update(self) -> None:
        """Fold the network's current weights into the average (after an optimizer step)."""
        import torch

        self.updates += 1
        weight = 1.0 - ema_decay(self.decay, self.updates)
        with torch.no_grad():
            torch._foreach_lerp_(self._avg, self._src, weight)
            for a, b in self._copies:
                a.copy_(b)
