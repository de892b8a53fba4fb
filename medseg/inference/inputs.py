"""Turning the INPUT arguments of ``medseg predict`` into cases, and cases into output paths.

Rules (also in ``medseg predict --help``):

* A file is one input: NIfTI (3D, or 4D = channels), NRRD/MHA, or a 2D image (PNG, JPEG, TIFF...).
* A folder holding image files: each file is an input (non-image files are ignored).
* A folder holding only sub-folders: the image files of each sub-folder are inputs (one level).
* A folder with DICOM files in it or below it (and no image files): one DICOM case named after the
  folder. When it holds several series (a study), the error lists them and ``--series-uid`` picks one.
* ``--channels P1,P2,...``: each folder (or sub-folder) is one case whose channel ``i`` is the single
  file matching the glob ``Pi`` (e.g. ``--channels 'Flair*,T1c*'``).
* nnU-Net naming: files ``CASE_0000.nii.gz, CASE_0001.nii.gz, ...`` are the channels of case ``CASE``
  (for a one-channel model ``CASE_0000.nii.gz`` is case ``CASE``); a multi-channel model given a
  single file without that suffix reads its channels from the file's 4th axis.

Case names come from file and folder names only (never from DICOM tags). Outputs go to
``OUT/<case>.nii.gz`` (``.png`` for 2D image inputs, ``.dcm`` for DICOM-SEG), plus
``<case>_probabilities.nii.gz`` and ``<case>_uncertainty.nii.gz`` when asked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError, OutputExistsError, UsageError
from medseg.io import IMAGE2D_SUFFIXES
from medseg.io.nifti import NIFTI_SUFFIXES, is_nifti

OTHER_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
FORMATS = ("nifti", "dicom-seg")


@dataclass(frozen=True)
class Case:
    """One prediction: ``paths`` holds one file per channel, or one file/DICOM folder with all channels."""

    name: str
    paths: tuple[Path, ...]
    kind: str  # "volume" | "image2d" | "dicom"

    @property
    def source(self) -> Path:
        return self.paths[0]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES + OTHER_SUFFIXES + IMAGE2D_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_image_file(path: Path) -> bool:
    return path.is_file() and (is_nifti(path) or path.suffix.lower() in OTHER_SUFFIXES + IMAGE2D_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part-10 file (``DICM`` at byte 128), or a ``.dcm`` file."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _kind(path: Path) -> str:
    return "image2d" if path.suffix.lower() in IMAGE2D_SUFFIXES else "volume"


class _NoImages(InputError):
    """A folder without anything to predict (skipped when it is a sub-folder)."""


def _has_dicom_below(folder: Path) -> bool:
    return any(_is_dicom_file(p) for p in folder.rglob("*") if not p.name.startswith("."))


def _folder_cases(folder: Path, channel_patterns: Sequence[str] | None,
                  depth: int = 0) -> tuple[list[Path], list[Case]]:
    """(image files, ready cases) found in ``folder`` by the rules in the module docstring."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if channel_patterns and (depth > 0 or any(p.is_file() for p in entries)):
        if not any(any(p.is_file() for p in folder.glob(pattern)) for pattern in channel_patterns):
            raise _NoImages(f"no file matches the channel patterns {', '.join(channel_patterns)}", folder)
        paths = []
        for pattern in channel_patterns:
            matches = sorted(p for p in folder.glob(pattern) if p.is_file())
            if len(matches) != 1:
                found = "no file" if not matches else f"{len(matches)} files ({', '.join(m.name for m in matches[:3])})"
                raise InputError(f"channel pattern {pattern!r} matches {found}; it must match exactly one", folder)
            paths.append(matches[0])
        return [], [Case(folder.name, tuple(paths), _kind(paths[0]))]
    if not channel_patterns:
        images = [p for p in entries if _is_image_file(p)]
        if images:
            return images, []
        if any(_is_dicom_file(p) for p in entries):
            return [], [Case(folder.name, (folder,), "dicom")]
    if depth == 0:
        files: list[Path] = []
        cases: list[Case] = []
        for sub in (p for p in entries if p.is_dir()):
            if not channel_patterns and not any(_is_image_file(p) for p in sub.iterdir()):
                continue  # DICOM series below are read as one study (see the module docstring)
            try:
                f, c = _folder_cases(sub, channel_patterns, depth + 1)
            except _NoImages:
                continue  # a sub-folder without images (notes, licences) is not an input
            files += f
            cases += c
        if files or cases:
            return files, cases
        if not channel_patterns and _has_dicom_below(folder):
            return [], [Case(folder.name, (folder,), "dicom")]
    raise _NoImages("no images found in this folder (expected NIfTI, NRRD/MHA, 2D images or a DICOM series)", folder)


def _group_files(files: Sequence[Path], num_channels: int) -> list[Case]:
    """nnU-Net channel grouping of image files (see the module docstring)."""
    groups: dict[tuple[Path, str], dict[int, Path]] = {}
    singles: list[Case] = []
    for path in files:
        match = CHANNEL_SUFFIX.match(_stem(path))
        if match is None or (num_channels == 1 and match["channel"] != "0000"):
            singles.append(Case(_stem(path), (path,), _kind(path)))
            continue
        groups.setdefault((path.parent, match["case"]), {})[int(match["channel"])] = path
    cases = list(singles)
    for (parent, name), channels in groups.items():
        expected = set(range(num_channels))
        if set(channels) != expected:
            example = next(iter(channels.values()))
            ending = example.name[len(_stem(example)):]
            missing = sorted(expected - set(channels))
            extra = sorted(set(channels) - expected)
            problem = (f"missing channel file(s) {', '.join(f'{name}_{c:04d}{ending}' for c in missing)}" if missing
                       else f"unexpected channel file(s) {', '.join(f'{name}_{c:04d}{ending}' for c in extra)}")
            raise InputError(f"case {name}: {problem} (the model takes {num_channels} channel(s))", parent)
        paths = tuple(channels[c] for c in range(num_channels))
        cases.append(Case(name, paths, _kind(paths[0])))
    return cases


def gather_cases(inputs: Sequence[str | Path], num_channels: int = 1,
                 channel_patterns: Sequence[str] | None = None) -> list[Case]:
    """The cases named by ``inputs`` (files and folders), sorted by name; duplicate names are an error."""
    files: list[Path] = []
    cases: list[Case] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError("file or folder does not exist", path)
        if path.is_dir():
            f, c = _folder_cases(path, channel_patterns)
            files += f
            cases += c
        elif _is_image_file(path):
            files.append(path)
        elif _is_dicom_file(path):
            raise InputError("a single DICOM file: pass the folder that holds its series", path)
        else:
            raise InputError("not an image (expected NIfTI, NRRD/MHA, a 2D image or a DICOM series folder)", path)
    cases += _group_files(list(dict.fromkeys(files)), num_channels)
    seen: dict[str, Case] = {}
    for case in cases:
        if case.name in seen and seen[case.name].paths != case.paths:
            raise InputError(f"two inputs give the same case name {case.name!r} ({seen[case.name].source} and "
                             f"{case.source}); predict them into different output folders", case.source)
        seen[case.name] = case
    return sorted(seen.values(), key=lambda c: c.name)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``; None stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise UsageError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_cases(cases: Sequence[Case], shard: tuple[int, int] | None) -> list[Case]:
    """Every N-th case starting at I (0-based) of the name-sorted list, so N processes split the work."""
    if shard is None:
        return list(cases)
    index, count = shard
    return list(cases[index::count])


def parse_channels(text: str | None) -> list[str] | None:
    """``"Flair*,T1c*"`` → ``["Flair*", "T1c*"]``; None or empty → None (nnU-Net naming)."""
    if not text:
        return None
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    return patterns or None


def output_paths(case: Case, out_dir: str | Path, fmt: str = "nifti", probabilities: bool = False,
                 uncertainty: bool = False) -> dict[str, Path]:
    """``{"labels": ..., ["probabilities": ..., "uncertainty": ...]}`` for one case."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    out_dir = Path(out_dir)
    if fmt == "dicom-seg":
        if case.kind != "dicom":
            raise InputError("DICOM-SEG output needs a DICOM series input (use --format nifti)", case.source)
        labels = out_dir / f"{case.name}.dcm"
    else:
        labels = out_dir / f"{case.name}{'.png' if case.kind == 'image2d' else '.nii.gz'}"
    paths = {"labels": labels}
    if probabilities:
        paths["probabilities"] = out_dir / f"{case.name}_probabilities.nii.gz"
    if uncertainty:
        paths["uncertainty"] = out_dir / f"{case.name}_uncertainty.nii.gz"
    return paths


def check_outputs(planned: dict[str, dict[str, Path]], cases: Sequence[Case], overwrite: bool) -> None:
    """Before anything is predicted: no output may be an input, or exist unless ``overwrite``."""
    inputs = {p.resolve() for case in cases for p in case.paths}
    existing = []
    for paths in planned.values():
        for path in paths.values():
            if path.resolve() in inputs:
                raise InputError("the output would replace this input; choose another output folder", path)
            if path.exists():
                existing.append(path)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"output already exists{more}; use --overwrite to replace", existing[0])
