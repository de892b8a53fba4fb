"""`medseg models`: the architecture table, its JSON form, and the exit code of an unknown architecture."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from medseg.cli import app, run_command

runner = CliRunner()
FULL = ["cm_mlp", "unet", "unet3d", "unext", "vnet"]


def test_models_table_lists_every_architecture():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in FULL:
        assert name in result.output
    assert "_tiny" not in result.output
    assert "1.47 M" in result.output  # UNeXt, counted for 1 input channel and 2 classes
    assert "in_channels=1, num_classes=2" in result.output


def test_models_json_includes_tiny_variants_on_request():
    result = runner.invoke(app, ["models", "--json", "--all"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(FULL) <= set(rows) and "unext_tiny" in rows
    assert rows["unet3d"]["spatial_dims"] == 3 and rows["unet"]["spatial_dims"] == 2
    assert rows["unet3d"]["parameters"] == pytest.approx(19.07e6, rel=0.01)
    assert rows["unext_tiny"]["parameters"] < rows["unext"]["parameters"] / 10
    assert rows["unext"]["size_multiple"] == 32 and rows["cm_mlp"]["deep_supervision"] is True


def test_unknown_architecture_maps_to_exit_code_2(capsys):
    from medseg import progress
    from medseg.models import create_model

    try:
        with pytest.raises(typer.Exit) as info:
            run_command(create_model, "segformer", 1, 2)
    finally:
        progress.enable(False)  # run_command turns progress on for the CLI
    assert info.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "segformer" in err and "unext" in err
