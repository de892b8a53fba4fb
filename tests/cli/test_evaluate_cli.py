"""`medseg evaluate`: files, folders, report files, and one line + exit 1 for each bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.io import Volume, write_nifti

runner = CliRunner()
AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])


def write_label(path: Path, array: np.ndarray, affine=AFFINE) -> Path:
    write_nifti(Volume(array[None], affine), path)
    return path


def labels(shift: int = 0, dtype=np.uint8) -> np.ndarray:
    array = np.zeros((12, 10, 6), dtype)
    array[2 + shift:6 + shift, 2:6, 1:4] = 1
    array[8:10, 7:9, 2:4] = 2
    return array


@pytest.fixture
def pair(tmp_path):
    return write_label(tmp_path / "pred.nii.gz", labels(1)), write_label(tmp_path / "ref.nii.gz", labels())


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_two_files_prints_table(pair):
    result = runner.invoke(app, ["evaluate", str(pair[0]), str(pair[1]), "--labels", "big=1,small=2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "big" in result.stdout and "small" in result.stdout and "hd95" in result.stdout
    assert "0.7500 ± 0.0000" in result.stdout  # Dice of the shifted block


def test_folders_csv_json_and_plots(tmp_path):
    for case in ("a", "b", "c"):
        write_label(tmp_path / "ref" / f"{case}.nii.gz", labels())
    for case in ("a", "b", "zz"):
        write_label(tmp_path / "pred" / f"{case}.nii.gz", labels(1))
    out = tmp_path / "report.csv"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out),
                                 "--plots", str(tmp_path / "plots"), "--nsd-tolerance", "1.5", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "missing predictions (1): c" in result.stdout
    assert "extra predictions without reference (1): zz" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert [(r["case"], r["label"]) for r in rows] == [("a", "label_1"), ("a", "label_2"), ("b", "label_1"), ("b", "label_2")]
    assert "nsd_1.5mm" in rows[0] and float(rows[0]["dice"]) == pytest.approx(0.75)
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["missing"] == ["c"] and summary["extra"] == ["zz"] and summary["num_cases"] == 2
    assert (tmp_path / "plots" / "dice.png").stat().st_size > 0 and (tmp_path / "plots" / "nsd_1.5mm.png").exists()


def test_json_report_and_overwrite(pair, tmp_path):
    out = tmp_path / "r.json"
    args = ["evaluate", str(pair[0]), str(pair[1]), "-o", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    report = json.loads(out.read_text())
    assert len(report["cases"]) == 2 and report["cases"][0]["status"] == "ok"
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already exists" in error_line(again) and str(out) in error_line(again)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_missing_file_exit_1(pair, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.nii.gz"), str(pair[1])])
    assert result.exit_code == 1
    assert error_line(result) == f"error: {tmp_path / 'nope.nii.gz'}: file or folder does not exist"


def test_grid_mismatch_exit_1_names_both_files(pair, tmp_path):
    other = write_label(tmp_path / "other.nii.gz", labels(), np.diag([1.0, 1.0, 2.0, 1.0]))
    result = runner.invoke(app, ["evaluate", str(other), str(pair[1])])
    assert result.exit_code == 1
    line = error_line(result)
    assert str(other) in line and str(pair[1]) in line and "spacing" in line
    assert runner.invoke(app, ["evaluate", str(other), str(pair[1]), "--resample-pred"]).exit_code == 0


def test_non_integer_labels_exit_1(pair, tmp_path):
    halves = labels(dtype=np.float32)
    halves[0, 0, 0] = 0.5
    bad = write_label(tmp_path / "half.nii.gz", halves)
    result = runner.invoke(app, ["evaluate", str(bad), str(pair[1])])
    assert result.exit_code == 1
    assert error_line(result) == f"error: {bad}: label map holds non-integer values"


def test_label_not_in_list_exit_1(pair, tmp_path):
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"background": 0, "big": 1}}))
    result = runner.invoke(app, ["evaluate", str(pair[0]), str(pair[1]), "--labels", str(dataset)])
    assert result.exit_code == 1
    assert "label values [2] are not in the label list (big=1)" in error_line(result)


def test_usage_errors_exit_2(pair, tmp_path):
    base = ["evaluate", str(pair[0]), str(pair[1])]
    assert runner.invoke(app, [*base, "--labels", "big"]).exit_code == 2
    assert runner.invoke(app, [*base, "--nsd-tolerance", "x"]).exit_code == 2
    assert runner.invoke(app, [*base, "-o", str(tmp_path / "r.txt")]).exit_code == 2
    assert not (tmp_path / "r.txt").exists()


def test_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = "import sys; from medseg.cli import evaluate; print(any(m in sys.modules for m in ('scipy', 'torch', 'medseg.metrics')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_2d_png_masks_in_folders(tmp_path):
    from PIL import Image

    ref = np.zeros((20, 16), np.uint8)  # (rows, columns) as stored in the PNG
    ref[4:10, 3:9] = 1
    pred = np.roll(ref, 2, axis=0)  # 2 rows down
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(ref * 255).save(tmp_path / "ref" / "img1.png")
    Image.fromarray(pred * 255).save(tmp_path / "pred" / "img1.png")
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["cases"]
    assert row["case"] == "img1" and row["label"] == "label_1"
    assert (row["tp"], row["fp"], row["fn"]) == (24, 12, 12)
    assert row["hd"] == 2.0 and row["dice"] == pytest.approx(48 / 72)
