"""The ``Predictor``: a checkpoint loaded once, then scan → label map in the scan's own geometry.

Per scan: read (``medseg.io``) → ``preprocess`` with the checkpoint's plan (exactly as in training) →
sliding-window inference with optional multi-scale × flip TTA, on the device → optional dense CRF at
the network's resolution → ``restore_probabilities`` to the scan grid → arg-max → optional
largest-component filter → ``Volume`` objects that carry the scan's own affine.

2D networks on 3D plans run on the axial slices (last canonical axis), batched. Test-time scales
resample the in-plane axes only for 2D networks, every axis for 3D networks.

Example::

    from medseg import Predictor
    predictor = Predictor("models/RUN", device="auto", tta=True)
    prediction = predictor.predict("scan.nii.gz")
    prediction.labels          # Volume (1, *scan shape), uint8, the scan's affine
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import CheckpointError, InputError, UsageError
from medseg.inference.crf import CRFConfig
from medseg.inference.postprocess import UNCERTAINTY_KINDS
from medseg.inference.tta import flip_combinations, parse_scales
from medseg.io.volume import Volume

DEFAULT_SCALES = (1.0,)
DEFAULT_FLIPS = "all"
DEFAULT_OVERLAP = 0.5
DEFAULT_WHOLE_IMAGE_FACTOR = 0.0  # patch windows (best Dice); 4.0 is ~2.5x faster (docs/inference.md)
REQUIRED_KEYS = ("arch", "in_channels", "num_classes", "model", "plan")


@dataclass
class Prediction:
    """What :meth:`Predictor.predict` returns, all on the scan's grid (its exact affine).

    ``labels``: ``(1, *spatial)`` uint8 (int16 above 255). ``probabilities``: ``(K, *spatial)``
    float16 or None. ``uncertainty``: ``(1, *spatial)`` float32 in [0, 1] or None. ``image``: the scan
    as read (for overlay pictures).
    """

    labels: Volume
    probabilities: Volume | None = None
    uncertainty: Volume | None = None
    case: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    image: Volume | None = field(default=None, repr=False)


class Predictor:
    """Predicts label maps with one network for many scans.

    Args:
        model: a run folder (``models/RUN``: ``checkpoint_best.pt``, else ``checkpoint_last.pt``) or a
            checkpoint file, loaded once with ``weights_only=True``.
        device: ``auto`` (CUDA, MPS, CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        tta: test-time augmentation over ``scales`` × ``flips``; False means one plain pass.
        scales: resampling factors of the preprocessed image (e.g. ``(0.75, 1, 1.25)`` or ``"0.75,1,1.25"``).
        flips: ``all`` | ``inplane`` | ``none`` (see :mod:`medseg.inference.tta`).
        crf: dense-CRF refinement at the network's resolution, with ``crf_config``.
        overlap: sliding-window overlap in [0, 1). ``batch_size``: windows per forward pass (default
            2 for 3D networks, 16 for 2D).
        keep_largest: keep only the largest connected component of each class.
        uncertainty: ``entropy`` (of the mean probabilities) or ``variance`` (across TTA members).
        amp: bf16 autocast where the device runs it natively (CUDA, CPUs with AVX512-BF16 or AMX); False: fp32.
        whole_image_factor: an image (padded to the network's size multiple) of at most this many
            patches' voxels is predicted in one window instead of overlapping patch windows (the network
            is fully convolutional; several times less work for small scans). 0 (default): always patch
            windows, which scored slightly higher Dice in the benchmark.
    """

    def __init__(self, model: str | Path, device: str = "auto", *, tta: bool = True,
                 scales: Sequence[float] | str = DEFAULT_SCALES, flips: str = DEFAULT_FLIPS, crf: bool = False,
                 crf_config: CRFConfig | None = None, overlap: float = DEFAULT_OVERLAP, batch_size: int | None = None,
                 keep_largest: bool = False, uncertainty: str = "entropy", amp: bool = True,
                 whole_image_factor: float = DEFAULT_WHOLE_IMAGE_FACTOR):
        from medseg.devices import start_flushing_pool
        from medseg.models import create_model
        from medseg.runs import checkpoint_in, load_checkpoint

        start_flushing_pool()  # before any other torch work: the pool's threads keep the flag
        path = checkpoint_in(model)
        checkpoint = load_checkpoint(path, map_location="cpu")
        missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
        if missing:
            raise CheckpointError(f"checkpoint lacks {', '.join(missing)}; it was not written by medseg train", path)
        try:
            network = create_model(checkpoint["arch"], int(checkpoint["in_channels"]), int(checkpoint["num_classes"]),
                                   **dict(checkpoint.get("model_options") or {}))
            network.load_state_dict(checkpoint["model"])
        except (RuntimeError, UsageError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"the weights do not fit architecture {checkpoint['arch']!r} ({first})",
                                  path) from None
        plan = checkpoint["plan"]
        spatial_dims = int(checkpoint.get("spatial_dims") or getattr(network, "spatial_dims", plan["dims"]))
        patch = checkpoint.get("patch_size") or (checkpoint.get("config") or {}).get("data", {}).get("patch_size")
        if not patch:
            raise CheckpointError("checkpoint lacks patch_size (the network's training patch)", path)
        activation = checkpoint.get("activation") or "softmax"
        num_classes = 2 if activation == "sigmoid" else int(checkpoint["num_classes"])
        self._configure(network, plan, labels=checkpoint.get("labels") or plan.get("labels"), patch_size=patch,
                        activation=activation, num_classes=num_classes, spatial_dims=spatial_dims, device=device,
                        tta=tta, scales=scales, flips=flips, crf=crf, crf_config=crf_config, overlap=overlap,
                        batch_size=batch_size, keep_largest=keep_largest, uncertainty=uncertainty, amp=amp,
                        whole_image_factor=whole_image_factor)
        self.checkpoint_path = path
        self.arch = checkpoint["arch"]
        del checkpoint

    @classmethod
    def from_model(cls, model: Callable, plan: dict[str, Any], *, labels: dict[str, int] | None = None,
                   patch_size: Sequence[int] | None = None, activation: str = "softmax",
                   num_classes: int | None = None, spatial_dims: int | None = None, device: str = "cpu",
                   **options: Any) -> "Predictor":
        """A predictor around an in-memory network (or any callable ``(B, C, *patch) → logits``).

        The documented test hook: ``plan`` is a preprocessing plan (docs/INTERNALS.md); ``labels``
        default to the plan's; ``patch_size=None`` runs the whole (scale-1) preprocessed image as one
        window; ``num_classes`` (probability channels) defaults to the plan's ``num_classes``, else the
        largest label value + 1; ``spatial_dims`` defaults to ``model.spatial_dims``, else the plan's
        ``dims``. Other options are those of the constructor (``tta``, ``scales``, ``flips``, ``crf``...).
        """
        from medseg.devices import start_flushing_pool

        start_flushing_pool()  # no effect where torch's pool already runs the caller's network
        self = cls.__new__(cls)
        labels = dict(labels or plan.get("labels") or {"background": 0, "foreground": 1})
        if num_classes is None:
            num_classes = 2 if activation == "sigmoid" else int(plan.get("num_classes") or max(labels.values()) + 1)
        spatial_dims = int(spatial_dims or getattr(model, "spatial_dims", 0) or plan["dims"])
        self._configure(model, plan, labels=labels, patch_size=patch_size, activation=activation,
                        num_classes=num_classes, spatial_dims=spatial_dims, device=device, **options)
        self.checkpoint_path = None
        self.arch = type(model).__name__
        return self

    def _configure(self, network, plan, *, labels, patch_size, activation, num_classes, spatial_dims, device="auto",
                   tta=True,
                   scales=DEFAULT_SCALES, flips=DEFAULT_FLIPS, crf=False, crf_config=None, overlap=DEFAULT_OVERLAP,
                   batch_size=None, keep_largest=False, uncertainty="entropy", amp=True,
                   whole_image_factor=DEFAULT_WHOLE_IMAGE_FACTOR) -> None:
        import torch

        from medseg.devices import resolve_device

        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.plan = dict(plan)
        self.labels = dict(labels or {"background": 0})
        self.num_classes = int(num_classes)  # probability channels; class index k is label value k
        self.num_channels = int(plan.get("num_channels", len(plan.get("channel_names", [0]))))
        self.spatial_dims = int(spatial_dims)
        self.plan_dims = int(plan["dims"])
        if self.spatial_dims > self.plan_dims:
            raise UsageError(f"a {self.spatial_dims}D network cannot predict {self.plan_dims}D images")
        self.patch_size = tuple(int(p) for p in patch_size) if patch_size is not None else None
        if self.patch_size is not None and len(self.patch_size) != self.spatial_dims:
            raise UsageError(f"patch size {self.patch_size} does not fit a {self.spatial_dims}D network")
        self.activation = activation
        self.scales = parse_scales(scales) if tta else (1.0,)
        self.flip_mode = flips if tta else "none"
        flip_combinations(self.flip_mode, self.spatial_dims)  # validates
        self.tta = tta
        self.crf_config = (crf_config or CRFConfig()) if crf else None
        if not 0 <= overlap < 1:
            raise UsageError(f"overlap must be in [0, 1), got {overlap}")
        self.overlap = float(overlap)
        self.batch_size = int(batch_size) if batch_size else (2 if self.spatial_dims == 3 else 16)
        self.keep_largest = keep_largest
        if uncertainty not in UNCERTAINTY_KINDS:
            raise UsageError(f"unknown uncertainty {uncertainty!r} (expected one of: {', '.join(UNCERTAINTY_KINDS)})")
        self.uncertainty_kind = uncertainty
        self.amp = amp
        if whole_image_factor < 0:
            raise UsageError(f"whole_image_factor must be >= 0, got {whole_image_factor}")
        self.whole_image_factor = float(whole_image_factor)
        self.size_multiple = int(getattr(network, "size_multiple", 1) or 1)
        if isinstance(network, torch.nn.Module):
            from medseg.models.layers import memory_format_for

            memory_format = memory_format_for(self.device.type, self.spatial_dims)
            network = network.to(self.device, memory_format=memory_format or torch.preserve_format).eval()
        self.network = network

    # ------------------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line: model, device and the inference settings (for logs and the CLI)."""
        from medseg.devices import bf16_supported

        scales = ",".join(f"{s:g}" for s in self.scales)
        tta = f"TTA scales {scales} × flips {self.flip_mode}" if self.tta else "no TTA"
        precision = "bf16" if self.amp and bf16_supported(self.device) else "fp32"
        return (f"{self.arch} ({self.spatial_dims}D) on {self.device} in {precision}, {tta}, "
                f"CRF {'on' if self.crf_config else 'off'}, overlap {self.overlap:g}")

    def load(self, source: Volume | str | Path | Sequence[str | Path], series_uid: str | None = None) -> Volume:
        """A ``Volume`` from a Volume, a path (file or DICOM folder) or one path per channel."""
        from medseg.io import read_volume
        from medseg.io.grid import match_grid

        if isinstance(source, Volume):
            return source
        if isinstance(source, (str, Path)):
            return read_volume(source, series_uid=series_uid)
        paths = [Path(p) for p in source]
        if len(paths) == 1:
            return read_volume(paths[0], series_uid=series_uid)
        first = read_volume(paths[0], series_uid=series_uid)
        # The same rule as ingest: each channel file on the first one's grid (exactly reoriented when it
        # samples the same points in another axis order), else a GeometryError naming the file.
        volumes = [first] + [match_grid(read_volume(p, series_uid=series_uid), first, "channel") for p in paths[1:]]
        array = np.concatenate([np.asarray(v.array, dtype=np.float32) for v in volumes], axis=0)
        return Volume(array=array, affine=first.affine.copy(), source=str(paths[0]),
                      meta={**first.meta, "channel_files": [p.name for p in paths]})

    def _check_input(self, volume: Volume) -> None:
        if volume.num_channels != self.num_channels:
            names = ", ".join(str(n) for n in self.plan.get("channel_names", [])) or "?"
            raise InputError(f"image has {volume.num_channels} channel(s) but the model takes "
                             f"{self.num_channels} ({names})", volume.source)
        if volume.ndim == 3 and self.plan_dims == 2 and volume.spatial_shape[-1] != 1:
            raise InputError(f"a 3D image {volume.spatial_shape} given to a model trained on 2D images", volume.source)
        if volume.ndim == 2 and self.plan_dims == 3:
            raise InputError("a 2D image given to a model trained on 3D volumes", volume.source)
        nonfinite = volume.count_nonfinite()
        if nonfinite:  # normalization would spread them over the whole image: an empty mask, silently
            raise InputError(f"image has {nonfinite} NaN or infinite values; replace them (e.g. with the background "
                             "intensity) before predicting", volume.source)

    def predict(self, source: Volume | str | Path | Sequence[str | Path], *, probabilities: bool = False,
                uncertainty: bool = False, series_uid: str | None = None, case: str = "") -> Prediction:
        """Predict one scan. ``source``: a ``Volume``, a path (NIfTI, 2D image, DICOM series folder...)
        or one path per channel. Returns a :class:`Prediction` on the scan's exact grid."""
        import torch

        from medseg import progress
        from medseg.inference.crf import crf_refine
        from medseg.inference.memory import accumulation_bytes, accumulation_device
        from medseg.inference.postprocess import keep_largest_component, uncertainty_map
        from medseg.inference.tta import tta_predict, tta_windows
        from medseg.preprocessing import preprocess, restore_probabilities

        start = time.perf_counter()
        volume = self.load(source, series_uid=series_uid)
        self._check_input(volume)
        case = case or Path(volume.source).name
        image, _, properties = preprocess(volume, self.plan)
        spatial = tuple(image.shape[1:])
        second_moment = uncertainty and self.uncertainty_kind == "variance"
        acc_device = accumulation_device(self.device, accumulation_bytes(
            self.num_classes, spatial, image.shape[0], self.scales, second_moment))
        x = torch.from_numpy(image).to(acc_device)
        slicewise = self.spatial_dims == 2 and len(spatial) == 3
        stacked = x.permute(3, 0, 1, 2) if slicewise else x[None]  # (N, C, *network spatial)
        patch = self.patch_size or tuple(stacked.shape[2:])
        network = self._padded(self.network)
        whole = (self.whole_image_factor, self.size_multiple) if self.patch_size else (0.0, 1)
        total = tta_windows(stacked.shape[2:], patch, self.overlap, self.scales, stacked.shape[0], *whole)
        with torch.no_grad(), progress.bar(f"{case}: windows", total) as advance:
            probs, probs_sq = tta_predict(
                network, stacked, patch, scales=self.scales, flip_mode=self.flip_mode, overlap=self.overlap,
                batch_size=self.batch_size, device=self.device, accumulate_device=acc_device,
                activation=self.activation, second_moment=second_moment, amp=self.amp, progress=advance,
                whole_image_factor=whole[0], size_multiple=whole[1])
            if slicewise:
                probs = probs.permute(1, 2, 3, 0)  # (Z, K, X, Y) -> (K, X, Y, Z)
                probs_sq = probs_sq.permute(1, 2, 3, 0) if probs_sq is not None else None
            else:
                probs, probs_sq = probs[0], probs_sq[0] if probs_sq is not None else None
            crf_seconds = 0.0
            if self.crf_config is not None:
                t = time.perf_counter()
                probs = crf_refine(probs, x, properties["spacing_after_resample"], self.crf_config)
                crf_seconds = time.perf_counter() - t
            unc = uncertainty_map(self.uncertainty_kind, probs, probs_sq) if uncertainty else None
            del probs_sq, x, stacked
            restored = restore_probabilities(probs, properties)
            del probs
            labels = restored.argmax(0).to(torch.uint8 if self.num_classes <= 256 else torch.int16).cpu().numpy()
            prob_volume = unc_volume = None
            if probabilities:
                prob_volume = self._on_grid(volume, restored.to(torch.float16).cpu().numpy(), kind="probabilities")
            del restored
            if unc is not None:
                unc = restore_probabilities(torch.stack([1 - unc, unc]), properties)[1]
                unc_volume = self._on_grid(volume, unc.float().cpu().numpy()[None], kind="uncertainty")
        if self.keep_largest:
            labels = keep_largest_component(labels, range(1, self.num_classes))
        label_volume = self._on_grid(volume, labels[None], kind="labels")
        return Prediction(labels=label_volume, probabilities=prob_volume, uncertainty=unc_volume, case=case, image=volume,
                          seconds=time.perf_counter() - start,
                          info={"preprocessed_shape": list(spatial), "accumulate_device": str(acc_device),
                                "crf_seconds": crf_seconds})

    def predict_many(self, sources: Iterable[Volume | str | Path | Sequence[str | Path]], **kwargs: Any):
        """Predict each source in turn (a generator of :class:`Prediction`)."""
        for source in sources:
            yield self.predict(source, **kwargs)

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _padded(network):
        """Call the network through ``forward_padded`` when it declares a ``size_multiple``."""
        if getattr(network, "size_multiple", 1) <= 1:
            return network
        from medseg.models import forward_padded

        return lambda x: forward_padded(network, x)

    @staticmethod
    def _on_grid(volume: Volume, array: np.ndarray, kind: str) -> Volume:
        """``array (C, *restored spatial)`` as a Volume with the scan's exact affine (a one-slice 3D
        scan fed to a 2D plan gets its singleton axis back)."""
        array = array.reshape((array.shape[0], *volume.spatial_shape))
        meta = {k: v for k, v in volume.meta.items() if k in ("format", "SeriesInstanceUID", "series_uid")}
        return Volume(array=array, affine=volume.affine.copy(), source=volume.source, meta={**meta, "kind": kind})
