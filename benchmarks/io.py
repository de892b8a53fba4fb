"""Benchmark: reading images with medseg.io vs the peers, in one run, with the results compared.

Cases (shared data under MEDSEG_SHARED_DATA, default ../shared/data, plus one synthetic series):
  dicom_ct20        20-slice CT series, JPEG 2000    medseg read_dicom_series | SimpleITK ImageSeriesReader | MONAI LoadImage(PydicomReader)
  dicom_pgbm_t1     24-slice oblique MR series       same peers
  dicom_synth_200   synthetic uncompressed 512×512×200 CT series written to a temp folder
  nifti_brats       240×240×155 float32 .nii.gz       medseg read_volume | nibabel | MONAI LoadImage(NibabelReader)
  image2d_kvasir    50 Kvasir JPEG masks as labels    medseg read_image2d | Pillow + numpy threshold

Each reader runs ``--repeat`` times (median wall time, warm file cache). For DICOM the arrays must equal
SimpleITK's (after its (z, y, x) → (x, y, z) transpose) and the origin/spacing/direction must agree to
1e-3; the result records whether they do. Ratios are peer_time / medseg_time (> 1: medseg is faster).

    .venv/bin/python benchmarks/io.py [--repeat 3]

Writes benchmarks/results/io.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "io.json"


from common import machine  # noqa: E402  (benchmarks/common.py)


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def sitk_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def monai_load(path: Path, reader: str):
    from monai.transforms import LoadImage

    return LoadImage(reader=reader, image_only=True)(str(path))


def write_synthetic_series(folder: Path, n: int = 200) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    base = rng.integers(0, 2000, (512, 512)).astype(np.int16)
    for k in rng.permutation(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.InstanceNumber = "CT", int(k) + 1
        ds.ImagePositionPatient = ["-250", "-250", f"{-300 + 1.5 * k:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing, ds.SliceThickness = ["0.8", "0.8"], "1.5"
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.PixelData = np.roll(base, int(k), axis=0).tobytes()
        ds.save_as(folder / f"{meta.MediaStorageSOPInstanceUID}.dcm", enforce_file_format=True)


def bench_dicom(folder: Path, repeat: int) -> dict:
    import SimpleITK as sitk

    from medseg.io.dicom import read_dicom_series

    t_medseg, ours = timed(lambda: read_dicom_series(folder), repeat)
    t_sitk, image = timed(lambda: sitk_series(folder), repeat)
    origin, spacing, direction = ours.itk_geometry()
    row = {
        "shape": list(ours.spatial_shape),
        "medseg_s": round(t_medseg, 4), "sitk_s": round(t_sitk, 4),
        "sitk_over_medseg": round(t_sitk / t_medseg, 3),
        "same_array_as_sitk": bool(np.array_equal(ours.array[0], sitk.GetArrayFromImage(image).transpose(2, 1, 0))),
        "same_geometry_as_sitk": bool(np.allclose(origin, image.GetOrigin(), atol=1e-3)
                                      and np.allclose(spacing, image.GetSpacing(), atol=1e-3)
                                      and np.allclose(direction, image.GetDirection(), atol=1e-3)),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_monai, mon = timed(lambda: monai_load(folder, "PydicomReader"), repeat)
        row.update(monai_s=round(t_monai, 4), monai_over_medseg=round(t_monai / t_medseg, 3),
                   monai_shape=list(np.asarray(mon).shape))
    except Exception as exc:  # record the peer's failure instead of hiding the case
        row["monai_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    return row


def bench_nifti(path: Path, repeat: int) -> dict:
    import nibabel as nib

    from medseg.io import read_volume

    t_medseg, ours = timed(lambda: read_volume(path), repeat)
    t_nib, data = timed(lambda: np.asanyarray(nib.load(str(path)).dataobj), repeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_monai, _ = timed(lambda: monai_load(path, "NibabelReader"), repeat)
    return {"shape": list(ours.spatial_shape), "medseg_s": round(t_medseg, 4), "nibabel_s": round(t_nib, 4),
            "monai_s": round(t_monai, 4), "nibabel_over_medseg": round(t_nib / t_medseg, 3),
            "monai_over_medseg": round(t_monai / t_medseg, 3), "same_array": bool(np.array_equal(ours.array[0], data))}


def bench_image2d(paths: list[Path], repeat: int) -> dict:
    from PIL import Image

    from medseg.io.image2d import read_image2d

    def pillow():
        return [(np.asarray(Image.open(p).convert("L")) > 127).astype(np.uint8).T for p in paths]

    t_medseg, ours = timed(lambda: [read_image2d(p, as_label=True) for p in paths], repeat)
    t_pil, theirs = timed(pillow, repeat)
    agree = float(np.mean([np.mean(a.array[0] == b) for a, b in zip(ours, theirs)]))
    return {"images": len(paths), "medseg_s": round(t_medseg, 4), "pillow_s": round(t_pil, 4),
            "pillow_over_medseg": round(t_pil / t_medseg, 3), "pixel_agreement": round(agree, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
    results = {"machine": machine(), "repeat": args.repeat, "cases": {}}
    cases = results["cases"]
    cases["dicom_ct20"] = bench_dicom(data / "dicom/ct_20slice/series", args.repeat)
    cases["dicom_pgbm_t1"] = bench_dicom(data / "dicom/mr_brain_tumor_pgbm001/11-T1post-80644", args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_series(Path(tmp))
        cases["dicom_synth_200"] = bench_dicom(Path(tmp), args.repeat)
    brats = sorted((data / "3d/brats2013_subset").glob("*/Flair_subtrMeanDivStd.nii.gz"))[0]
    cases["nifti_brats"] = bench_nifti(brats, args.repeat)
    cases["image2d_kvasir"] = bench_image2d(sorted((data / "2d/kvasir_seg/masks").glob("*.jpg"))[:50], args.repeat)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["cases"], indent=2))


if __name__ == "__main__":
    main()
