"""Inference: the Predictor, sliding-window prediction, test-time augmentation, dense CRF, export.

```
Predictor(model_dir_or_checkpoint, device="auto", tta=True, scales=(1.0,), flips="all", crf=False, ...)
Predictor.from_model(model, plan, patch_size=None, ...)        an in-memory network (tests, notebooks)
Predictor.predict(volume_or_path) -> Prediction(labels, probabilities, uncertainty)
sliding_window_predict(model, image, patch_size, overlap, batch_size, device, ...) -> (probs, probs_sq)
tta_predict(model, image, patch_size, scales=..., flip_mode=..., ...) -> (probs, probs_sq)
crf_refine(probs, image, spacing_mm, CRFConfig(...)) -> probs
predict_files(inputs, output, model=None, ...) -> PredictSummary     what `medseg predict` runs
```
Never imports ``medseg.training``; torch is imported inside functions.
"""

from __future__ import annotations

from medseg.inference.crf import CRFConfig, crf_refine
from medseg.inference.predictor import Prediction, Predictor
from medseg.inference.sliding_window import sliding_window_predict
from medseg.inference.tta import TTATransform, tta_predict

__all__ = ["CRFConfig", "Prediction", "Predictor", "TTATransform", "crf_refine", "predict_files",
           "sliding_window_predict", "tta_predict"]


def __getattr__(name: str):
    if name == "predict_files":
        from medseg.inference.runner import predict_files

        return predict_files
    raise AttributeError(f"module 'medseg.inference' has no attribute {name!r}")
