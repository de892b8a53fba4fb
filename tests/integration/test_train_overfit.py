"""Training learns: a tiny 3D U-Net overfits one phantom; a tiny UNeXt trains on real Kvasir images."""

from __future__ import annotations

import pytest

from medseg.config import RunConfig, merge


@pytest.mark.slow
def test_unet3d_tiny_overfits_one_phantom(tmp_path):
    from medseg.ingest import ingest
    from medseg.phantoms import write_ct_dataset
    from medseg.training import train

    write_ct_dataset(tmp_path / "raw", n_cases=1, shape=(32, 32, 16), orientations=("RAS",))
    ingest(tmp_path / "raw", "one", data_root=tmp_path / "data", folds=2)
    config = merge(RunConfig(), {
        "data": {"name": "one", "data_dir": str(tmp_path / "data"), "fold": "all", "workers": 0, "batch_size": 2,
                 "iterations_per_epoch": 10},
        "model": {"arch": "unet3d_tiny"},
        "augment": {"enabled": False},
        "optim": {"optimizer": "adam", "lr": 1e-2, "schedule": "constant"},
        "train": {"epochs": 10, "val_every": 2, "models_dir": str(tmp_path / "models"), "device": "cpu"},
    })
    result = train(config)
    assert result.config.data.patch_size == (32, 32, 16)  # the planner took the whole case
    assert result.best_dice > 0.9


@pytest.mark.slow
def test_unext_tiny_trains_on_real_kvasir_images(shared_data, tmp_path):
    from medseg.ingest import ingest
    from medseg.runs import load_checkpoint
    from medseg.training import train
    from medseg.training.curves import read_log

    ingest(shared_data / "2d" / "kvasir_seg", "kv", data_root=tmp_path / "data", folds=2, max_cases=6)
    config = merge(RunConfig(), {
        "data": {"name": "kv", "data_dir": str(tmp_path / "data"), "workers": 0, "batch_size": 2},
        "model": {"arch": "unext_tiny"},
        "train": {"epochs": 1, "models_dir": str(tmp_path / "models"), "device": "cpu"},
    })
    result = train(config)
    assert result.config.data.patch_size == (256, 256)  # the whole 256×256 image
    assert result.config.data.iterations_per_epoch == 2  # one pass over the 3 training images, batches of 2
    ckpt = load_checkpoint(result.run_dir / "checkpoint_best.pt")
    assert ckpt["in_channels"] == 3 and ckpt["num_classes"] == 2 and ckpt["spatial_dims"] == 2
    assert ckpt["plan"]["normalization"][0]["scheme"] == "rgb"
    rows = read_log(result.run_dir / "log.csv")
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_dice"]) <= 1.0
