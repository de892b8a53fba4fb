"""Run configuration: one tree of frozen dataclasses, resolved as defaults < YAML file < flags.

``RunConfig`` groups the sections a training run needs (``data``, ``model``, ``optim``, ``loss``,
``augment``, ``train``). Values left as ``None`` mean "decide for me": the trainer fills them from the
dataset's plan, the device and the architecture's family (see ``medseg.training.recipe``) and writes the
*resolved* tree to ``models/RUN/config.yaml`` and into every checkpoint.

Conversions: ``to_dict(config)`` gives plain built-ins (tuples become lists, YAML-safe);
``from_dict(d)`` checks every key and type and raises ``ConfigError`` naming the key; ``merge(config,
*overrides)`` applies nested dicts on top; ``load_yaml`` / ``save_yaml`` read and write files.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from medseg.errors import ConfigError

FOLD_ALL = "all"


@dataclass(frozen=True)
class DataConfig:
    """What to train on and how batches are drawn."""

    name: str = ""
    data_dir: str = "data"
    fold: Union[int, str] = 0  # a fold index of splits.json, or "all" (train and validate on every case)
    patch_size: Union[tuple[int, ...], None] = None  # spatial, network axes; None: planned
    batch_size: Union[int, None] = None  # per process; None: planned from the device memory
    workers: Union[int, None] = None  # loader worker processes per process; None: from the CPU count
    iterations_per_epoch: Union[int, None] = None  # None: 250 (patches/slices) or one pass (2D images)
    foreground_fraction: float = 0.33  # share of samples centred on a labelled voxel


@dataclass(frozen=True)
class ModelConfig:
    arch: str = ""
    options: dict = field(default_factory=dict)  # passed to create_model
    activation: str = "auto"  # auto | softmax | sigmoid (sigmoid: one output channel, binary data only)
    compile: bool = False  # torch.compile the network


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule; ``None`` takes the architecture family's default (see recipe)."""

    optimizer: Union[str, None] = None  # sgd | adam | adamw
    lr: Union[float, None] = None
    weight_decay: Union[float, None] = None
    momentum: Union[float, None] = None  # SGD only
    nesterov: Union[bool, None] = None  # SGD only
    schedule: Union[str, None] = None  # poly | cosine | step | constant
    poly_exponent: float = 0.9
    min_lr: Union[float, None] = None  # cosine floor
    step_every: Union[int, None] = None  # step schedule: epochs between decays (None: a quarter of training)
    step_gamma: float = 0.1
    grad_clip: Union[float, None] = None  # max gradient norm; 0 disables
    # decay of the moving average of the weights that are validated, saved and predicted (0: the last
    # weights themselves); see medseg.training.ema
    ema_decay: Union[float, None] = None


@dataclass(frozen=True)
class LossConfig:
    name: Union[str, None] = None  # dice_ce | edge_bce_iou (None: family default)
    deep_supervision: bool = True  # use the network's extra outputs when it has them
    deep_supervision_weights: Union[str, None] = None  # halving | equal (None: family default)


@dataclass(frozen=True)
class AugmentConfig:
    """Batched augmentation on torch tensors. ``*_p`` are per-sample probabilities; ranges are (low, high)."""

    enabled: bool = True
    where: str = "auto"  # auto (device on CUDA, workers otherwise) | workers | device
    rotation_p: float = 0.2
    rotation_degrees: float = 30.0
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    elastic_p: float = 0.0
    elastic_magnitude: float = 0.05  # displacement, fraction of the patch side
    elastic_grid: int = 4  # control points per axis of the smooth displacement field
    flip_p: float = 0.5  # per axis
    noise_p: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    lowres_p: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: Union[int, None] = None  # None: family default
    val_every: Union[int, None] = None  # None: 1 for 2D images and small 3D validation sets, 5 otherwise
    # minutes of training (validation included) to end by: after every epoch the epoch count is re-planned
    # from the measured epoch time (never raised), and the learning-rate schedule follows the new count
    time_limit: Union[float, None] = None
    seed: int = 0
    device: str = "auto"  # auto (CUDA, then MPS, then CPU) | cuda | cuda:N | mps | cpu
    amp: str = "auto"  # auto (bf16 on CUDA if supported, else fp16; bf16 on CPUs with native bf16, else off) | off | bf16 | fp16
    models_dir: str = "models"
    run_name: Union[str, None] = None  # None: NAME_ARCH_foldK


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_name(self) -> str:
        return self.train.run_name or f"{self.data.name}_{self.model.arch}_fold{self.data.fold}"

    @property
    def run_dir(self) -> Path:
        return Path(self.train.models_dir) / self.run_name


_CHOICES = {
    "model.activation": ("auto", "softmax", "sigmoid"),
    "optim.optimizer": ("sgd", "adam", "adamw", None),
    "optim.schedule": ("poly", "cosine", "step", "constant", None),
    "loss.name": ("dice_ce", "edge_bce_iou", None),
    "loss.deep_supervision_weights": ("halving", "equal", None),
    "augment.where": ("auto", "workers", "device"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
}


# --- conversion ---------------------------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """A plain, YAML-safe copy: dataclasses → dicts, tuples → lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def _convert(value: Any, hint: Any, key: str, source: str | None) -> Any:
    """Check ``value`` against the type ``hint`` (coercing lists to tuples, ints to floats)."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{key}: expected {expected}, got {value!r}", source)

    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise bad(" or ".join(getattr(o, "__name__", str(o)) for o in options))
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return _build(hint, value, key, source)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and len(args) == 2 and args[1] is Ellipsis:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad(f"a list of {len(args)}")
        return tuple(_convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # pragma: no cover - programming error


def _build(cls: type, values: dict, prefix: str, source: str | None):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key '{where}{unknown[0]}' (valid: {', '.join(sorted(names))})", source)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        value = _convert(value, hints[name], key, source)
        if key in _CHOICES and value not in _CHOICES[key]:
            valid = ", ".join(str(c) for c in _CHOICES[key] if c is not None)
            raise ConfigError(f"{key}: {value!r} is not one of {valid}", source)
        kwargs[name] = value
    return cls(**kwargs)


def _check(config: RunConfig, source: str | None) -> RunConfig:
    fold = config.data.fold
    if isinstance(fold, str) and fold != FOLD_ALL:
        raise ConfigError(f"data.fold: expected an integer or 'all', got {fold!r}", source)
    positive = {
        "data.batch_size": config.data.batch_size, "data.iterations_per_epoch": config.data.iterations_per_epoch,
        "train.epochs": config.train.epochs, "train.val_every": config.train.val_every,
    }
    if config.train.time_limit is not None and not config.train.time_limit > 0:
        raise ConfigError(f"train.time_limit: must be a positive number of minutes, got {config.train.time_limit}", source)
    for key, value in positive.items():
        if value is not None and value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}", source)
    if config.data.patch_size is not None and (not config.data.patch_size or min(config.data.patch_size) < 1):
        raise ConfigError(f"data.patch_size: expected positive sizes, got {list(config.data.patch_size)}", source)
    if config.data.workers is not None and config.data.workers < 0:
        raise ConfigError(f"data.workers: must be 0 or more, got {config.data.workers}", source)
    if not 0.0 <= config.data.foreground_fraction <= 1.0:
        raise ConfigError("data.foreground_fraction: must be between 0 and 1", source)
    if config.optim.ema_decay is not None and not 0.0 <= config.optim.ema_decay < 1.0:
        raise ConfigError(f"optim.ema_decay: must be at least 0 and below 1 (0: no averaging), got "
                          f"{config.optim.ema_decay}", source)
    return config


def from_dict(values: dict, source: str | Path | None = None) -> RunConfig:
    """Build a ``RunConfig`` from a (possibly partial) nested dict; missing keys keep their defaults."""
    if not isinstance(values, dict):
        raise ConfigError("a run configuration must be a mapping of sections", source)
    src = str(source) if source is not None else None
    return _check(_build(RunConfig, values, "", src), src)


def _deep_update(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def merge(config: RunConfig, *overrides: dict | None, source: str | Path | None = None) -> RunConfig:
    """``config`` with each nested override dict applied in turn (later wins)."""
    values = to_dict(config)
    for override in overrides:
        if override:
            if not isinstance(override, dict):
                raise ConfigError("a run configuration must be a mapping of sections", source)
            values = _deep_update(values, override)
    return from_dict(values, source)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML run file as a nested dict (checked later by ``from_dict``/``merge``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("configuration file does not exist", path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"not valid YAML ({first})", path) from None
    if not isinstance(values, dict):
        raise ConfigError("a run configuration must be a mapping of sections", path)
    return values


def resolve(yaml_path: str | Path | None = None, flags: dict | None = None) -> RunConfig:
    """Defaults < YAML file < flags (flags: a nested dict holding only the options actually given)."""
    config = RunConfig()
    if yaml_path is not None:
        config = merge(config, load_yaml(yaml_path), source=yaml_path)
    return merge(config, flags)


def save_yaml(config: RunConfig, path: str | Path) -> Path:
    """Write the whole configuration as YAML, atomically."""
    import yaml

    from medseg.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path
