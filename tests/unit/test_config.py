"""medseg.config: defaults < YAML < flags, plain-dict and YAML round trips, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from medseg.config import RunConfig, from_dict, load_yaml, merge, resolve, save_yaml, to_dict
from medseg.errors import ConfigError


def test_defaults_are_frozen_and_round_trip_through_a_plain_dict():
    config = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.seed = 3  # type: ignore[misc]
    plain = to_dict(config)
    assert plain["augment"]["scale_range"] == [0.7, 1.4]  # tuples become YAML-safe lists
    assert from_dict(plain) == config


def test_yaml_round_trip(tmp_path):
    config = merge(RunConfig(), {"data": {"name": "liver", "patch_size": [64, 64, 32], "fold": "all"},
                                 "model": {"arch": "unet3d", "options": {"base_channels": 16}}})
    path = save_yaml(config, tmp_path / "run.yaml")
    again = from_dict(load_yaml(path))
    assert again == config
    assert again.data.patch_size == (64, 64, 32)
    assert again.model.options == {"base_channels": 16}


def test_precedence_defaults_then_yaml_then_flags(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  epochs: 7\n  seed: 5\ndata:\n  batch_size: 4\n")
    config = resolve(yaml_file, {"train": {"epochs": 3}, "data": {"name": "x"}})
    assert config.train.epochs == 3  # the flag wins over YAML
    assert config.train.seed == 5  # YAML wins over the default
    assert config.data.batch_size == 4
    assert config.train.device == "auto"  # untouched default
    assert config.data.name == "x"


def test_run_name_default():
    config = merge(RunConfig(), {"data": {"name": "kvasir", "fold": 2}, "model": {"arch": "unext"}})
    assert config.run_name == "kvasir_unext_fold2"
    assert str(config.run_dir).endswith("models/kvasir_unext_fold2")


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"data": {"batch_sise": 2}}, "unknown key 'data.batch_sise'"),
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected"),
        ({"train": {"epochs": 0}}, "train.epochs: must be at least 1"),
        ({"data": {"fold": "some"}}, "data.fold"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule: 'linear' is not one of"),
        ({"augment": {"scale_range": [0.7]}}, "augment.scale_range: expected a list of 2"),
        ({"train": {"seed": True}}, "train.seed: expected an integer"),
        ({"optim": {"ema_decay": 1}}, "optim.ema_decay: must be at least 0 and below 1"),
    ],
)
def test_bad_values_name_the_key(values, fragment):
    with pytest.raises(ConfigError) as info:
        from_dict(values, source="run.yaml")
    message = str(info.value)
    assert fragment in message
    assert message.startswith("run.yaml: ")
    assert "\n" not in message


def test_bad_yaml_file_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        resolve(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(tmp_path / "list.yaml")


def test_numbers_are_coerced_where_safe():
    config = from_dict({"optim": {"lr": 1, "grad_clip": 12}, "data": {"patch_size": 64}})
    assert isinstance(config.optim.lr, float) and config.optim.lr == 1.0
    assert config.data.patch_size == (64,)
