"""From INPUT arguments to cases and output paths: grouping, sharding, existing outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import InputError, OutputExistsError, UsageError
from medseg.inference.inputs import (
    Case,
    check_outputs,
    gather_cases,
    output_paths,
    parse_channels,
    parse_shard,
    shard_cases,
)


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _dicom(path: Path) -> Path:
    return _touch(path, b"\0" * 128 + b"DICM" + b"\0" * 16)


def test_files_folders_and_nnunet_single_channel(tmp_path):
    a = _touch(tmp_path / "in" / "liver_0000.nii.gz")
    b = _touch(tmp_path / "in" / "brain.nii")
    _touch(tmp_path / "in" / "notes.txt")
    c = _touch(tmp_path / "photo.png")
    cases = gather_cases([tmp_path / "in", c])
    assert [(x.name, x.paths, x.kind) for x in cases] == [
        ("brain", (b,), "volume"), ("liver", (a,), "volume"), ("photo", (c,), "image2d")]


def test_nnunet_channel_grouping_and_missing_channel(tmp_path):
    folder = tmp_path / "imagesTs"
    for case in ("p1", "p2"):
        for ch in (0, 1):
            _touch(folder / f"{case}_{ch:04d}.nii.gz")
    cases = gather_cases([folder], num_channels=2)
    assert [c.name for c in cases] == ["p1", "p2"]
    assert [p.name for p in cases[0].paths] == ["p1_0000.nii.gz", "p1_0001.nii.gz"]
    (folder / "p2_0001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case p2: missing channel file\(s\) p2_0001.nii.gz"):
        gather_cases([folder], num_channels=2)
    # A single file without suffix is a 4D file that holds every channel.
    assert gather_cases([_touch(tmp_path / "multi.nii.gz")], num_channels=2)[0].name == "multi"


def test_channel_patterns_in_case_folders(tmp_path):
    for case in ("pat1", "pat2"):
        _touch(tmp_path / "study" / case / "Flair_x.nii.gz")
        _touch(tmp_path / "study" / case / "T1c_x.nii.gz")
        _touch(tmp_path / "study" / case / "LICENSE.txt")
    _touch(tmp_path / "study" / "other" / "readme.md")
    cases = gather_cases([tmp_path / "study"], 2, parse_channels("T1c*, Flair*"))
    assert [c.name for c in cases] == ["pat1", "pat2"]
    assert [p.name for p in cases[1].paths] == ["T1c_x.nii.gz", "Flair_x.nii.gz"]
    (tmp_path / "study" / "pat2" / "T1c_x.nii.gz").unlink()
    with pytest.raises(InputError, match="'T1c\\*' matches no file"):
        gather_cases([tmp_path / "study"], 2, ["T1c*", "Flair*"])
    assert parse_channels("") is None


def test_dicom_series_folders(tmp_path):
    for i in range(3):
        _dicom(tmp_path / "study" / "3-T1post" / f"{i:06d}.dcm")
        _dicom(tmp_path / "study" / "7-FLAIR" / f"IM{i}")
    # A study folder is one DICOM case (reading it lists its series unless --series-uid picks one).
    assert [(c.name, c.kind) for c in gather_cases([tmp_path / "study"])] == [("study", "dicom")]
    cases = gather_cases([tmp_path / "study" / "3-T1post", tmp_path / "study" / "7-FLAIR"])
    assert [(c.name, c.kind) for c in cases] == [("3-T1post", "dicom"), ("7-FLAIR", "dicom")]
    assert cases[1].paths == (tmp_path / "study" / "7-FLAIR",)
    with pytest.raises(InputError, match="single DICOM file"):
        gather_cases([tmp_path / "study" / "7-FLAIR" / "IM0"])


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        gather_cases([tmp_path / "missing.nii.gz"])
    with pytest.raises(InputError, match="not an image"):
        gather_cases([_touch(tmp_path / "table.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        gather_cases([tmp_path / "empty"])
    _touch(tmp_path / "a" / "scan.nii.gz")
    _touch(tmp_path / "b" / "scan.nii.gz")
    with pytest.raises(InputError, match="same case name 'scan'"):
        gather_cases([tmp_path / "a", tmp_path / "b"])


def test_shards_split_the_sorted_cases():
    cases = [Case(f"c{i}", (Path(f"c{i}.nii.gz"),), "volume") for i in range(7)]
    assert parse_shard(None) is None and parse_shard("1/3") == (1, 3)
    parts = [shard_cases(cases, (i, 3)) for i in range(3)]
    assert [c.name for c in parts[1]] == ["c1", "c4"]
    assert sorted(c.name for part in parts for c in part) == [c.name for c in cases]
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_output_paths_and_existing_outputs(tmp_path):
    vol = Case("ct1", (tmp_path / "ct1.nii.gz",), "volume")
    img = Case("photo", (tmp_path / "photo.jpg",), "image2d")
    series = Case("s1", (tmp_path / "s1",), "dicom")
    out = tmp_path / "out"
    assert output_paths(vol, out, probabilities=True, uncertainty=True) == {
        "labels": out / "ct1.nii.gz", "probabilities": out / "ct1_probabilities.nii.gz",
        "uncertainty": out / "ct1_uncertainty.nii.gz"}
    assert output_paths(img, out)["labels"] == out / "photo.png"
    assert output_paths(series, out, "dicom-seg")["labels"] == out / "s1.dcm"
    with pytest.raises(InputError, match="DICOM-SEG output needs a DICOM series"):
        output_paths(vol, out, "dicom-seg")
    with pytest.raises(UsageError):
        output_paths(vol, out, "mha")
    planned = {c.name: output_paths(c, out, probabilities=True) for c in (vol, img)}
    check_outputs(planned, [vol, img], overwrite=False)
    _touch(out / "photo.png")
    _touch(out / "ct1_probabilities.nii.gz")
    with pytest.raises(OutputExistsError, match=r"and 1 more.*--overwrite"):
        check_outputs(planned, [vol, img], overwrite=False)
    check_outputs(planned, [vol, img], overwrite=True)
    same = {"ct1": output_paths(vol, tmp_path)}
    with pytest.raises(InputError, match="replace this input"):
        check_outputs(same, [vol], overwrite=True)
