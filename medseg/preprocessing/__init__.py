"""Preprocessing shared by ingest and predict: reorientation, cropping, normalization, resampling.

``preprocess(volume, plan, label=None) -> (image, label, properties)`` and
``restore_probabilities(probs, properties)`` are the public pair (see docs/INTERNALS.md). numpy/scipy
only on the way in; torch is imported by ``restore_probabilities`` alone.
"""

from __future__ import annotations

from medseg.preprocessing.core import class_locations, label_dtype, preprocess, restore_probabilities
from medseg.preprocessing.crop import bounding_box, nonzero_mask
from medseg.preprocessing.normalize import normalize
from medseg.preprocessing.orientation import canonical_ornt, reorient, undo_reorient
from medseg.preprocessing.resample import resample, resampled_shape, thick_axis

__all__ = [
    "preprocess", "restore_probabilities", "class_locations", "label_dtype", "bounding_box", "nonzero_mask",
    "normalize", "canonical_ornt", "reorient", "undo_reorient", "resample", "resampled_shape", "thick_axis",
]
