"""Tiny synthetic DICOM writers for tests (pydicom only; explicit VR little endian, uncompressed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
PATIENT = {"PatientName": "Secretname^Jane", "PatientID": "PID-778899", "PatientBirthDate": "19510203"}


def oblique_orientation(angle_deg: float = 25.0) -> np.ndarray:
    """Row and column cosines (6,) of a plane rotated about two axes."""
    a, b = np.deg2rad(angle_deg), np.deg2rad(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rz @ rx
    return np.concatenate([rot[:, 0], rot[:, 1]])


def _base(sop_class: str, series_uid: str, study_uid: str, description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid[:60] + ".1"
    ds.Modality = "CT"
    ds.SeriesDescription = description
    ds.SeriesNumber = 3
    ds.StudyDate = "20240101"
    ds.Manufacturer = "synthetic"
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.PatientSex = "F"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def _num(value: float) -> str:
    return f"{value:.6f}"


def write_series(folder: Path, pixels: np.ndarray, positions: np.ndarray, orientation: np.ndarray,
                 spacing=(0.8, 0.6), slope: float = 2.0, intercept: float = -1024.0, names=None,
                 instance_numbers=None, description: str = "synthetic", series_uid: str | None = None,
                 study_uid: str | None = None, thickness: float | None = None) -> list[Path]:
    """Write slice ``s`` (``pixels[s]``: (rows, cols) int16) at ``positions[s]`` (LPS) as its own file."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    paths = []
    for s, slice_pixels in enumerate(pixels):
        ds = _base(CT_IMAGE, series_uid, study_uid, description)
        ds.InstanceNumber = int(instance_numbers[s]) if instance_numbers is not None else s + 1
        ds.ImagePositionPatient = [_num(v) for v in positions[s]]
        ds.ImageOrientationPatient = [_num(v) for v in (orientation[s] if np.ndim(orientation) == 2 else orientation)]
        ds.PixelSpacing = [_num(spacing[0]), _num(spacing[1])]
        if thickness is not None:
            ds.SliceThickness = _num(thickness)
        ds.RescaleSlope = _num(slope)
        ds.RescaleIntercept = _num(intercept)
        ds.Rows, ds.Columns = slice_pixels.shape
        ds.PixelData = np.ascontiguousarray(slice_pixels.astype(np.int16)).tobytes()
        path = folder / (names[s] if names is not None else f"slice{s:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_multiframe(path: Path, pixels: np.ndarray, positions: np.ndarray, orientation: np.ndarray,
                     spacing=(0.8, 0.6), slope: float = 2.0, intercept: float = -1024.0) -> Path:
    """One enhanced CT file: frame ``f`` is ``pixels[f]`` at ``positions[f]`` (per-frame functional groups)."""
    ds = _base(ENHANCED_CT_IMAGE, generate_uid(), generate_uid(), "multiframe")
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(pixels)
    ds.Rows, ds.Columns = pixels.shape[1:]
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [_num(v) for v in orientation]
    measures = Dataset()
    measures.PixelSpacing = [_num(spacing[0]), _num(spacing[1])]
    measures.SliceThickness = "1.0"
    transform = Dataset()
    transform.RescaleSlope = _num(slope)
    transform.RescaleIntercept = _num(intercept)
    transform.RescaleType = "HU"
    shared.PlaneOrientationSequence = [orient]
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for position in positions:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [_num(v) for v in position]
        item.PlanePositionSequence = [plane]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
