"""Volume geometry helpers, the atomic writers and checkpoint safety."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import CheckpointError
from medseg.io import Volume, read_volume, write_volume
from medseg.io.atomic import atomic_dir, atomic_path
from medseg.phantoms import ct_phantom, orientation_affine


def test_spacing_and_axcodes_follow_affine():
    affine = orientation_affine((0.5, 0.8, 3.0), "LPS")
    vol = Volume(np.zeros((1, 4, 5, 6), np.float32), affine)
    assert vol.spacing == pytest.approx((0.5, 0.8, 3.0))
    assert vol.axcodes() == "LPS"
    origin, spacing, direction = vol.itk_geometry()
    assert spacing == pytest.approx((0.5, 0.8, 3.0))
    # LPS voxel axes are the identity in ITK's LPS world.
    assert np.allclose(np.reshape(direction, (3, 3)), np.eye(3))


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAS", "oblique"])
def test_nifti_round_trip_keeps_geometry(tmp_path, orientation):
    ct, seg = ct_phantom(3, shape=(24, 20, 10), orientation=orientation)
    write_volume(ct, tmp_path / "ct.nii.gz")
    back = read_volume(tmp_path / "ct.nii.gz")
    assert np.array_equal(back.array, ct.array)
    assert np.allclose(back.affine, ct.affine, atol=1e-5)
    assert back.same_grid(seg)


def test_phantom_anatomy_is_orientation_independent():
    _, ras = ct_phantom(1, shape=(32, 32, 16), orientation="RAS")
    _, lps = ct_phantom(1, shape=(32, 32, 16), orientation="LPS")
    # LPS storage is RAS with the first two axes reversed.
    assert np.array_equal(ras.array, lps.array[:, ::-1, ::-1, :])
    assert set(np.unique(ras.array)) == {0, 1, 2, 3}


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "dataset"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("x")
    assert (target / "a").read_text() == "x"


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_needing_code_is_refused(tmp_path):
    import torch

    from medseg.runs import load_checkpoint, save_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="code execution"):
        load_checkpoint(path)
    good = save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "good.pt")
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.ones(2))
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "trunc.pt")
