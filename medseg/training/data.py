"""Reading a dataset folder ``data/NAME/`` and drawing training batches from its preprocessed arrays.

Batches come from a map-style dataset indexed by the *global iteration* ``epoch × iterations_per_epoch +
iteration``: every random choice of a batch (cases, patch positions, augmentation) is derived from
``(seed, rank, epoch, iteration)``. The loader walks the indices from the resume point with an infinite
sampler, so a resumed run draws exactly the batches an uninterrupted one would, whatever the number of
worker processes.

A training sample is a patch of the network's size: a 3D patch of a volume, a 2D patch of one axial
slice (the last axis) of a volume, or a 2D patch of a 2D image. About ``foreground_fraction`` of the
samples of each batch are centred on a labelled voxel picked from ``CASE.json``'s ``class_locations``.
When a batch is rotated, zoomed or deformed, its crop is larger than the patch (``augment.batch_crop_size``,
from the same batch seed) and the augmentation resamples it down to the patch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError

MAX_LOCATIONS = 1000


@dataclass
class Case:
    """One preprocessed training case: paths, spatial shape (data axes) and foreground locations."""

    case_id: str
    image_path: Path
    label_path: Path
    shape: tuple[int, ...]
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)  # class → (n, data dims) int


@dataclass
class DatasetFolder:
    """The parts of ``data/NAME/`` training reads (see docs/INTERNALS.md)."""

    name: str
    root: Path
    dataset: dict[str, Any]
    plan: dict[str, Any]
    splits: list[dict[str, list[str]]]
    cases: dict[str, Case]

    @property
    def dims(self) -> int:
        """Spatial dimensionality of the data (2 for images, 3 for volumes)."""
        return int(self.plan["dims"])

    @property
    def labels(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.plan["labels"].items()}

    @property
    def num_classes(self) -> int:
        return int(self.plan.get("num_classes", max(self.labels.values()) + 1))

    @property
    def num_channels(self) -> int:
        return int(self.plan.get("num_channels", len(self.plan.get("channel_names", [0]))))

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.plan.get("target_spacing", [1.0] * self.dims))[: self.dims]

    @property
    def median_shape(self) -> tuple[float, ...]:
        if self.plan.get("median_shape"):
            return tuple(float(s) for s in self.plan["median_shape"])
        return tuple(float(s) for s in np.median([c.shape for c in self.cases.values()], axis=0))

    def fold_cases(self, fold: int | str) -> tuple[list[Case], list[Case]]:
        """``(train, val)`` cases of ``fold`` (``"all"``: every case for both)."""
        if fold == "all":
            everything = list(self.cases.values())
            return everything, everything
        if not 0 <= int(fold) < len(self.splits):
            raise ConfigError(f"fold {fold} does not exist: splits.json has folds 0..{len(self.splits) - 1}",
                              self.root / "splits.json")
        split = self.splits[int(fold)]
        try:
            return [self.cases[c] for c in split["train"]], [self.cases[c] for c in split["val"]]
        except KeyError as exc:
            raise InputError(f"fold {fold} names case {exc.args[0]!r} that has no preprocessed arrays",
                             self.root / "splits.json") from None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError("missing (re-run `medseg ingest` for this dataset)", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc.__class__.__name__})", path) from None


def _npy_shape(path: Path) -> tuple[int, ...]:
    if not path.is_file():
        raise InputError("missing preprocessed array (re-run `medseg ingest`)", path)
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable .npy array ({exc.__class__.__name__})", path) from None


def open_dataset(data_dir: str | Path, name: str) -> DatasetFolder:
    """Read ``data_dir/name``'s JSON files and check that every case's arrays exist (headers only)."""
    root = Path(data_dir) / name
    if not name or not root.is_dir():
        raise InputError(f"dataset {name!r} does not exist (run `medseg ingest SOURCE --name {name}` first)", root)
    dataset = _read_json(root / "dataset.json")
    plan = _read_json(root / "plan.json")
    splits = _read_json(root / "splits.json")
    for key in ("dims", "labels"):
        if key not in plan:
            raise InputError(f"plan has no {key!r}", root / "plan.json")
    pre = root / "preprocessed"
    cases = {}
    dims = int(plan["dims"])
    for entry in dataset.get("training", []):
        case_id = entry["case_id"] if isinstance(entry, dict) else str(entry)
        image_path, label_path = pre / f"{case_id}_image.npy", pre / f"{case_id}_label.npy"
        shape = _npy_shape(image_path)
        if len(shape) != dims + 1:
            raise InputError(f"array shape {shape} is not (C, {dims} spatial sides)", image_path)
        if _npy_shape(label_path)[1:] != shape[1:]:
            raise InputError(f"label shape differs from the image's {shape[1:]}", label_path)
        props_path = pre / f"{case_id}.json"
        props = _read_json(props_path) if props_path.exists() else {}
        locations = {
            int(k): np.asarray(v, dtype=np.int64).reshape(-1, dims)
            for k, v in (props.get("class_locations") or {}).items() if len(v)
        }
        cases[case_id] = Case(case_id, image_path, label_path, tuple(shape[1:]), locations)
    if not cases:
        raise InputError("dataset.json lists no training cases", root / "dataset.json")
    if not isinstance(splits, list) or not splits:
        raise InputError("expected a list of folds", root / "splits.json")
    return DatasetFolder(name, root, dataset, plan, splits, cases)


def sample_locations(label: np.ndarray, num_classes: int, max_per_class: int = MAX_LOCATIONS,
                     seed: int = 0) -> dict[int, np.ndarray]:
    """Up to ``max_per_class`` voxel indices of every foreground class in ``label`` ``(1, *spatial)``."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(1, num_classes):
        where = np.argwhere(label[0] == c)
        if len(where):
            if len(where) > max_per_class:
                where = where[rng.choice(len(where), max_per_class, replace=False)]
            out[c] = where.astype(np.int64)
    return out


# --- patches ------------------------------------------------------------------------------------


def crop_padded(array: np.ndarray, starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """``array[:, starts:starts+sizes]`` over the trailing spatial axes, zero outside the array.

    ``array``: ``(C, *spatial)`` (a memory map is fine: only the crop is read). Returns a new array
    ``(C, *sizes)`` of the same dtype.
    """
    out = np.zeros((array.shape[0], *sizes), dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for start, size, length in zip(starts, sizes, array.shape[1:]):
        lo, hi = max(start, 0), min(start + size, length)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


def batch_seed(seed: int, rank: int, epoch: int, iteration: int) -> int:
    """A 63-bit seed for one batch, from the run seed and the batch's coordinates."""
    return int(np.random.SeedSequence([seed, rank, epoch, iteration]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class PatchBatches:
    """Map-style dataset: ``batches[global_iteration]`` → one training batch.

    Returns ``{"image": float32 (B, C, *crop), "label": (B, 1, *crop) uint8/int16, "seed": int}``: with
    ``augment_here`` the batch is augmented in this process (a loader worker) and ``crop`` is the patch;
    otherwise ``crop`` is what ``augment.batch_crop_size`` asks for and the caller augments (on the GPU).

    Args:
        cases: training cases; data arrays ``(C, *data spatial)``.
        patch_size: network patch (spatial, network axes: 2 sides for 2D networks, 3 for 3D).
        augment: an ``AugmentConfig`` or None (no augmentation: crops of the patch size).
        slice_axis: for a 2D network on 3D data, the data axis sliced (the last: axial); else None.
        in_plane_axis: in 3D, rotations only about this axis (anisotropic data).
    """

    def __init__(self, cases: list[Case], patch_size: Sequence[int], batch_size: int, iterations_per_epoch: int, *,
                 seed: int, rank: int = 0, num_classes: int, foreground_fraction: float = 0.33,
                 slice_axis: int | None = None, augment=None, augment_here: bool = True,
                 in_plane_axis: int | None = None):
        self.cases = cases
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = int(batch_size)
        self.iterations_per_epoch = int(iterations_per_epoch)
        self.seed, self.rank = int(seed), int(rank)
        self.num_classes = num_classes
        self.foreground_fraction = foreground_fraction
        self.slice_axis = slice_axis
        self.augment = augment if augment is not None and augment.enabled else None
        self.augment_here = augment_here
        self.in_plane_axis = in_plane_axis
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return 2**62

    def _open(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._arrays.get(case.case_id)
        if arrays is None:
            arrays = (np.load(case.image_path, mmap_mode="r"), np.load(case.label_path, mmap_mode="r"))
            self._arrays[case.case_id] = arrays
        return arrays

    def _locations(self, case: Case) -> dict[int, np.ndarray]:
        if not case.class_locations:  # CASE.json without class_locations: find them once
            case.class_locations = sample_locations(np.asarray(self._open(case)[1]), self.num_classes)
        return case.class_locations

    def _sample(self, rng: np.random.Generator, force_foreground: bool, crop: tuple[int, ...]):
        case = self.cases[int(rng.integers(len(self.cases)))]
        image, label = self._open(case)
        shape = case.shape
        centre = None
        if force_foreground:
            locations = self._locations(case)
            if locations:
                classes = sorted(locations)
                points = locations[classes[int(rng.integers(len(classes)))]]
                centre = points[int(rng.integers(len(points)))]
        if self.slice_axis is not None:
            z = int(centre[self.slice_axis]) if centre is not None else int(rng.integers(shape[self.slice_axis]))
            image = np.take(image, z, axis=1 + self.slice_axis)
            label = np.take(label, z, axis=1 + self.slice_axis)
            shape = shape[: self.slice_axis] + shape[self.slice_axis + 1:]
            if centre is not None:
                centre = np.delete(centre, self.slice_axis)
        starts = []
        for axis, (side, patch) in enumerate(zip(shape, self.patch_size)):
            lo, hi = min(0, side - patch), max(0, side - patch)
            if centre is not None:
                start = min(max(int(centre[axis]) - patch // 2, lo), hi)
            else:
                start = int(rng.integers(lo, hi + 1))
            starts.append(start - (crop[axis] - patch) // 2)
        return crop_padded(image, starts, crop), crop_padded(label, starts, crop)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        epoch, iteration = divmod(int(index), self.iterations_per_epoch)
        seed = batch_seed(self.seed, self.rank, epoch, iteration)
        rng = np.random.default_rng(seed)
        n_random = round(self.batch_size * (1 - self.foreground_fraction))
        crop = self.patch_size
        if self.augment is not None:
            from medseg.training.augment import batch_crop_size

            crop = batch_crop_size(seed, self.batch_size, self.patch_size, self.augment, self.in_plane_axis)
        images, labels = [], []
        for i in range(self.batch_size):
            if self.batch_size == 1:
                force = bool(rng.random() < self.foreground_fraction)
            else:
                force = i >= n_random
            image, label = self._sample(rng, force, crop)
            images.append(image)
            labels.append(label)
        image = torch.from_numpy(np.stack(images).astype(np.float32, copy=False))
        label = torch.from_numpy(np.stack(labels))
        if self.augment is not None and self.augment_here:
            from medseg.training.augment import augment_batch

            image, label = augment_batch(image, label, self.patch_size, self.augment, seed, self.in_plane_axis)
        return {"image": image, "label": label, "seed": seed}


class InfiniteIndices:
    """Sampler yielding ``start, start + 1, ...`` forever: the loader is iterated across epochs."""

    def __init__(self, start: int = 0):
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        index = self.start
        while True:
            yield index
            index += 1

    def __len__(self) -> int:
        return 2**62


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def make_loader(batches: PatchBatches, start_index: int, workers: int, pin_memory: bool = False):
    """A ``DataLoader`` over ``batches`` from ``start_index``; workers keep running across epochs.

    The loader has its own generator, so creating it does not consume the global torch random state.
    """
    import torch

    options: dict[str, Any] = {}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=max(2, math.ceil(4 / workers)),
                       worker_init_fn=_worker_init)
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=InfiniteIndices(start_index), num_workers=workers,
        pin_memory=pin_memory, generator=torch.Generator(), **options,
    )
