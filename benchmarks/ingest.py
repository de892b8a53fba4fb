"""Ingest throughput (cases per second): ``medseg.ingest.ingest`` vs the equivalent MONAI pipeline on the
same files in the same run.

MONAI pipeline per case: LoadImaged → EnsureChannelFirstd → Orientationd("RAS") → Spacingd(target
spacing; bilinear image, nearest label) → NormalizeIntensityd(nonzero, channel-wise) → np.save of both
arrays. medseg does more per case (pair checks, fingerprint, dataset-level CT statistics, spline
resampling, class locations, CASE.json, splits), so the comparison is conservative for medseg.

Datasets (from the shared data folder, nothing copied; the CT sets are symlinks to one scan repeated):
hippocampus (195 MR cases, 1 mm), BRATS 2013 subset (4 cases, 2 channels, 240×240×155), spleen CT crop
×6 resampled to 1×1×2.5 mm, TotalSegmentator CT ×6 resampled from 3 mm to 1.5 mm.

Usage: ``python benchmarks/ingest.py [--quick]`` → benchmarks/results/ingest.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


from common import machine  # noqa: E402  (benchmarks/common.py)


def repeated_case_folder(root: Path, image: Path, label: Path, copies: int, stem: str) -> Path:
    """An nnU-Net raw folder of ``copies`` symlinks to one image/label pair."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for k in range(copies):
        (root / "imagesTr" / f"{stem}_{k:03d}_0000.nii.gz").symlink_to(image)
        (root / "labelsTr" / f"{stem}_{k:03d}.nii.gz").symlink_to(label)
    return root


def monai_pipeline(pairs: list[tuple[list[Path], Path]], target: list[float], out: Path) -> float:
    """Seconds for the MONAI transforms + saving on every (channel files, label) pair."""
    from monai.transforms import (
        Compose, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd, Orientationd, Spacingd,
    )

    keys = ["image", "label"]
    transform = Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=target, mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, (channels, label) in enumerate(pairs):
        item = transform({"image": [str(c) for c in channels] if len(channels) > 1 else str(channels[0]),
                          "label": str(label)})
        np.save(out / f"{i}_image.npy", np.asarray(item["image"], dtype=np.float32))
        np.save(out / f"{i}_label.npy", np.asarray(item["label"]).astype(np.uint8))
    return time.perf_counter() - start


def datasets(tmp: Path, quick: bool) -> list[dict]:
    from medseg.ingest import find_cases

    hippo = SHARED / "3d" / "hippocampus"
    brats = SHARED / "3d" / "brats2013_subset"
    spleen = repeated_case_folder(tmp / "spleen_src", SHARED / "3d" / "spleen_crop" / "image.nii.gz",
                                  SHARED / "3d" / "spleen_crop" / "label.nii.gz", 2 if quick else 6, "spleen")
    ts = repeated_case_folder(tmp / "ts_src", SHARED / "3d" / "totalseg_examples" / "example_ct_sm.nii.gz",
                              SHARED / "3d" / "totalseg_examples" / "example_seg.nii.gz", 2 if quick else 6, "ts")
    specs = [
        {"name": "hippocampus", "source": hippo, "kwargs": {"max_cases": 20 if quick else None}, "target": [1.0, 1.0, 1.0]},
        {"name": "brats2013", "source": brats, "target": [1.0, 1.0, 1.0],
         "kwargs": {"channels": ["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"], "label_file": "OTMultiClass",
                    "max_cases": 2 if quick else None}},
        {"name": "spleen_ct_x6", "source": spleen, "kwargs": {}, "target": [1.0, 1.0, 2.5]},
        {"name": "totalseg_ct_x6", "source": ts, "kwargs": {}, "target": [1.5, 1.5, 1.5]},
    ]
    for spec in specs:
        kw = {k: v for k, v in spec["kwargs"].items() if k in ("channels", "label_file")}
        cases = sorted(find_cases(spec["source"], **kw).cases, key=lambda c: c.case_id)
        if spec["kwargs"].get("max_cases"):
            cases = cases[: spec["kwargs"]["max_cases"]]
        spec["pairs"] = [(list(c.images), c.label) for c in cases]
    return specs


def run(quick: bool) -> dict:
    from medseg.ingest import ingest

    results = {"machine": machine(), "quick": quick, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec in datasets(tmp, quick):
            n = len(spec["pairs"])
            kwargs = {k: v for k, v in spec["kwargs"].items() if v is not None}
            row = {"cases": n, "target_spacing": spec["target"]}
            for workers in (1, 2):
                start = time.perf_counter()
                out = ingest(spec["source"], f"{spec['name']}_{workers}", data_root=tmp / "data", overwrite=True,
                             target_spacing=spec["target"], workers=workers, **kwargs)
                row[f"medseg_workers{workers}_s"] = round(time.perf_counter() - start, 3)
            row["monai_s"] = round(monai_pipeline(spec["pairs"], spec["target"], tmp / "monai" / spec["name"]), 3)
            row["medseg_cases_per_s"] = round(n / row["medseg_workers1_s"], 2)
            row["medseg_workers2_cases_per_s"] = round(n / row["medseg_workers2_s"], 2)
            row["monai_cases_per_s"] = round(n / row["monai_s"], 2)
            row["speedup_vs_monai"] = round(row["monai_s"] / row["medseg_workers1_s"], 2)
            row["speedup_vs_monai_workers2"] = round(row["monai_s"] / row["medseg_workers2_s"], 2)
            first = json.loads((out / "dataset.json").read_text())["training"][0]["case_id"]
            ours = np.load(out / "preprocessed" / f"{first}_image.npy", mmap_mode="r").shape
            theirs = np.load(tmp / "monai" / spec["name"] / "0_image.npy", mmap_mode="r").shape
            row["first_case_shape"] = {"medseg": list(ours), "monai": list(theirs)}
            results["datasets"][spec["name"]] = row
            print(spec["name"], row, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subsets (a smoke run)")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    args = parser.parse_args()
    results = run(args.quick)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
