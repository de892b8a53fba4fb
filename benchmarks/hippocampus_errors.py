"""Where a two-structure segmentation loses its Dice: per structure, between the structures, or outside.

For each prediction folder (label maps named like the references): the per-case mean Dice of each label,
of all labels as one ("whole"), the range and median of each label's per-case Dice, its false positives and
false negatives over all cases, and the share of its wrong voxels that carry another foreground label
(swaps between structures). With ``--probabilities`` (folders of ``<case>_probabilities.nii.gz`` written by
``medseg predict --save-probabilities``, channels last) the same for the ensemble that averages them.

    .venv/bin/medseg predict VAL_IMAGES --model models/A/checkpoint_last.pt --save-probabilities -o /tmp/a
    .venv/bin/medseg predict VAL_IMAGES --model models/B/checkpoint_last.pt --save-probabilities -o /tmp/b
    .venv/bin/python benchmarks/hippocampus_errors.py VAL_LABELS a=/tmp/a b=/tmp/b --probabilities /tmp/a /tmp/b \\
        --out benchmarks/results/hippocampus_errors.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402  (benchmarks/common.py)

from medseg.metrics.overlap import confusion, overlap_metrics  # noqa: E402


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return overlap_metrics(confusion(pred, ref))["dice"]


def read(path: Path) -> np.ndarray:
    """The stored voxel array, as written (no reorientation: it must line up with the probability files)."""
    return np.rint(np.asarray(nib.load(path).dataobj)).astype(np.int64)


def analyse(refs: dict[str, np.ndarray], preds: dict[str, np.ndarray]) -> dict:
    labels = sorted({int(v) for r in refs.values() for v in np.unique(r)} - {0})
    out: dict = {"whole_dice": float(np.mean([dice(preds[c] > 0, refs[c] > 0) for c in refs]))}
    for label in labels:
        per_case, fp, fn, wrong, swapped = [], 0, 0, 0, 0
        for case, ref in refs.items():
            pred = preds[case]
            r, p = ref == label, pred == label
            counts = confusion(p, r)
            per_case.append(overlap_metrics(counts)["dice"])
            fp += counts.fp
            fn += counts.fn
            wrong += counts.fp + counts.fn
            swapped += int((r & (pred > 0) & ~p).sum() + (p & (ref > 0) & ~r).sum())
        out[str(label)] = {"dice_mean": float(np.nanmean(per_case)), "dice_min": float(np.nanmin(per_case)),
                           "dice_median": float(np.nanmedian(per_case)), "dice_max": float(np.nanmax(per_case)),
                           "false_positives": fp, "false_negatives": fn,
                           "swapped_share_of_wrong": swapped / wrong if wrong else 0.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="folder of reference label maps")
    parser.add_argument("predictions", nargs="+", metavar="NAME=FOLDER", help="folders of predicted label maps")
    parser.add_argument("--probabilities", nargs="*", type=Path, default=[],
                        help="folders of <case>_probabilities.nii.gz to average into an ensemble")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    refs = {p.name: read(p) for p in sorted(args.labels.glob("*.nii.gz"))}
    result: dict = {"benchmark": "hippocampus_errors: where the Dice of each structure is lost",
                    "cases": len(refs), "runs": {}}
    for item in args.predictions:
        name, folder = item.split("=", 1)
        result["runs"][name] = analyse(refs, {c: read(Path(folder) / c) for c in refs})
    if args.probabilities:
        ensemble = {}
        for case in refs:
            stem = case[: -len(".nii.gz")]
            probs = sum(np.asarray(nib.load(f / f"{stem}_probabilities.nii.gz").dataobj, dtype=np.float32)
                        for f in args.probabilities)
            ensemble[case] = probs.argmax(-1)
        result["runs"]["ensemble"] = analyse(refs, ensemble)  # the average of the --probabilities folders
    result["machine"] = {k: v for k, v in machine().items() if k != "load_average_at_start"}
    result["date"] = dt.datetime.now().isoformat(timespec="seconds")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["runs"], indent=2))


if __name__ == "__main__":
    main()
