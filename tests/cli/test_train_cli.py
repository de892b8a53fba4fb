"""`medseg train`: flags → configuration, exit codes and one-line errors, a real tiny run and resume."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from medseg.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """data/ph3d: 4 CT phantoms of 32×32×16 ingested with 2 folds."""
    from medseg.ingest import ingest
    from medseg.phantoms import write_ct_dataset

    root = tmp_path_factory.mktemp("train_cli")
    write_ct_dataset(root / "raw", n_cases=4, shape=(32, 32, 16), orientations=("RAS",))
    ingest(root / "raw", "ph3d", data_root=root / "data", folds=2)
    return root / "data"


def _invoke(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def _one_line_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def captured(monkeypatch):
    """Replace the library's train() by a recorder: checks what the CLI asks for, without training."""
    calls = []

    def fake_train(config, **kwargs):
        calls.append((config, kwargs))
        raise SystemExit(0)

    monkeypatch.setattr("medseg.training.train", fake_train, raising=False)
    return calls


def test_flags_and_yaml_become_the_configuration(tmp_path, captured):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  epochs: 9\n  seed: 4\noptim:\n  lr: 0.5\n")
    result = _invoke("liver", "--arch", "unet3d", "--fold", "all", "--config", yaml_file, "--epochs", "3",
                     "--patch-size", "64x64x32", "--batch-size", "2", "--workers", "0", "--device", "cpu",
                     "--iterations-per-epoch", "5", "--val-every", "2", "--run-name", "r1", "--compile")
    assert result.exit_code == 0, result.output
    (config, kwargs), = captured
    assert kwargs == {"resume": False, "overwrite": False}
    assert config.data.name == "liver" and config.model.arch == "unet3d" and config.data.fold == "all"
    assert config.train.epochs == 3 and config.train.seed == 4 and config.optim.lr == 0.5  # flag > YAML > default
    assert config.data.patch_size == (64, 64, 32) and config.data.batch_size == 2 and config.data.workers == 0
    assert (config.data.iterations_per_epoch, config.train.val_every, config.train.run_name) == (5, 2, "r1")
    assert config.model.compile and config.train.device == "cpu"


def test_unknown_architecture_is_a_usage_error_listing_the_names():
    result = _invoke("liver", "--arch", "resnet")
    _one_line_error(result, 2, "unknown architecture 'resnet'")
    assert "unet3d" in result.stderr and "unext" in result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--fold", "first"], "--fold"),
    (["--patch-size", "big"], "--patch-size"),
])
def test_malformed_options_are_usage_errors(args, fragment):
    _one_line_error(_invoke("liver", "--arch", "unet3d", *args), 2, fragment)


def test_missing_dataset_is_one_line(tmp_path):
    result = _invoke("nothere", "--arch", "unet3d_tiny", "--data-dir", tmp_path, "--models-dir", tmp_path)
    _one_line_error(result, 1, "dataset 'nothere' does not exist")


def test_bad_yaml_key_is_one_line(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("data:\n  batchsize: 2\n")
    _one_line_error(_invoke("liver", "--arch", "unet3d", "--config", yaml_file), 1, "unknown key 'data.batchsize'")


@pytest.mark.slow
def test_train_resume_and_refusals(data_root, tmp_path):
    common = ["ph3d", "--arch", "unet3d_tiny", "--data-dir", data_root, "--models-dir", tmp_path, "--device", "cpu",
              "--patch-size", "16x16x16", "--batch-size", "2", "--workers", "0", "--iterations-per-epoch", "1"]
    result = _invoke(*common, "--epochs", "1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "ph3d_unet3d_tiny_fold0"
    assert "1 epochs" in result.stdout and str(run) in result.stdout
    assert {p.name for p in run.iterdir()} == {"config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "log.csv",
                                               "curves.png"}

    _one_line_error(_invoke(*common, "--epochs", "1"), 1, "run folder already exists")
    assert _invoke(*common, "--resume", "--lr-typo").exit_code == 2  # typer's own usage error
    changed = _invoke(*common, "--resume", "--epochs", "2", "--batch-size", "4")
    _one_line_error(changed, 2, "--batch-size cannot change on --resume (the run has 2)")
    _one_line_error(_invoke(*common, "--resume", "--config", run / "config.yaml"), 2, "--config cannot be used")

    resumed = _invoke(*common, "--resume", "--epochs", "3")  # the same flags again are fine
    assert resumed.exit_code == 0, resumed.output
    assert (run / "log.csv").read_text().count("\n") == 4  # header + 3 epochs
    said = " ".join(resumed.stderr.split())  # the console wraps long lines
    assert re.search(r"epoch 2/3: [^;]*; about \d+ s to go", said), said  # the time to go, from epoch 2's time
    assert "to go" not in said.split("epoch 3/3")[1]

    (run / "checkpoint_last.pt").write_bytes(b"not a checkpoint")
    broken = _invoke("ph3d", "--arch", "unet3d_tiny", "--data-dir", data_root, "--models-dir", tmp_path,
                     "--resume", "--epochs", "4")
    _one_line_error(broken, 1, "checkpoint_last.pt")


def test_3d_network_on_2d_data_is_refused(tmp_path):
    from medseg.ingest import ingest
    from medseg.phantoms import write_image2d_dataset

    write_image2d_dataset(tmp_path / "raw", n_cases=2, size=(32, 32))
    ingest(tmp_path / "raw", "flat", data_root=tmp_path / "data", folds=2)
    result = _invoke("flat", "--arch", "unet3d_tiny", "--data-dir", tmp_path / "data", "--models-dir", tmp_path)
    _one_line_error(result, 1, "3D network")
