"""Case matching, label lists and checks, folder evaluation, summaries and report files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import GeometryError, InputError, LabelError, OutputExistsError, UsageError
from medseg.io import Volume, write_nifti
from medseg.metrics import case_name, evaluate, match_cases, parse_labels, read_dataset_labels
from medseg.metrics.labels import label_array
from medseg.metrics.report import csv_text, report_json, summarize, write_outputs

AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])


def write_label(path: Path, array: np.ndarray, affine=AFFINE) -> Path:
    write_nifti(Volume(array[None], affine, source=str(path)), path)
    return path


def cubes(shift: int = 0) -> np.ndarray:
    """A 12×10×6 label map: a 4×4×3 block (1) and a 2×2×2 block (2); label 1 shifted along x by ``shift``."""
    array = np.zeros((12, 10, 6), np.uint8)
    array[2 + shift:6 + shift, 2:6, 1:4] = 1
    array[8:10, 7:9, 2:4] = 2
    return array


def test_case_names():
    assert case_name("liver_3_0000.nii.gz") == "liver_3"
    assert case_name("dir/liver_3.nii.gz") == "liver_3"
    assert case_name("a.NII") == "a"
    assert case_name("polyp_12.png") == "polyp_12"
    assert case_name("seg.dcm") == "seg"
    assert case_name("case_0001.nii.gz") == "case_0001"  # only the _0000 channel tag is removed


def test_match_folders_lists_missing_and_extra(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "x.nii.gz", ".hidden.nii.gz", "notes.txt"):
        (tmp_path / "pred" / name).write_bytes(b"")
    for name in ("a_0000.nii.gz", "b.nii.gz", "c.nii.gz"):
        (tmp_path / "ref" / name).write_bytes(b"")
    match = match_cases(tmp_path / "pred", tmp_path / "ref")
    assert [case for case, _, _ in match.pairs] == ["a", "b"]
    assert match.pairs[0][2].name == "a_0000.nii.gz"
    assert match.missing == ["c"] and match.extra == ["x"]


def test_match_errors(tmp_path):
    (tmp_path / "f.nii.gz").write_bytes(b"")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="does not exist"):
        match_cases(tmp_path / "nope.nii.gz", tmp_path / "f.nii.gz")
    with pytest.raises(InputError, match="two files or two folders"):
        match_cases(tmp_path / "d", tmp_path / "f.nii.gz")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "k.nii").write_bytes(b"")
    (tmp_path / "e" / "k.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="two files for case 'k'"):
        match_cases(tmp_path / "e", tmp_path / "e")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "q.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no reference images"):
        match_cases(tmp_path / "p", tmp_path / "d")
    (tmp_path / "d" / "r.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no prediction matches"):
        match_cases(tmp_path / "p", tmp_path / "d")


def test_parse_labels(tmp_path):
    assert parse_labels(None) is None
    assert parse_labels("spleen=2, liver=1") == {"liver": 1, "spleen": 2}
    nnunet = tmp_path / "dataset.json"
    nnunet.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    assert parse_labels(str(nnunet)) == {"liver": 1, "tumour": 2}
    decathlon = tmp_path / "decathlon.json"
    decathlon.write_text(json.dumps({"labels": {"0": "background", "1": "anterior", "2": "posterior"}}))
    assert read_dataset_labels(decathlon) == {"anterior": 1, "posterior": 2}
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2]}}))
    with pytest.raises(LabelError, match="region-based"):
        parse_labels(regions)
    for bad in ("liver", "liver=x", "=1", "a=1,b=1", "a=0"):
        with pytest.raises(UsageError):
            parse_labels(bad)
    with pytest.raises(InputError, match="does not exist"):
        parse_labels(tmp_path / "missing.json")


def test_label_array_checks():
    affine = np.eye(4)
    floats = np.zeros((1, 3, 3, 2), np.float32)
    floats[0, 1, 1, 1] = 4.0
    out = label_array(Volume(floats, affine, source="f.nii.gz"))
    assert out.dtype == np.uint8 and out[1, 1, 1] == 4
    floats[0, 0, 0, 0] = 0.5
    with pytest.raises(LabelError, match="f.nii.gz: label map holds non-integer values"):
        label_array(Volume(floats, affine, source="f.nii.gz"))
    with pytest.raises(LabelError, match="negative"):
        label_array(Volume(np.full((1, 2, 2, 2), -1, np.int16), affine, source="n.nii.gz"))
    with pytest.raises(LabelError, match="one label channel, found 2"):
        label_array(Volume(np.zeros((2, 2, 2, 2), np.uint8), affine, source="c.nii.gz"))
    big = np.zeros((1, 2, 2, 2), np.int64)
    big[0, 0, 0, 0] = 300
    assert label_array(Volume(big, affine)).dtype == np.uint16


def test_evaluate_files_matches_array_metrics(tmp_path):
    ref = write_label(tmp_path / "ref.nii.gz", cubes())
    pred = write_label(tmp_path / "pred.nii.gz", cubes(shift=1))
    report = evaluate(pred, ref, labels="big=1,small=2", tolerances_mm=(1.5,))
    assert report.labels == {"big": 1, "small": 2} and report.cases == ["ref"]
    big, small = report.rows
    assert (big["tp"], big["fp"], big["fn"]) == (36, 12, 12)
    assert big["dice"] == pytest.approx(72 / 96)
    assert big["hd"] == pytest.approx(1.5)  # one voxel along x at 1.5 mm (the reference's spacing)
    assert small["dice"] == 1.0 and small["hd"] == 0.0 and small["nsd_1.5mm"] == 1.0


def test_evaluate_folders_default_labels_fill_both_empty(tmp_path):
    refs, preds = tmp_path / "ref", tmp_path / "pred"
    only_one = cubes()
    only_one[only_one == 2] = 0
    write_label(refs / "a.nii.gz", cubes())
    write_label(refs / "b.nii.gz", only_one)
    write_label(refs / "c.nii.gz", cubes())
    write_label(preds / "a.nii.gz", cubes(shift=1))
    write_label(preds / "b.nii.gz", only_one)
    write_label(preds / "z.nii.gz", cubes())
    report = evaluate(preds, refs)
    assert report.labels == {"label_1": 1, "label_2": 2}
    assert report.missing == ["c"] and report.extra == ["z"]
    assert [(r["case"], r["value"], r["status"]) for r in report.rows] == [
        ("a", 1, "ok"), ("a", 2, "ok"), ("b", 1, "ok"), ("b", 2, "both_empty")]
    assert report.rows[3]["tn"] == only_one.size and math.isnan(report.rows[3]["dice"])

    summary = summarize(report)
    dice2 = summary["labels"]["label_2"]["metrics"]["dice"]
    assert dice2["n"] == 1 and dice2["n_nan"] == 1 and dice2["mean"] == 1.0
    assert summary["labels"]["label_2"]["status_counts"] == {"ok": 1, "ref_empty": 0, "pred_empty": 0, "both_empty": 1}
    dice1 = summary["labels"]["label_1"]["metrics"]["dice"]
    assert dice1["mean"] == pytest.approx((0.75 + 1.0) / 2) and dice1["std"] == pytest.approx(0.125)
    assert summary["mean_over_labels"]["dice"] == pytest.approx((0.875 + 1.0) / 2)


def test_summary_leaves_inf_out_but_counts_it(tmp_path):
    refs, preds = tmp_path / "ref", tmp_path / "pred"
    missed = cubes()
    missed[missed == 2] = 0
    write_label(refs / "a.nii.gz", cubes())
    write_label(refs / "b.nii.gz", cubes())
    write_label(preds / "a.nii.gz", cubes())
    write_label(preds / "b.nii.gz", missed)  # label 2 missed: pred_empty
    report = evaluate(preds, refs, labels={"big": 1, "small": 2})
    small = summarize(report)["labels"]["small"]
    assert small["status_counts"]["pred_empty"] == 1
    assert small["metrics"]["dice"]["mean"] == 0.5 and small["metrics"]["dice"]["n"] == 2  # Dice 0 counts
    assert small["metrics"]["hd"] == {"mean": 0.0, "std": 0.0, "median": 0.0, "n": 1, "n_nan": 0, "n_inf": 1}
    rows = report_json(report)["cases"]
    assert rows[3]["status"] == "pred_empty" and rows[3]["hd"] is None and rows[3]["dice"] == 0.0
    text = csv_text(report)
    parsed = list(csv.DictReader(text.splitlines()))
    assert parsed[3]["hd"] == "inf" and parsed[3]["precision"] == "nan" and parsed[3]["status"] == "pred_empty"


def test_grid_mismatch_and_resampling(tmp_path):
    ref = write_label(tmp_path / "ref.nii.gz", cubes())
    flipped_affine = AFFINE.copy()
    flipped_affine[0, 0] = -1.5
    flipped_affine[0, 3] = 1.5 * 11  # the same points, x axis stored backwards
    pred = write_label(tmp_path / "pred.nii.gz", cubes()[::-1].copy(), flipped_affine)
    with pytest.raises(GeometryError) as err:
        evaluate(pred, ref)
    message = str(err.value)
    assert str(pred) in message and str(ref) in message and "--resample-pred" in message
    report = evaluate(pred, ref, resample_pred=True)
    assert [row["dice"] for row in report.rows] == [1.0, 1.0]
    other = write_label(tmp_path / "other.nii.gz", np.zeros((12, 10, 5), np.uint8))
    with pytest.raises(GeometryError, match=r"shape \(12, 10, 5\) vs \(12, 10, 6\)"):
        evaluate(other, ref)


def test_bad_label_files(tmp_path):
    ref = write_label(tmp_path / "ref.nii.gz", cubes())
    halves = cubes().astype(np.float32)
    halves[0, 0, 0] = 0.5
    write_nifti(Volume(halves[None], AFFINE), tmp_path / "half.nii.gz")
    with pytest.raises(LabelError, match="half.nii.gz: label map holds non-integer values"):
        evaluate(tmp_path / "half.nii.gz", ref)
    with pytest.raises(LabelError, match=r"ref.nii.gz: label values \[2\] are not in the label list"):
        evaluate(ref, ref, labels="big=1")


def test_outputs_csv_json_and_no_overwrite(tmp_path):
    ref = write_label(tmp_path / "ref.nii.gz", cubes())
    report = evaluate(write_label(tmp_path / "pred.nii.gz", cubes(1)), ref, labels="big=1,small=2")
    written = write_outputs(report, tmp_path / "out" / "report.csv")
    assert [p.name for p in written] == ["report.csv", "report.json"]
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert [r["label"] for r in rows] == ["big", "small"] and float(rows[0]["dice"]) == pytest.approx(0.75)
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "cases" not in summary and summary["summary"]["labels"]["big"]["metrics"]["dice"]["mean"] == pytest.approx(0.75)
    with pytest.raises(OutputExistsError, match="report.csv: already exists"):
        write_outputs(report, tmp_path / "out" / "report.csv")
    before = (tmp_path / "out" / "report.csv").read_text()
    write_outputs(report, tmp_path / "out" / "report.csv", overwrite=True)
    assert (tmp_path / "out" / "report.csv").read_text() == before
    full = json.loads(write_outputs(report, tmp_path / "r.json")[0].read_text())
    assert len(full["cases"]) == 2 and full["summary"]["num_cases"] == 1
    with pytest.raises(UsageError, match=r"\.csv or \.json"):
        write_outputs(report, tmp_path / "r.txt")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.csv", "report.json"]  # nothing half-written


def test_case_hook_gets_volumes(tmp_path):
    seen = []
    ref = write_label(tmp_path / "ref" / "k.nii.gz", cubes())
    write_label(tmp_path / "pred" / "k.nii.gz", cubes(1))
    image = write_label(tmp_path / "img" / "k_0000.nii.gz", cubes() * 10)
    evaluate(tmp_path / "pred", tmp_path / "ref", images=tmp_path / "img",
             case_hook=lambda case, pred, ref, img: seen.append((case, pred.spatial_shape, ref.source, img.source)))
    assert seen == [("k", (12, 10, 6), str(ref), str(image))]


def test_resolve_device():
    import torch

    from medseg.errors import ConfigError
    from medseg.metrics import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not supported"):
        resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_metrics_cuda_names_follow_the_training_rules(monkeypatch):
    """Given a machine with one GPU, an explicit CUDA name is checked like training's and prediction's."""
    import torch

    from medseg.errors import ConfigError
    from medseg.metrics import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="CUDA devices 0 to 0"):
        resolve_device("cuda:1")
