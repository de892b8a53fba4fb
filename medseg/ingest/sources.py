"""Finding the cases of a source dataset: which files are the channels and the label of each case.

Layouts (:func:`find_cases` picks one):

``decathlon``     ``SOURCE/dataset.json`` + ``imagesTr/`` + ``labelsTr/`` (Medical Segmentation Decathlon or
                  nnU-Net raw). The ``training`` list of ``dataset.json`` is used when its files exist,
                  otherwise ``imagesTr`` is scanned, grouping ``CASE_0000``, ``CASE_0001``... as channels.
``paired``        an image folder and a label folder (``images=`` / ``labels=``; auto-detected as
                  ``SOURCE/images`` + one of ``LABEL_FOLDER_NAMES``; with two of them, e.g. DRIVE's
                  ``mask/`` and ``1st_manual/``, ``labels=`` must choose). Entries are files (NIfTI, 2D images,
                  NRRD/MHA, DICOM-SEG) or DICOM series folders. Labels are matched to images by stem;
                  stems that differ (DRIVE: ``21_training.tif`` ↔ ``21_manual1.gif``) are matched by the
                  longest common prefix of ``_``/``-``/``.``-separated tokens, when that best match is
                  unique both ways.
``case_folders``  one folder per case holding the channels and the label (``channels=`` /
                  ``label_file=``: names, stems, globs or unique substrings of entries in each case
                  folder). When SOURCE itself holds matching entries it is the single case (a DICOM
                  study with several series folders, say).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import InputError, UsageError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm",
                  ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")  # not .img: the data half of a pair
LABEL_FOLDER_NAMES = ("masks", "labels", "labelsTr", "mask", "segmentations", "1st_manual")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_TOKEN_SPLIT = re.compile(r"[_\-.\s]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Case:
    """One training case: channel files/folders (each may hold several channels) and a label map."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class SourceInfo:
    """What a source declares about itself (from dataset.json or the layout)."""

    layout: str
    cases: list[Case]
    channel_names: list[str] | None = None
    labels: dict | None = None
    names_declared: bool = False  # channel names come from dataset.json (they then decide CT vs MR)
    problems: list[tuple[str, Exception]] = field(default_factory=list)  # (case id, error) found while listing


def stem(path: Path) -> str:
    """File name without its image suffix (``a.nii.gz`` → ``a``); folder names are kept whole."""
    name = path.name
    if path.is_dir():
        return name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def safe_case_id(name: str) -> str:
    """A case id usable in file names (characters outside ``A-Za-z0-9._-`` become ``_``)."""
    return _UNSAFE.sub("_", name).strip("._") or "case"


def is_image_entry(path: Path) -> bool:
    """A candidate image: a file with an image suffix, or a folder (a DICOM series); hidden names skipped."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return True
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError("folder does not exist", folder)
    return sorted(p for p in folder.iterdir() if is_image_entry(p))


def _group_channels(entries: list[Path]) -> dict[str, list[Path]]:
    """Case id → channel entries: nnU-Net ``CASE_0000`` suffixes when every entry has one, else one each."""
    stems = {p: stem(p) for p in entries}
    if entries and all(_CHANNEL_SUFFIX.match(s) for s in stems.values()):
        groups: dict[str, list[Path]] = {}
        for p, s in sorted(stems.items(), key=lambda kv: kv[1]):
            groups.setdefault(_CHANNEL_SUFFIX.match(s)["case"], []).append(p)
        return groups
    return {s: [p] for p, s in stems.items()}


def _tokens(name: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(name.lower()) if t]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def match_by_stem(image_ids: list[str], label_stems: list[str]) -> dict[str, str]:
    """Image case id → label stem: exact stems first, then the unique mutual best token-prefix match."""
    matched = {i: i for i in image_ids if i in set(label_stems)}
    free_images = [i for i in image_ids if i not in matched]
    free_labels = [s for s in label_stems if s not in matched.values()]
    tok_i = {i: _tokens(i) for i in free_images}
    tok_l = {s: _tokens(s) for s in free_labels}

    def best(tokens: list[str], candidates: dict[str, list[str]]) -> str | None:
        scores = {c: _common_prefix(tokens, t) for c, t in candidates.items()}
        top = max(scores.values(), default=0)
        winners = [c for c, s in scores.items() if s == top]
        return winners[0] if top > 0 and len(winners) == 1 else None

    for i in free_images:
        label = best(tok_i[i], tok_l)
        if label is not None and best(tok_l[label], tok_i) == i:
            matched[i] = label
    return matched


def _paired_cases(images_dir: Path, labels_dir: Path) -> tuple[list[Case], list[tuple[str, Exception]]]:
    groups = _group_channels(_entries(images_dir))
    if not groups:
        raise InputError("no images found (expected NIfTI, 2D images, NRRD/MHA or DICOM series folders)", images_dir)
    label_entries = {stem(p): p for p in _entries(labels_dir)}
    matches = match_by_stem(list(groups), list(label_entries))
    cases, problems = [], []
    for case_id, files in groups.items():
        if case_id in matches:
            cases.append(Case(safe_case_id(case_id), tuple(files), label_entries[matches[case_id]]))
        else:
            problems.append((safe_case_id(case_id), InputError("no matching label file in the label folder", files[0])))
    return cases, problems


def _match_entry(folder: Path, token: str) -> Path | None:
    """The entry of ``folder`` named by ``token`` (exact name, stem, glob, or unique substring), or None.

    Raises InputError when the token names several entries."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    for rule in (lambda p: p.name == token, lambda p: stem(p) == token,
                 lambda p: any(c in token for c in "*?[") and fnmatch.fnmatch(p.name, token),
                 lambda p: token.lower() in p.name.lower() and is_image_entry(p)):
        hits = sorted(p for p in entries if rule(p))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(f"'{token}' matches several entries ({', '.join(p.name for p in hits[:4])}); "
                             "give the exact name", folder)
    return None


def _case_folder(folder: Path, channels: list[str], label_file: str | None) -> Case:
    images = []
    for token in channels:
        hit = _match_entry(folder, token)
        if hit is None:
            raise InputError(f"no channel entry matching '{token}'", folder)
        images.append(hit)
    label = None
    if label_file is not None:
        label = _match_entry(folder, label_file)
        if label is None:
            raise InputError(f"no label entry matching '{label_file}'", folder)
    return Case(safe_case_id(folder.name), tuple(images), label)


def _is_single_case(folder: Path, channels: list[str]) -> bool:
    try:
        return all(_match_entry(folder, token) is not None for token in channels)
    except InputError:
        return True  # ambiguous inside SOURCE itself: treat it as the case so the error names it


def _case_folder_cases(source: Path, channels: list[str], label_file: str | None):
    if _is_single_case(source, channels):
        return [_case_folder(source, channels, label_file)], []
    cases, problems = [], []
    folders = [p for p in sorted(source.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise InputError(f"no case folders, and no entries matching {', '.join(channels)}", source)
    for folder in folders:
        try:
            cases.append(_case_folder(folder, channels, label_file))
        except InputError as exc:
            problems.append((safe_case_id(folder.name), exc))
    return cases, problems


def labels_from_json(obj, path: Path | str | None = None) -> dict[str, int]:
    """Label names → integers from either form: ``{"background": 0, ...}`` (nnU-Net v2) or
    ``{"0": "background", ...}`` (Decathlon). Background 0 is added when missing."""
    if not isinstance(obj, dict) or not obj:
        raise InputError("labels must be a non-empty JSON object", path)
    out: dict[str, int] = {}
    for key, value in obj.items():
        if isinstance(value, str) and re.fullmatch(r"-?\d+", str(key).strip()):
            name, number = value, int(key)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            name, number = str(key), int(value)
        elif isinstance(value, (list, tuple)):
            raise InputError(f"region-based label '{key}' (a list of values) is not supported", path)
        else:
            raise InputError(f"label entry {key!r}: {value!r} is not a name/integer pair", path)
        if number < 0:
            raise InputError(f"label '{name}' has a negative value {number}", path)
        out[name] = number
    if len(set(out.values())) != len(out):
        raise InputError("two label names share one value", path)
    if 0 not in out.values():
        out = {"background": 0, **out}
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _channel_names_from_json(meta: dict) -> list[str] | None:
    names = meta.get("channel_names") or meta.get("modality")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def _resolve(root: Path, relative: str) -> Path:
    return (root / relative).resolve() if not Path(relative).is_absolute() else Path(relative)


def _decathlon_cases(source: Path) -> SourceInfo:
    meta_path = source / "dataset.json"
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON ({exc})", meta_path) from None
    labels = labels_from_json(meta["labels"], meta_path) if meta.get("labels") else None
    names = _channel_names_from_json(meta)
    info = SourceInfo("decathlon", [], names, labels, names_declared=names is not None)
    training = meta.get("training")
    if isinstance(training, list) and training and all(isinstance(t, dict) and "image" in t for t in training):
        for entry in training:
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            paths = tuple(_resolve(source, p) for p in images)
            case_id = safe_case_id(entry.get("case_id") or stem(paths[0]))
            if not all(p.exists() for p in paths) and (source / "imagesTr").is_dir():
                break  # nnU-Net-converted files (CASE_0000) under a Decathlon list: scan instead
            label = _resolve(source, entry["label"]) if entry.get("label") else None
            info.cases.append(Case(case_id, paths, label))
        else:
            return info
        info.cases = []
    images_dir, labels_dir = source / "imagesTr", source / "labelsTr"
    if not images_dir.is_dir():
        raise InputError("no imagesTr folder and no usable 'training' list in dataset.json", source)
    info.cases, info.problems = _paired_cases(images_dir, labels_dir)
    return info


def find_cases(source: str | Path | None, *, images: str | Path | None = None, labels: str | Path | None = None,
               channels: list[str] | None = None, label_file: str | None = None) -> SourceInfo:
    """List the cases of a source (see the module docstring for the layouts). Relative ``images`` /
    ``labels`` are resolved against ``source`` when given."""
    root = Path(source) if source is not None else None
    if root is not None and not root.exists():
        raise InputError("source folder does not exist", root)
    if root is not None and not root.is_dir():
        raise InputError("source must be a folder", root)

    def under_root(p):
        p = Path(p)
        return root / p if root is not None and not p.is_absolute() and (root / p).exists() else p

    if images is not None or labels is not None:
        if images is None or labels is None:
            raise UsageError("--images and --labels go together (an image folder and a label folder)")
        cases, problems = _paired_cases(under_root(images), under_root(labels))
        return SourceInfo("paired", cases, problems=problems)
    if root is None:
        raise UsageError("give a SOURCE folder, or --images DIR --labels DIR")
    if channels:
        cases, problems = _case_folder_cases(root, list(channels), label_file)
        return SourceInfo("case_folders", cases, channel_names=list(channels), problems=problems)
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return _decathlon_cases(root)
    if (root / "images").is_dir():
        found = [name for name in LABEL_FOLDER_NAMES if (root / name).is_dir()]
        if len(found) > 1:  # e.g. DRIVE: mask/ (field of view) beside 1st_manual/ (vessels)
            raise UsageError(f"{root}: several label folders ({', '.join(found)}); say which one holds the "
                             "labels with --images images --labels FOLDER")
        if found:
            cases, problems = _paired_cases(root / "images", root / found[0])
            return SourceInfo("paired", cases, problems=problems)
    raise UsageError(
        f"{root}: cannot tell the layout; use a Decathlon/nnU-Net folder (dataset.json, imagesTr, labelsTr), "
        "--images DIR --labels DIR, or --channels NAMES --label-file NAME for one folder per case")
