"""The training loop on tiny phantom datasets (ingested for real): files, checkpoints, resume, errors."""

from __future__ import annotations

import errno
import math

import pytest
import torch

from medseg.config import RunConfig, from_dict, load_yaml, merge
from medseg.errors import CheckpointError, ConfigError, InputError, OutputExistsError, TrainingError, UsageError
from medseg.runs import load_checkpoint
from medseg.training.curves import read_log
from medseg.devices import bf16_supported
from medseg.training.loop import (MAX_NONFINITE_STEPS, duration, plan_run, planned_epochs, rng_state, set_rng_state,
                                  train)

CHECKPOINT_KEYS = {"format_version", "medseg_version", "arch", "model_options", "in_channels", "num_classes", "model",
                   "optimizer", "scheduler", "scaler", "epoch", "config", "labels", "plan", "rng", "best_dice",
                   "spatial_dims", "patch_size", "activation"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """data/ph3d: 4 CT phantoms 32×32×16 (2 folds); data/ph2d: 4 RGB phantoms 64×64 (2 folds)."""
    from medseg.ingest import ingest
    from medseg.phantoms import write_ct_dataset, write_image2d_dataset

    root = tmp_path_factory.mktemp("training")
    write_ct_dataset(root / "raw3d", n_cases=4, shape=(32, 32, 16), orientations=("RAS",))
    ingest(root / "raw3d", "ph3d", data_root=root / "data", folds=2)
    write_image2d_dataset(root / "raw2d", n_cases=4, size=(64, 64))
    ingest(root / "raw2d", "ph2d", data_root=root / "data", folds=2)
    return root / "data"


def _config(data_root, models_dir, name="ph3d", arch="unet3d_tiny", **sections) -> RunConfig:
    base = {
        "data": {"name": name, "data_dir": str(data_root), "batch_size": 2, "workers": 0, "iterations_per_epoch": 2,
                 "patch_size": [16, 16, 16] if arch.startswith("unet3d") else None},
        "model": {"arch": arch},
        "train": {"epochs": 1, "val_every": 1, "models_dir": str(models_dir), "device": "cpu"},
    }
    return merge(RunConfig(), base, sections)


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint_last.pt")["model"]


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_epoch_3d_writes_every_file_and_a_complete_checkpoint(data_root, tmp_path):
    from medseg.models import create_model

    result = train(_config(data_root, tmp_path))
    run = tmp_path / "ph3d_unet3d_tiny_fold0"
    assert result.run_dir == run
    for name in ("config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "log.csv", "curves.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = from_dict(load_yaml(run / "config.yaml"))
    assert saved == result.config and saved.optim.optimizer == "sgd" and saved.data.patch_size == (16, 16, 16)
    rows = read_log(run / "log.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert {"val_dice_liver", "val_dice_spleen", "val_dice_kidney", "lr", "samples_per_s", "wall_time_s"} <= set(rows[0])
    assert 0.0 <= float(rows[0]["val_dice"]) <= 1.0 and math.isfinite(float(rows[0]["train_loss"]))

    ckpt = load_checkpoint(run / "checkpoint_last.pt")
    assert CHECKPOINT_KEYS <= set(ckpt)
    assert (ckpt["spatial_dims"], ckpt["patch_size"], ckpt["activation"]) == (3, [16, 16, 16], "softmax")
    assert ckpt["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    assert ckpt["plan"]["dims"] == 3 and ckpt["epoch"] == 1 and ckpt["num_classes"] == 4
    model = create_model(ckpt["arch"], ckpt["in_channels"], ckpt["num_classes"], **ckpt["model_options"])
    model.load_state_dict(ckpt["model"])  # everything inference needs to rebuild the network
    assert load_checkpoint(run / "checkpoint_best.pt")["best_dice"] == pytest.approx(float(rows[0]["val_dice"]), abs=1e-5)


def test_the_cpu_plan_narrows_the_network_and_a_set_width_is_kept(data_root, tmp_path):
    from medseg.models import model_spec
    from medseg.training.data import open_dataset

    ds = open_dataset(data_root, "ph3d")
    cpu = torch.device("cpu")
    planned, _ = plan_run(_config(data_root, tmp_path, arch="unet3d", train={"amp": "bf16"}), ds, model_spec("unet3d"),
                          cpu)
    assert planned.model.options == {"base_channels": 8}  # unet3d's 32 is far too slow on a CPU
    assert (planned.optim.optimizer, planned.optim.lr) == ("adam", 1e-3)  # the narrowed network's recipe
    fp32, _ = plan_run(_config(data_root, tmp_path, arch="unet3d", train={"amp": "off"}), ds, model_spec("unet3d"), cpu)
    assert fp32.model.options == {"base_channels": 4}  # an fp32 step costs 2-3× a bf16 one: a cheaper plan
    assert (fp32.optim.optimizer, fp32.optim.lr) == ("adam", 1e-3)
    auto, _ = plan_run(_config(data_root, tmp_path, arch="unet3d"), ds, model_spec("unet3d"), cpu)
    assert auto.model.options == {"base_channels": 8 if bf16_supported(cpu) else 4}  # this CPU's own precision
    ph2d = open_dataset(data_root, "ph2d")
    widths_2d = [plan_run(_config(data_root, tmp_path, name="ph2d", arch="unet", train={"amp": amp}), ph2d,
                          model_spec("unet"), cpu)[0].model.options for amp in ("bf16", "off")]
    assert widths_2d == [{"base_channels": 16}] * 2  # 2D networks: one CPU budget (fp32 not measured narrower)
    kept, _ = plan_run(_config(data_root, tmp_path, arch="unet3d", model={"options": {"base_channels": 16}}), ds,
                       model_spec("unet3d"), cpu)
    assert kept.model.options == {"base_channels": 16}
    assert kept.optim.optimizer == "sgd"  # the user's width: the family's recipe
    unext, _ = plan_run(_config(data_root, tmp_path, name="ph2d", arch="unext_tiny"), open_dataset(data_root, "ph2d"),
                        model_spec("unext_tiny"), cpu)
    assert unext.model.options == {}  # no base_channels option: nothing to plan


def test_2d_network_on_2d_images_and_on_volume_slices(data_root, tmp_path):
    """2D images whole; volumes as axial slices, augmented in the training process (the GPU path)."""
    images = train(_config(data_root, tmp_path, name="ph2d", arch="unet_tiny"))
    ckpt = load_checkpoint(images.run_dir / "checkpoint_last.pt")
    assert ckpt["spatial_dims"] == 2 and ckpt["patch_size"] == [64, 64]  # the whole image
    assert ckpt["in_channels"] == 3 and (images.run_dir / "curves.png").is_file()
    slices = train(_config(data_root, tmp_path, name="ph3d", arch="unet_tiny", augment={"where": "device"}))
    ckpt = load_checkpoint(slices.run_dir / "checkpoint_last.pt")
    assert ckpt["spatial_dims"] == 2 and ckpt["patch_size"] == [32, 32]  # in-plane sides of the volumes
    assert len(read_log(slices.run_dir / "log.csv")) == 1


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_matches_an_uninterrupted_run(data_root, tmp_path, workers):
    # fp32: bit-exact needs deterministic kernels (CPU bf16 autocast, oneDNN, is not bit-reproducible)
    sections = {"data": {"workers": workers}, "train": {"epochs": 2, "val_every": 2, "amp": "off"}}
    straight = train(_config(data_root, tmp_path / "a", **sections))
    interrupted = _config(data_root, tmp_path / "b", **sections)
    first = train(interrupted, stop_after=1)
    assert first.epochs_done == 1
    torch.manual_seed(1234)  # whatever happened in between, the checkpoint restores the random states
    resumed = train(interrupted, resume=True)
    assert resumed.epochs_done == 2
    assert _same_weights(_weights(straight.run_dir), _weights(resumed.run_dir))
    a, b = (load_checkpoint(r.run_dir / "checkpoint_last.pt") for r in (straight, resumed))
    assert _same_weights(a["training_model"], b["training_model"])  # the averaged and the trained weights
    assert a["ema_updates"] == b["ema_updates"] == 4
    assert straight.weights_sha256 == resumed.weights_sha256
    assert [r["epoch"] for r in read_log(resumed.run_dir / "log.csv")] == ["1", "2"]


def test_the_weight_average_is_validated_and_saved_and_can_be_turned_off(data_root, tmp_path):
    from medseg.models import create_model
    from medseg.training.data import open_dataset
    from medseg.training.validation import dice_from_counts, mean_dice, validate

    averaged = train(_config(data_root, tmp_path / "a", train={"epochs": 2, "val_every": 1, "amp": "off"}))
    ckpt = load_checkpoint(averaged.run_dir / "checkpoint_last.pt")
    assert ckpt["config"]["optim"]["ema_decay"] == 0.999 and ckpt["ema_updates"] == 4  # 2 epochs × 2 steps
    assert not _same_weights(ckpt["model"], ckpt["training_model"])
    # the logged Dice is the saved weights' Dice: re-validate them
    ds = open_dataset(data_root, "ph3d")
    model = create_model(ckpt["arch"], ckpt["in_channels"], ckpt["num_classes"], **ckpt["model_options"])
    model.load_state_dict(ckpt["model"])
    _, val = ds.fold_cases(0)
    counts = validate(model, val, (16, 16, 16), torch.device("cpu"), "softmax", 3, ds.num_classes, batch_size=2)
    logged = float(read_log(averaged.run_dir / "log.csv")[-1]["val_dice"])
    assert mean_dice(dice_from_counts(counts)) == pytest.approx(logged, abs=2e-3)

    plain = train(_config(data_root, tmp_path / "b", optim={"ema_decay": 0}))
    ckpt = load_checkpoint(plain.run_dir / "checkpoint_last.pt")
    assert "training_model" not in ckpt and "ema_updates" not in ckpt


def test_a_planned_patch_larger_than_every_case_resumes(tmp_path):
    # cases of 30×30×14 voxels: the planner's patch covers them padded to multiples of 8 (32×32×16), which
    # is larger than every case; the saved patch must pass the size check again on --resume
    from medseg.ingest import ingest
    from medseg.phantoms import write_ct_dataset

    write_ct_dataset(tmp_path / "raw", n_cases=4, shape=(30, 30, 14), orientations=("RAS",))
    ingest(tmp_path / "raw", "odd", data_root=tmp_path / "data", folds=2)
    config = _config(tmp_path / "data", tmp_path / "models", name="odd", data={"patch_size": None},
                     train={"epochs": 2, "val_every": 2})
    first = train(config, stop_after=1)
    saved = load_yaml(first.run_dir / "config.yaml")
    assert saved["data"]["patch_size"] == [32, 32, 16]
    assert train(from_dict(saved), resume=True).epochs_done == 2
    with pytest.raises(ConfigError, match="larger than every case"):
        train(_config(tmp_path / "data", tmp_path / "other", name="odd", data={"patch_size": [32, 32, 24]}))


def test_the_time_to_go_reads_in_seconds_minutes_or_hours():
    assert [duration(t) for t in (4.2, 89, 95, 3000, 5500, 59_000)] == ["4 s", "89 s", "2 min", "50 min", "1.5 h", "16.4 h"]


def test_planned_epochs_end_by_the_limit_below_the_ceiling():
    # 3 epochs took 300 s of a 600 s limit at 100 s each: 3 more fit
    assert planned_epochs(1000, 3, 600, 300, 100) == 6
    assert planned_epochs(1000, 3, 600, 301, 100) == 5
    assert planned_epochs(4, 3, 600, 300, 100) == 4  # the configured count is a ceiling
    assert planned_epochs(1000, 3, 600, 700, 100) == 3  # over the limit: stop now


def test_a_slow_early_epoch_does_not_shorten_a_timed_run_for_good(tmp_path):
    # measured on Hippocampus with --time-limit 39.5: a slow third epoch cut the plan to 29 epochs, which
    # ended at 2248 s of 2370 with room for one more; later, faster epochs must raise the count again
    from types import SimpleNamespace

    from medseg.training.distributed import DistInfo
    from medseg.training.loop import _replan_epochs

    (tmp_path / "models" / "run").mkdir(parents=True)
    config = merge(RunConfig(), {"train": {"epochs": 29, "time_limit": 39.5, "run_name": "run",
                                           "models_dir": str(tmp_path / "models")}})
    s = SimpleNamespace(config=config, info=DistInfo(), device=torch.device("cpu"))
    totals = []
    tc = _replan_epochs(s, 1000, 28, 0.0, 28 * 77.5, 28, lambda *a, **k: totals.append(k.get("total")))
    assert tc.epochs == 30 and totals == [30]  # 200 s left at 77.5 s an epoch: two more
    assert load_yaml(tmp_path / "models" / "run" / "config.yaml")["train"]["epochs"] == 30
    tc = _replan_epochs(s, 30, 29, 0.0, 29 * 80.0, 29, lambda *a, **k: None)
    assert tc.epochs == 29  # 50 s left: stop here
    assert _replan_epochs(s, 31, 20, 0.0, 20 * 10.0, 20, lambda *a, **k: None).epochs == 31  # never above the ceiling


def test_a_time_limit_shortens_the_run_and_validates_its_last_epoch(data_root, tmp_path):
    # a limit far shorter than one epoch: training ends after the first, which is validated although
    # val_every is 10, and the saved configuration holds the re-planned count (so --resume follows it)
    result = train(_config(data_root, tmp_path, train={"epochs": 50, "val_every": 10, "time_limit": 0.0001}))
    assert result.epochs_done == 1
    rows = read_log(result.run_dir / "log.csv")
    assert len(rows) == 1 and rows[0]["val_dice"] not in ("", None)
    assert load_yaml(result.run_dir / "config.yaml")["train"]["epochs"] == 1
    assert load_checkpoint(result.run_dir / "checkpoint_last.pt")["config"]["train"]["epochs"] == 1
    again = train(from_dict(load_yaml(result.run_dir / "config.yaml")), resume=True)
    assert again.epochs_done == 1  # the limit is spent: nothing more runs


def test_random_states_round_trip_through_a_safe_checkpoint(tmp_path):
    import random

    import numpy as np

    from medseg.runs import save_checkpoint

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    save_checkpoint({"model": {}, "rng": rng_state()}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])  # weights_only=True load
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_a_full_disk_keeps_the_previous_checkpoint(data_root, tmp_path, monkeypatch):
    config = _config(data_root, tmp_path, train={"epochs": 2})
    first = train(config, stop_after=1)
    before = (first.run_dir / "checkpoint_last.pt").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        train(config, resume=True)
    message = str(info.value)
    assert "No space left on device" in message and "checkpoint_last.pt" in message and "\n" not in message
    monkeypatch.undo()
    assert (first.run_dir / "checkpoint_last.pt").read_bytes() == before
    assert load_checkpoint(first.run_dir / "checkpoint_last.pt")["epoch"] == 1
    assert not [p for p in first.run_dir.iterdir() if "partial" in p.name]


def _nan_loss_on(monkeypatch, bad_calls):
    """Make the loss NaN on the given (0-based) calls of ``compute_loss``; ``None``: on every call."""
    from medseg.training import losses

    real, calls = losses.compute_loss, []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * math.nan if bad_calls is None or len(calls) - 1 in bad_calls else value

    monkeypatch.setattr(losses, "compute_loss", loss)


def test_a_step_with_nan_gradients_is_skipped(data_root, tmp_path, monkeypatch):
    _nan_loss_on(monkeypatch, {1, 2})
    result = train(_config(data_root, tmp_path, data={"iterations_per_epoch": 4}))
    assert all(torch.isfinite(v).all() for v in _weights(result.run_dir).values() if v.is_floating_point())
    row = read_log(result.run_dir / "log.csv")[0]
    assert math.isfinite(float(row["train_loss"])) and row["skipped_steps"] == "2"  # the loss of the good steps


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_its_checkpoint(data_root, tmp_path, monkeypatch):
    config = _config(data_root, tmp_path, data={"iterations_per_epoch": MAX_NONFINITE_STEPS // 2 + 1},
                     train={"epochs": 3})
    _nan_loss_on(monkeypatch, set(range(MAX_NONFINITE_STEPS // 2 + 1, 10**6)))  # from the second epoch on
    with pytest.raises(TrainingError) as info:
        train(config)
    message = str(info.value)
    assert "diverged in epoch 3" in message and "\n" not in message and str(config.run_dir) in message
    checkpoint = load_checkpoint(config.run_dir / "checkpoint_last.pt")
    assert checkpoint["epoch"] == 2  # the skipped steps left the weights finite, and they were saved
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_a_corrupt_checkpoint_is_refused_on_resume(data_root, tmp_path):
    config = _config(data_root, tmp_path, train={"epochs": 2})
    result = train(config, stop_after=1)
    path = result.run_dir / "checkpoint_last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(config, resume=True)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_an_existing_run_is_not_overwritten_without_asking(data_root, tmp_path):
    config = _config(data_root, tmp_path, data={"iterations_per_epoch": 1})
    train(config)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(config)
    assert train(config, overwrite=True).epochs_done == 1


def test_bad_requests_are_one_line_errors(data_root, tmp_path):
    with pytest.raises(InputError, match="dataset 'nope' does not exist"):
        train(_config(data_root, tmp_path, name="nope"))
    with pytest.raises(ConfigError, match="3D network .* 2D images"):
        train(_config(data_root, tmp_path, name="ph2d", arch="unet3d_tiny"))
    with pytest.raises(ConfigError, match="larger than every case"):
        train(_config(data_root, tmp_path, data={"patch_size": [64, 64, 64]}))
    with pytest.raises(ConfigError, match="multiple of 8"):
        train(_config(data_root, tmp_path, data={"patch_size": [12, 16, 16]}))
    with pytest.raises(ConfigError, match="fold 5 does not exist"):
        train(_config(data_root, tmp_path, data={"fold": 5}))
    with pytest.raises(UsageError, match="unknown architecture 'unet9d'.*unet3d_tiny"):
        train(_config(data_root, tmp_path, arch="unet9d"))
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(_config(data_root, tmp_path / "empty"), resume=True)
    assert not (tmp_path / "ph3d_unet3d_tiny_fold0").exists()
