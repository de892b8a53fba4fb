"""The Predictor: checkpoints, channels, slice-wise 2D networks, TTA, outputs on the scan grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference_helpers import ValueToClass, ct_plan, label_plan, save_tiny_checkpoint  # noqa: E402

from medseg.errors import CheckpointError, ConfigError, GeometryError, InputError, UsageError  # noqa: E402
from medseg.inference.predictor import Predictor  # noqa: E402
from medseg.io import write_volume  # noqa: E402
from medseg.io.volume import Volume  # noqa: E402
from medseg.phantoms import ct_phantom, orientation_affine  # noqa: E402


def _label_scan(orientation="LPS", shape=(30, 26, 12), spacing=(1.5, 1.5, 3.0)):
    """A 'scan' whose intensities are its own labels, and those labels."""
    _, seg = ct_phantom(seed=5, shape=shape, spacing=spacing, orientation=orientation)
    return Volume(seg.array.astype(np.float32), seg.affine, source="labels-as-image"), seg


@pytest.mark.parametrize("flips,scales,dims", [("none", (1.0,), 3), ("all", (1.0,), 3), ("inplane", (1.0,), 2)])
def test_exact_network_gives_exact_labels_on_the_scan_grid(flips, scales, dims):
    scan, seg = _label_scan()
    predictor = Predictor.from_model(ValueToClass(4, spatial_dims=dims), label_plan(4, scan.spacing),
                                     patch_size=(16,) * dims, tta=True, flips=flips, scales=scales, batch_size=3)
    prediction = predictor.predict(scan, probabilities=True, uncertainty=True)
    assert prediction.labels.same_grid(scan, atol=0)
    assert prediction.labels.array.dtype == np.uint8
    assert np.array_equal(prediction.labels.array, seg.array)
    probs = prediction.probabilities.array
    assert probs.shape == (4, *scan.spatial_shape) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    unc = prediction.uncertainty.array
    assert unc.shape == (1, *scan.spatial_shape) and 0 <= unc.min() and unc.max() <= 1


def test_variance_uncertainty_and_keep_largest():
    scan, seg = _label_scan(orientation="RAS")
    noisy = scan.array.copy()
    noisy[0, 2, 2, 2] = 2.0  # a stray voxel of class 2 far from the spleen
    predictor = Predictor.from_model(ValueToClass(4), label_plan(4, scan.spacing), patch_size=(16, 16, 8),
                                     tta=True, flips="all", uncertainty="variance", keep_largest=True)
    prediction = predictor.predict(scan.with_array(noisy), uncertainty=True)
    from medseg.inference.postprocess import keep_largest_component

    assert prediction.labels.array[0, 2, 2, 2] == 0  # the stray voxel is removed
    assert np.array_equal(prediction.labels.array[0], keep_largest_component(seg.array[0]))  # one kidney left
    assert float(prediction.uncertainty.array.max()) < 1e-4  # all TTA members agree
    plain = Predictor.from_model(ValueToClass(4), label_plan(4, scan.spacing), patch_size=(16, 16, 8), tta=False)
    assert plain.predict(scan.with_array(noisy)).labels.array[0, 2, 2, 2] == 2


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "models" / "run1"
    save_tiny_checkpoint(folder / "checkpoint_best.pt", ct_plan(spacing=(3.0, 3.0, 3.0)), patch_size=(16, 16, 16))
    return folder


def test_checkpoint_predictor_writes_the_scan_geometry(run, tmp_path):
    ct, _ = ct_phantom(seed=1, shape=(32, 28, 14), orientation="oblique")
    path = write_volume(ct, tmp_path / "ct.nii.gz")
    predictor = Predictor(run, device="cpu", tta=False)
    assert predictor.checkpoint_path == run / "checkpoint_best.pt"
    assert "unet3d_tiny (3D) on cpu in " in predictor.describe()
    prediction = predictor.predict(str(path), probabilities=True)
    assert prediction.labels.spatial_shape == ct.spatial_shape
    np.testing.assert_allclose(prediction.labels.affine, ct.affine, atol=1e-6)
    assert set(np.unique(prediction.labels.array)) <= {0, 1, 2, 3}
    assert len(prediction.info["preprocessed_shape"]) == 3
    # Same checkpoint, TTA with 2 scales × 4 flips: still the scan's grid, probabilities still sum to 1.
    tta = Predictor(run / "checkpoint_best.pt", device="cpu", tta=True, scales="0.8,1", flips="inplane")
    probs = tta.predict(ct, probabilities=True).probabilities.array.astype(np.float32)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=5e-3)
    assert not np.allclose(probs, prediction.probabilities.array.astype(np.float32), atol=1e-3)


def test_bad_checkpoints(tmp_path, run):
    from medseg.runs import save_checkpoint

    with pytest.raises(CheckpointError, match="no checkpoint_best.pt"):
        Predictor(tmp_path, device="cpu")
    ckpt = torch.load(run / "checkpoint_best.pt", weights_only=True)
    torch.save({**ckpt, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="checkpoint format 99 is not supported"):
        Predictor(tmp_path / "future.pt", device="cpu")
    save_checkpoint({k: v for k, v in ckpt.items() if k not in ("plan", "format_version")}, tmp_path / "noplan.pt")
    with pytest.raises(CheckpointError, match="lacks plan"):
        Predictor(tmp_path / "noplan.pt", device="cpu")
    wrong_arch = {**{k: v for k, v in ckpt.items() if k != "format_version"}, "arch": "unet_tiny"}
    save_checkpoint(wrong_arch, tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match="do not fit architecture 'unet_tiny'"):
        Predictor(tmp_path / "arch.pt", device="cpu")


def test_channels_from_files_and_mismatches(tmp_path):
    scan, seg = _label_scan(orientation="RAS")
    plan = {**label_plan(4, scan.spacing), "num_channels": 2, "channel_names": ["a", "b"],
            "normalization": [{"scheme": "none"}] * 2}
    first = write_volume(scan, tmp_path / "c_0000.nii.gz")
    second = write_volume(scan.with_array(np.zeros_like(scan.array)), tmp_path / "c_0001.nii.gz")
    predictor = Predictor.from_model(ValueToClass(4), plan, patch_size=(16, 16, 8), tta=False)
    assert np.array_equal(predictor.predict([first, second]).labels.array, seg.array)
    with pytest.raises(InputError, match=r"1 channel\(s\) but the model takes 2 \(a, b\)"):
        predictor.predict(first)
    moved = Volume(scan.array, scan.affine @ np.diag([1, 1, 1.5, 1]), source="moved")
    third = write_volume(moved, tmp_path / "m_0001.nii.gz")
    with pytest.raises(GeometryError, match="channel does not overlay the image"):
        predictor.predict([first, third])
    # A channel file stored with flipped axes (same points, as ingest accepts it) is reoriented exactly.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = scan.spatial_shape[0] - 1
    flipped = Volume(np.zeros_like(scan.array)[:, ::-1].copy(), scan.affine @ flip, source="flipped")
    fourth = write_volume(flipped, tmp_path / "f_0001.nii.gz")
    assert np.array_equal(predictor.predict([first, fourth]).labels.array, seg.array)
    with pytest.raises(InputError, match="2D image given to a model trained on 3D"):
        predictor.predict(Volume(np.zeros((2, 8, 8), np.float32), np.eye(4)))


def test_2d_images_with_a_2d_plan():
    rng = np.random.default_rng(0)
    labels = (rng.random((1, 40, 24)) > 0.7).astype(np.float32)
    image = Volume(labels, np.eye(4), source="img.png")
    predictor = Predictor.from_model(ValueToClass(2, spatial_dims=2), label_plan(2, (1.0, 1.0), dims=2),
                                     patch_size=(16, 16), tta=True, flips="all", crf=False)
    prediction = predictor.predict(image, probabilities=True)
    assert prediction.labels.spatial_shape == (40, 24)
    assert np.array_equal(prediction.labels.array, labels.astype(np.uint8))
    with pytest.raises(InputError, match="3D image"):
        predictor.predict(Volume(np.zeros((1, 8, 8, 3), np.float32), np.eye(4)))


def test_crf_runs_inside_the_predictor():
    scan, seg = _label_scan(orientation="RAS")
    predictor = Predictor.from_model(ValueToClass(4, sharpness=0.8), label_plan(4, scan.spacing),
                                     patch_size=(16, 16, 8), tta=False, crf=True)
    prediction = predictor.predict(scan)
    assert prediction.info["crf_seconds"] > 0
    assert np.array_equal(prediction.labels.array, seg.array)


def test_options_are_validated():
    plan = label_plan(2, (1, 1, 1))
    for bad in ({"flips": "sideways"}, {"scales": "0"}, {"overlap": 1.0}, {"uncertainty": "mutual"}):
        with pytest.raises(UsageError):
            Predictor.from_model(ValueToClass(2), plan, patch_size=(8, 8, 8), **bad)
    with pytest.raises(UsageError, match="patch size"):
        Predictor.from_model(ValueToClass(2), plan, patch_size=(8, 8))
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
        Predictor.from_model(ValueToClass(2), plan, patch_size=(8, 8, 8), device="tpu")


def test_label_values_are_class_indices_and_sigmoid_models():
    rng = np.random.default_rng(1)
    values = np.where(rng.random((1, 20, 18, 8)) > 0.6, 2, 0).astype(np.float32)
    scan = Volume(values, np.diag([1.0, 1.0, 2.0, 1.0]), source="sparse-labels")
    plan = {**label_plan(3, scan.spacing), "labels": {"background": 0, "two": 2}, "num_classes": 3}
    predictor = Predictor.from_model(ValueToClass(3), plan, patch_size=(16, 16, 8), tta=False)
    assert predictor.num_classes == 3
    assert np.array_equal(predictor.predict(scan).labels.array, values.astype(np.uint8))

    class Binary(torch.nn.Module):
        spatial_dims = 3

        def forward(self, x):
            return 20 * (x[:, :1] - 1.0)  # one logit channel: foreground where the value is 2

    binary = Predictor.from_model(Binary(), {**plan, "labels": {"background": 0, "fg": 1}, "num_classes": 2},
                                  patch_size=(16, 16, 8), activation="sigmoid", tta=True, flips="inplane")
    prediction = binary.predict(scan, probabilities=True)
    assert np.array_equal(prediction.labels.array, (values > 0).astype(np.uint8))
    assert prediction.probabilities.num_channels == 2


def test_prediction_leaves_ieee_arithmetic_on_this_thread():
    """Subnormals are flushed during the network passes only: afterwards numpy (and scipy's cKDTree, which
    crashed under the flag) compute as before."""
    scan, _ = _label_scan()
    predictor = Predictor.from_model(ValueToClass(4), label_plan(4, scan.spacing), patch_size=(16, 16, 16))
    predictor.predict(scan)
    tiny = np.array([1e-39], np.float32)
    assert (tiny * np.float32(1.0)).view(np.int32)[0] != 0
