"""Pairing predictions with references by case name.

A case name is the file name without its image suffix (``.nii.gz``, ``.nii``, ``.png``, ``.dcm``...)
and without a trailing nnU-Net channel tag ``_0000``: ``liver_3_0000.nii.gz`` → ``liver_3``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError

CASE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".nrrd", ".nhdr", ".mha", ".mhd",
                 ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
_CHANNEL_TAG = re.compile(r"_0000$")


def case_name(path: str | Path) -> str:
    """The case name of a file: suffix and a trailing ``_0000`` channel tag removed."""
    name = Path(path).name
    for suffix in CASE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _CHANNEL_TAG.sub("", name)


def list_cases(folder: Path) -> dict[str, Path]:
    """``{case name: file}`` for the image files directly inside ``folder`` (hidden files skipped)."""
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(CASE_SUFFIXES):
            continue
        name = case_name(path)
        if name in cases:
            raise InputError(f"two files for case {name!r}: {cases[name].name} and {path.name}", folder)
        cases[name] = path
    return cases


@dataclass
class CaseMatch:
    """The pairs to evaluate, and the cases found on one side only."""

    pairs: list[tuple[str, Path, Path]]  # (case, prediction, reference)
    missing: list[str]  # references without a prediction
    extra: list[str]  # predictions without a reference


def match_cases(pred: str | Path, ref: str | Path) -> CaseMatch:
    """Pair two files, or the files of two folders by case name."""
    pred, ref = Path(pred), Path(ref)
    for path in (pred, ref):
        if not path.exists():
            raise InputError("file or folder does not exist", path)
    if pred.is_dir() != ref.is_dir():
        folder, file = (pred, ref) if pred.is_dir() else (ref, pred)
        raise InputError(f"is a folder but {file} is a file: give two files or two folders", folder)
    if not pred.is_dir():
        return CaseMatch([(case_name(ref), pred, ref)], [], [])
    pred_cases, ref_cases = list_cases(pred), list_cases(ref)
    if not ref_cases:
        raise InputError("no reference images found in this folder", ref)
    common = sorted(set(pred_cases) & set(ref_cases))
    match = CaseMatch([(name, pred_cases[name], ref_cases[name]) for name in common],
                      missing=sorted(set(ref_cases) - set(pred_cases)), extra=sorted(set(pred_cases) - set(ref_cases)))
    if not match.pairs:
        raise InputError(f"no prediction matches a reference case by name (references: {', '.join(sorted(ref_cases)[:5])}...)", pred)
    return match
