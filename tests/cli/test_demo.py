"""`medseg demo --quick`: the whole pipeline end to end on CPU, every promised file written."""

from __future__ import annotations

import csv
import math

import pytest
from typer.testing import CliRunner

from medseg.cli import app


@pytest.mark.slow
def test_quick_demo_writes_every_promised_file(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--quick", "--root", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "demo" / "dataset.json").is_file()
    run = tmp_path / "models" / "demo"
    for name in ("config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "log.csv", "curves.png"):
        assert (run / name).is_file(), name
    predictions = sorted((tmp_path / "predictions" / "demo").glob("phantom_*.nii.gz"))
    assert len(predictions) == 2
    overlays = tmp_path / "overlays" / "demo"
    assert len(list(overlays.glob("phantom_*.png"))) == 2
    index = (overlays / "index.html").read_text()
    assert all(p.name.replace(".nii.gz", ".png") in index for p in predictions)
    rows = list(csv.DictReader((tmp_path / "predictions" / "demo" / "report.csv").open()))
    assert {r["label"] for r in rows} == {"liver", "spleen", "kidney"}
    assert len(rows) == 6
    for row in rows:  # sensible values: overlap metrics are fractions, whatever the briefly-trained model did
        for metric in ("dice", "iou", "sensitivity", "specificity"):
            value = float(row[metric]) if row[metric] not in ("", "nan") else math.nan
            assert math.isnan(value) or 0.0 <= value <= 1.0
    assert "demo finished" in result.output
