"""`medseg evaluate --overlay`: pictures per case and an index page with each case's Dice."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from medseg.cli import app
from medseg.io import write_volume
from medseg.phantoms import ct_phantom


def test_evaluate_overlay_writes_pictures_and_index(tmp_path):
    for folder in ("pred", "ref", "img"):
        (tmp_path / folder).mkdir()
    for i, orientation in enumerate(("LPS", "oblique")):
        ct, seg = ct_phantom(i, shape=(32, 32, 12), orientation=orientation)
        pred = seg.with_array(np.where(seg.array == 3, 0, seg.array).astype(np.uint8))  # misses the kidneys
        write_volume(ct, tmp_path / "img" / f"case{i}_0000.nii.gz")
        write_volume(seg, tmp_path / "ref" / f"case{i}.nii.gz")
        write_volume(pred, tmp_path / "pred" / f"case{i}.nii.gz")
    out = tmp_path / "overlays"
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "liver=1,spleen=2,kidney=3",
            "--images", str(tmp_path / "img"), "--overlay", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["case0.png", "case1.png"]
    index = (out / "index.html").read_text()
    assert "case0" in index and "case1" in index
    assert "0.667" in index  # liver and spleen perfect, kidney missed: mean Dice 2/3
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
