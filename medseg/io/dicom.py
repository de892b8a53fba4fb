"""DICOM series, single files and DICOM-SEG (pydicom; highdicom for writing SEG).

Geometry (DICOM is LPS): voxel axis ``i`` (array axis 1) runs along the row direction cosine
``ImageOrientationPatient[0:3]`` with spacing ``PixelSpacing[1]``, axis ``j`` along the column cosine
``[3:6]`` with spacing ``PixelSpacing[0]``, axis ``k`` along the slices sorted by their position
projected on the slice normal (row × column), never by file name or InstanceNumber. The affine is
``diag(-1, -1, 1, 1) @ affine_lps`` (RAS). ``array`` is ``(C, columns, rows, slices)``.

A series is refused when it mixes orientations (beyond ``ORIENTATION_ATOL``), image sizes or pixel
spacings, has two slices at one position, or has uneven slice spacing: any gap deviating from the
median gap by more than ``SPACING_RTOL`` (10 %, so one missing slice, a doubled gap, is always caught),
or slice positions off a straight line by more than 10 % of the slice step. Messages name files and
UIDs, never patient tags (PatientName, PatientID, PatientBirthDate...).
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg import progress
from medseg.errors import GeometryError, InputError, LabelError, OutputExistsError
from medseg.io.volume import LPS_TO_RAS, Volume

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
ORIENTATION_ATOL = 1e-4  # direction cosines (unitless)
SPACING_RTOL = 0.10  # slice gaps vs their median; off-line slice positions vs the step
GRID_TOL_VOXELS = 0.1  # how far (in voxels) a SEG frame may sit from the target grid's voxel centres
_SEG_VALUE_DESCRIPTION = re.compile(r"^medseg label value (\d+)$")


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found under a folder (no patient data)."""

    uid: str
    description: str
    modality: str
    num_slices: int
    folder: Path


@dataclass
class _Frame:
    """One 2D image: a single-frame file, or frame ``index`` (0-based) of a multi-frame file."""

    path: Path
    index: int | None
    rows: int
    cols: int
    orientation: np.ndarray  # (6,) row cosine, column cosine (LPS)
    position: np.ndarray  # (3,) centre of the first transmitted pixel (LPS mm)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    thickness: float | None  # SpacingBetweenSlices, else SliceThickness
    slope: float
    intercept: float
    sop_uid: str

    @property
    def name(self) -> str:
        """The file name, with the frame number for multi-frame files (for messages)."""
        return self.path.name if self.index is None else f"{self.path.name} frame {self.index + 1}"


# --- files and headers ---------------------------------------------------------------------------

def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read(path: Path, headers_only: bool):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise InputError(f"unreadable DICOM file ({type(exc).__name__})", path) from None


def _scan(folder: Path) -> dict[str, list[tuple[Path, object]]]:
    """Headers of the image files under ``folder`` (recursively), grouped by SeriesInstanceUID."""
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    groups: dict[str, list[tuple[Path, object]]] = {}
    for path in progress.track(files, "reading DICOM headers"):
        if not is_dicom_file(path):
            continue
        ds = _read(path, headers_only=True)
        if "Rows" not in ds:  # not an image (SR, RTSTRUCT, DICOMDIR...)
            continue
        groups.setdefault(_uid(ds, "SeriesInstanceUID"), []).append((path, ds))
    return groups


def _uid(ds, keyword: str) -> str:
    """A UID from the dataset, falling back to the file meta (MediaStorage...) for SOP UIDs left empty."""
    value = str(ds.get(keyword, "") or "")
    if not value and keyword in ("SOPInstanceUID", "SOPClassUID"):
        value = str(getattr(getattr(ds, "file_meta", None), "MediaStorage" + keyword, "") or "")
    return value


def _num_frames(ds) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _series_info(uid: str, members: list[tuple[Path, object]]) -> SeriesInfo:
    ds = members[0][1]
    folder = Path(os.path.commonpath([p.parent for p, _ in members]))
    return SeriesInfo(uid=uid, description=str(ds.get("SeriesDescription", "") or ""),
                      modality=str(ds.get("Modality", "") or ""),
                      num_slices=sum(_num_frames(d) for _, d in members), folder=folder)


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """Every DICOM image series under ``folder`` (recursively), sorted by folder then UID."""
    groups = _scan(Path(folder))
    return sorted((_series_info(uid, members) for uid, members in groups.items()), key=lambda s: (str(s.folder), s.uid))


def _describe(series: Sequence[SeriesInfo]) -> str:
    return "; ".join(f"{s.uid} '{s.description}' ({s.num_slices} slices)" for s in series)


# --- per-frame attributes ------------------------------------------------------------------------

def _functional(ds, frame: int, sequence: str, attribute: str):
    """``attribute`` of functional group ``sequence`` for ``frame``: per-frame group, then shared."""
    for groups, item in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is None or len(seq) <= item:
            continue
        group = seq[item].get(sequence)
        if group is not None and len(group) and attribute in group[0]:
            return group[0].get(attribute)
    return None


def _floats(value, count: int, name: str, path: Path) -> np.ndarray:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"malformed {name}", path) from None
    if out.shape != (count,) or not np.all(np.isfinite(out)):
        raise InputError(f"malformed {name} (expected {count} numbers)", path)
    return out


def _frames_of(path: Path, ds, require_geometry: bool = True) -> list[_Frame]:
    """The frames of one file, with their geometry and rescale (functional groups for multi-frame)."""
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    count = _num_frames(ds)
    if count > 1 and not enhanced:
        raise InputError(f"multi-frame file ({count} frames) without per-frame positions is not supported", path)
    frames = []
    for f in range(count):
        def get(sequence: str, attribute: str, f=f):
            value = _functional(ds, f, sequence, attribute) if enhanced else None
            return ds.get(attribute) if value is None else value

        iop = get("PlaneOrientationSequence", "ImageOrientationPatient")
        ipp = get("PlanePositionSequence", "ImagePositionPatient")
        spacing = get("PixelMeasuresSequence", "PixelSpacing") or ds.get("ImagerPixelSpacing")
        missing = [name for name, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp),
                                        ("PixelSpacing", spacing)) if v is None]
        if missing and require_geometry:
            raise InputError(f"missing {', '.join(missing)}" + (f" for frame {f + 1}" if enhanced else ""), path)
        orientation = _floats(iop, 6, "ImageOrientationPatient", path) if iop is not None else np.array([1.0, 0, 0, 0, 1, 0])
        position = _floats(ipp, 3, "ImagePositionPatient", path) if ipp is not None else np.zeros(3)
        pixel_spacing = _floats(spacing, 2, "PixelSpacing", path) if spacing is not None else np.ones(2)
        thickness = get("PixelMeasuresSequence", "SpacingBetweenSlices") or get("PixelMeasuresSequence", "SliceThickness")
        slope = get("PixelValueTransformationSequence", "RescaleSlope")
        intercept = get("PixelValueTransformationSequence", "RescaleIntercept")
        frames.append(_Frame(
            path=path, index=f if enhanced else None, rows=int(ds.Rows), cols=int(ds.Columns),
            orientation=orientation, position=position, pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
            thickness=abs(float(thickness)) if thickness not in (None, "") and float(thickness) != 0 else None,
            slope=1.0 if slope in (None, "") else float(slope), intercept=0.0 if intercept in (None, "") else float(intercept),
            sop_uid=_uid(ds, "SOPInstanceUID"),
        ))
    return frames


# --- geometry ------------------------------------------------------------------------------------

def _check_uniform(frames: list[_Frame], source: Path) -> None:
    first = frames[0]
    for fr in frames[1:]:
        if (fr.rows, fr.cols) != (first.rows, first.cols):
            raise InputError(f"inconsistent image size: {first.rows}x{first.cols} in {first.name} but "
                             f"{fr.rows}x{fr.cols} in {fr.name}", source)
        diff = float(np.abs(fr.orientation - first.orientation).max())
        if diff > ORIENTATION_ATOL:
            raise InputError(f"mixed ImageOrientationPatient ({fr.name} differs from {first.name} "
                             f"by {diff:.2g}); the folder holds several orientations", source)
        if not np.allclose(fr.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise InputError(f"mixed PixelSpacing ({first.pixel_spacing} in {first.name}, "
                             f"{fr.pixel_spacing} in {fr.name})", source)


def _axes(frame: _Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and unit slice normal (LPS)."""
    row, col = frame.orientation[:3], frame.orientation[3:]
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm < 1e-3:
        raise InputError("degenerate ImageOrientationPatient (row and column cosines are parallel)", frame.path)
    return row, col, normal / norm


def _lps_affine(frame: _Frame, slice_step: np.ndarray) -> np.ndarray:
    row, col, _ = _axes(frame)
    affine = np.eye(4)
    affine[:3, 0] = row * frame.pixel_spacing[1]
    affine[:3, 1] = col * frame.pixel_spacing[0]
    affine[:3, 2] = slice_step
    affine[:3, 3] = frame.position
    return affine


def _sort_and_grid(frames: list[_Frame], source: Path) -> tuple[list[_Frame], np.ndarray]:
    """Frames sorted along the slice normal and the RAS affine of the (columns, rows, slices) grid."""
    _check_uniform(frames, source)
    _, _, normal = _axes(frames[0])
    depth = np.array([fr.position @ normal for fr in frames])
    order = np.argsort(depth, kind="stable")
    frames = [frames[i] for i in order]
    depth = depth[order]
    if len(frames) == 1:
        step = normal * (frames[0].thickness or 1.0)
    else:
        gaps = np.diff(depth)
        same = int(np.argmin(gaps))
        if gaps[same] < 1e-3:
            raise InputError(f"two slices at the same position ({frames[same].name} and {frames[same + 1].name}); "
                             "the series holds several stacks or repeated slices", source)
        median = float(np.median(gaps))
        worst = int(np.argmax(np.abs(gaps - median)))
        if abs(gaps[worst] - median) > SPACING_RTOL * median:
            raise InputError(f"uneven slice spacing: {gaps[worst]:.4g} mm between {frames[worst].name} and "
                             f"{frames[worst + 1].name} (median {median:.4g} mm); a slice may be missing", source)
        positions = np.stack([fr.position for fr in frames])
        step = (positions[-1] - positions[0]) / (len(frames) - 1)
        expected = positions[0] + np.arange(len(frames))[:, None] * step
        offset = float(np.linalg.norm(positions - expected, axis=1).max())
        if offset > SPACING_RTOL * np.linalg.norm(step):
            raise InputError(f"slice positions are not on a straight line (off by up to {offset:.3g} mm)", source)
    return frames, LPS_TO_RAS @ _lps_affine(frames[0], step)


# --- pixels --------------------------------------------------------------------------------------

def _decode(ds, path: Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise InputError(f"cannot decode the pixel data ({name}): {type(exc).__name__}", path) from None


def _frame_stack(ds, path: Path) -> np.ndarray:
    """Decoded pixels of a file as ``(frames, rows, columns, samples)``."""
    pixels = _decode(ds, path)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if pixels.ndim == (2 if samples == 1 else 3):
        pixels = pixels[None]
    return pixels.reshape(pixels.shape[0], int(ds.Rows), int(ds.Columns), samples)


def _load_pixels(frames: list[_Frame]) -> np.ndarray:
    """Rescaled pixels ``(C, columns, rows, slices)`` (a transposed view of a slice-major buffer).

    Integer slope/intercept (the usual CT 1 / -1024) give int16, widened to int32 only when a slice's
    values need it; other rescales give float32.
    """
    integral = all(float(fr.slope).is_integer() and float(fr.intercept).is_integer() for fr in frames)
    out: np.ndarray | None = None
    cache: tuple[Path, np.ndarray] | None = None
    for k, fr in enumerate(progress.track(frames, "reading DICOM pixels")):
        if cache is None or cache[0] != fr.path:
            cache = (fr.path, _frame_stack(_read(fr.path, headers_only=False), fr.path))
        pixels = cache[1][fr.index or 0]
        if out is None:
            out = np.empty((len(frames), *pixels.shape), dtype=np.int16 if integral else np.float32)
        if pixels.shape != out.shape[1:]:
            raise InputError(f"pixel data shape {pixels.shape} differs from the other slices", fr.path)
        if integral:
            slope, intercept = int(fr.slope), int(fr.intercept)
            bounds = [int(pixels.min()) * slope + intercept, int(pixels.max()) * slope + intercept] if pixels.size else [0]
            if min(bounds) < np.iinfo(out.dtype).min or max(bounds) > np.iinfo(out.dtype).max:
                wide = np.int32 if min(bounds) >= np.iinfo(np.int32).min and max(bounds) <= np.iinfo(np.int32).max else np.int64
                out = out.astype(wide)
            if slope == 1:
                np.add(pixels, np.int64(intercept), out=out[k], casting="unsafe")
            else:
                out[k] = pixels.astype(np.int64) * slope + intercept
        else:
            np.multiply(pixels, fr.slope, out=out[k], casting="unsafe")
            out[k] += np.float32(fr.intercept)
    assert out is not None
    return out.transpose(3, 2, 1, 0)


def _volume(frames: list[_Frame], ds, source: Path, require_geometry: bool = True) -> Volume:
    """Sorted, checked and decoded frames as a Volume; ``ds`` (any member's header) gives the UIDs."""
    frames, affine = _sort_and_grid(frames, source)
    array = _load_pixels(frames)
    meta = {
        "format": "dicom",
        "series_uid": _uid(ds, "SeriesInstanceUID"),
        "modality": str(ds.get("Modality", "") or ""),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "sop_class_uid": _uid(ds, "SOPClassUID"),
        "sop_instance_uids": [fr.sop_uid for fr in frames],
        "study_uid": _uid(ds, "StudyInstanceUID"),
        "frame_of_reference_uid": _uid(ds, "FrameOfReferenceUID"),
    }
    if any(fr.index is not None for fr in frames):
        meta["frame_numbers"] = [None if fr.index is None else fr.index + 1 for fr in frames]
    if not require_geometry and "ImagePositionPatient" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        meta["geometry"] = "missing (identity affine)"
    return Volume(array=array, affine=affine, source=str(source), meta=meta)


# --- series --------------------------------------------------------------------------------------

def _select(folder: Path, series_uid: str | None) -> tuple[str, list[tuple[Path, object]]]:
    groups = _scan(folder)
    if not groups:
        raise InputError("no DICOM images found (looked for files with the DICM preamble, recursively)", folder)
    infos = sorted((_series_info(uid, m) for uid, m in groups.items()), key=lambda s: (str(s.folder), s.uid))
    if series_uid is None:
        if len(groups) > 1:
            raise InputError(f"holds {len(groups)} DICOM series; choose one by SeriesInstanceUID: {_describe(infos)}", folder)
        series_uid = infos[0].uid
    elif series_uid not in groups:
        raise InputError(f"no series with SeriesInstanceUID {series_uid}; found: {_describe(infos)}", folder)
    return series_uid, groups[series_uid]


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read the DICOM series under ``folder`` (recursively) as a Volume ``(C, columns, rows, slices)``.

    Several series and no ``series_uid``: ``InputError`` listing each (UID, description, slice count).
    Pixels are rescaled (RescaleSlope/Intercept). A series that is a single DICOM-SEG file is read as a
    label map on its own grid.
    """
    folder = Path(folder)
    _, members = _select(folder, series_uid)
    if any(_uid(ds, "SOPClassUID") == SEG_SOP_CLASS_UID for _, ds in members):
        if len(members) != 1:
            raise InputError("a segmentation series with several SEG files is not supported; read one file", folder)
        return read_dicom_file(members[0][0])
    frames = [fr for path, ds in members for fr in _frames_of(path, ds)]
    return _volume(frames, members[0][1], folder)


def read_dicom_file(path: str | Path, reference: Volume | None = None) -> Volume:
    """Read one DICOM file: a DICOM-SEG becomes a label map, any other image a one-slice (or multi-frame) volume.

    SEG: voxels of segment ``n`` get label ``n`` (or ``N`` when the segment's description is
    ``"medseg label value N"``, as written by :func:`write_dicom_seg`). Without ``reference`` the map
    is on the SEG's own frame grid; with ``reference`` (the source series' Volume) every frame is placed
    on the reference grid by its position, so the result has ``reference``'s shape and affine.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path)
    if not is_dicom_file(path):
        raise InputError("not a DICOM file (no DICM preamble)", path)
    ds = _read(path, headers_only=True)
    if _uid(ds, "SOPClassUID") == SEG_SOP_CLASS_UID:
        return _read_seg(path, reference)
    if "Rows" not in ds:
        raise InputError("DICOM file holds no image", path)
    return _volume(_frames_of(path, ds, require_geometry=False), ds, path, require_geometry=False)


# --- DICOM-SEG -----------------------------------------------------------------------------------

def _segment_values(ds, path: Path) -> dict[int, int]:
    """Segment number → label value."""
    values = {}
    for item in ds.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        match = _SEG_VALUE_DESCRIPTION.match(str(item.get("SegmentDescription", "") or ""))
        values[number] = int(match.group(1)) if match else number
    if not values:
        raise InputError("DICOM-SEG without SegmentSequence", path)
    return values


def _seg_own_grid(frames: list[_Frame], path: Path) -> Volume:
    """An empty grid (1, columns, rows, slices) covering the SEG frames' positions (frames may be sparse)."""
    _check_uniform(frames, path)
    _, _, normal = _axes(frames[0])
    depth = np.array([fr.position @ normal for fr in frames])
    levels = np.unique(np.round(depth, 3))
    gaps = np.diff(levels)
    candidates = [c for c in (frames[0].thickness, gaps.min() if gaps.size else None) if c]
    offsets = levels - levels[0]
    on_grid = [c for c in candidates if np.all(np.abs(offsets / c - np.round(offsets / c)) <= GRID_TOL_VOXELS)]
    if not on_grid and len(levels) > 1:
        raise InputError("DICOM-SEG frame positions are not on a regular slice grid", path)
    step = (on_grid or candidates or [1.0])[0]
    base = frames[int(np.argmin(depth))]
    n_slices = int(round((levels[-1] - levels[0]) / step)) + 1
    affine = LPS_TO_RAS @ _lps_affine(base, normal * step)
    return Volume(np.zeros((1, base.cols, base.rows, n_slices), np.uint8), affine, source=str(path))


def _frame_to_grid(frame: _Frame, grid: Volume, path: Path, number: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer map of frame pixel (column i, row j) to ``grid`` voxel: ``(3, 2)`` matrix and ``(3,)`` offset."""
    world = LPS_TO_RAS @ _lps_affine(frame, np.zeros(3))
    voxel = np.linalg.solve(grid.affine, world)
    linear, offset = voxel[:3, :2], voxel[:3, 3]
    rounded, offset_int = np.round(linear), np.round(offset)
    extent = np.array([frame.cols - 1, frame.rows - 1])
    error = np.abs(linear - rounded) @ extent + np.abs(offset - offset_int)
    axes_ok = (np.abs(rounded).sum(axis=0) == 1).all() and (np.abs(rounded).sum(axis=1) <= 1).all()
    if not axes_ok or error.max() > GRID_TOL_VOXELS:
        raise GeometryError(f"DICOM-SEG frame {number} does not lie on the reference grid "
                            f"(off by up to {error.max():.3g} voxels)", path)
    return rounded.astype(np.int64), offset_int.astype(np.int64)


def _read_seg(path: Path, reference: Volume | None) -> Volume:
    ds = _read(path, headers_only=False)
    values = _segment_values(ds, path)
    frames = _frames_of(path, ds)
    pixels = _decode(ds, path)
    if pixels.ndim == 2:
        pixels = pixels[None]
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    if seg_type == "FRACTIONAL":
        pixels = pixels >= float(ds.get("MaximumFractionalValue", 255)) / 2
    grid = reference if reference is not None else _seg_own_grid(frames, path)
    top = max(values.values())
    out = np.zeros(grid.spatial_shape, dtype=np.uint8 if top <= 255 else np.int16)
    lut = np.zeros(max(values) + 1, dtype=out.dtype)
    for number, value in values.items():
        lut[number] = value
    overlap = False
    for f, frame in enumerate(frames):
        cols, rows = np.nonzero(pixels[f].T)  # column i, row j of foreground pixels
        if cols.size == 0:
            continue
        linear, offset = _frame_to_grid(frame, grid, path, f + 1)
        index = linear @ np.stack([cols, rows]) + offset[:, None]
        if ((index < 0) | (index >= np.array(grid.spatial_shape)[:, None])).any():
            raise GeometryError(f"DICOM-SEG frame {f + 1} has labelled pixels outside the reference grid", path)
        if seg_type == "LABELMAP":
            labels = lut[np.clip(pixels[f].T[cols, rows], 0, len(lut) - 1)]
        else:
            number = _functional(ds, f, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
            if number is None or int(number) not in values:
                raise InputError(f"DICOM-SEG frame {f + 1} references an unknown segment", path)
            labels = lut[int(number)]
        target = tuple(index)
        overlap |= bool(out[target].any())
        out[target] = labels
    refs = [str(item.ReferencedSOPInstanceUID) for series in ds.get("ReferencedSeriesSequence", [])
            for item in series.get("ReferencedInstanceSequence", [])]
    meta = {
        "format": "dicom-seg",
        "series_uid": _uid(ds, "SeriesInstanceUID"),
        "modality": "SEG",
        "study_uid": _uid(ds, "StudyInstanceUID"),
        "frame_of_reference_uid": _uid(ds, "FrameOfReferenceUID"),
        "segment_labels": {str(item.get("SegmentLabel", f"segment {item.SegmentNumber}")): values[int(item.SegmentNumber)]
                           for item in ds.SegmentSequence},
        "referenced_sop_instance_uids": refs,
        "overlapping_segments": overlap,
    }
    return Volume(array=out[None], affine=grid.affine.copy(), source=str(path), meta=meta)


_TYPE2_STUDY_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                           "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


def _clean_source(ds, slice_spacing: float):
    """A copy of a source header that highdicom accepts: an empty SpecificCharacterSet removed, missing
    type-2 patient/study attributes (which highdicom copies) added empty, a missing SliceThickness set to
    the slice spacing. The input file is untouched."""
    ds = copy.deepcopy(ds)
    if "PerFrameFunctionalGroupsSequence" not in ds and not ds.get("SliceThickness"):
        ds.SliceThickness = f"{slice_spacing:.6g}"
    if "SpecificCharacterSet" in ds and not ds.get("SpecificCharacterSet"):
        del ds["SpecificCharacterSet"]
    for keyword in _TYPE2_STUDY_ATTRIBUTES:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def write_dicom_seg(label: Volume, source_folder: str | Path, path: str | Path, label_names: dict[str, int], *,
                    series_uid: str | None = None, overwrite: bool = True) -> Path:
    """Write ``label`` ``(1, columns, rows, slices)`` as a BINARY DICOM-SEG referencing the source series.

    One segment per declared foreground label (``label_names``: name → value, 0 = background), algorithm
    type AUTOMATIC, algorithm "medseg". Segment numbers equal the label values when these are 1..K;
    otherwise segments are numbered in value order and each carries the description
    ``"medseg label value N"`` so that :func:`read_dicom_file` restores the values. ``label`` must be on
    the series grid (up to an exact axis permutation/flip). Written atomically.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medseg import __version__
    from medseg.io.atomic import atomic_path
    from medseg.io.grid import reorient_to_match

    path = Path(path)
    source_folder = Path(source_folder)
    if not overwrite and path.exists():
        raise OutputExistsError("output exists (pass overwrite=True to replace it)", path)
    _, members = _select(source_folder, series_uid)
    frames, affine = _sort_and_grid([fr for p, ds in members for fr in _frames_of(p, ds)], source_folder)
    grid = Volume(np.zeros((1, frames[0].cols, frames[0].rows, len(frames)), np.uint8), affine, source=str(source_folder))
    if label.num_channels != 1:
        raise LabelError(f"label map has {label.num_channels} channels; expected 1", label.source or path)
    if not label.same_grid(grid, atol=1e-3):
        matched = reorient_to_match(label, grid)
        if matched is None:
            raise GeometryError(f"label grid {label.spatial_shape} does not match the DICOM series grid "
                                f"{grid.spatial_shape} of {source_folder}", label.source or path)
        label = matched
    data = label.array[0]
    if not np.issubdtype(data.dtype, np.integer):
        if not np.array_equal(data, np.round(data)):
            raise LabelError("label map has non-integer values", label.source or path)
        data = data.astype(np.int64)
    foreground = sorted((value, name) for name, value in label_names.items() if int(value) > 0)
    if not foreground:
        raise LabelError("no foreground label declared", path)
    declared = {int(v) for v, _ in foreground} | {0}
    unknown = sorted(set(np.unique(data).tolist()) - declared)
    if unknown:
        raise LabelError(f"label values {unknown[:10]} are not declared in the label names", label.source or path)
    contiguous = [v for v, _ in foreground] == list(range(1, len(foreground) + 1))
    numbers = np.zeros(max(declared) + 1, dtype=np.uint16 if len(foreground) > 255 else np.uint8)
    descriptions = []
    for number, (value, name) in enumerate(foreground, start=1):
        numbers[value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(name),
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="medseg", version=__version__, family=codes.cid7162.ArtificialIntelligence),
        ))
        if not contiguous:
            descriptions[-1].SegmentDescription = f"medseg label value {value}"
    stack = numbers[data].transpose(2, 1, 0)  # (slices, rows, columns): frame k ↔ sorted source slice k
    paths = list(dict.fromkeys(fr.path for fr in frames))
    if any(fr.index is not None for fr in frames):
        if len(paths) != 1:
            raise InputError("writing DICOM-SEG for a series of several multi-frame files is not supported", source_folder)
        stack = stack[np.argsort([fr.index for fr in frames])]  # source frame order
        sources = [_read(paths[0], headers_only=True)]
    else:
        headers = {p: ds for p, ds in members}
        sources = [headers[fr.path] for fr in frames]
    sources = [_clean_source(ds, float(np.linalg.norm(affine[:3, 2]))) for ds in sources]
    try:
        with warnings.catch_warnings():  # highdicom's warnings quote header values (patient names)
            warnings.simplefilter("ignore")
            seg = hd.seg.Segmentation(
                source_images=sources, pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=999,
                sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medseg", manufacturer_model_name="medseg",
                software_versions=__version__, device_serial_number="medseg", series_description="medseg segmentation",
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # message may quote header values: not shown
        raise InputError(f"cannot build a DICOM-SEG from this series ({type(exc).__name__} in highdicom)",
                         source_folder) from exc
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
