"""Summarise a Hippocampus training run made with default settings: validation Dice against wall time.

The issue's goal for ``medseg train hippocampus --arch unet3d --fold 0`` (no other flag) is a mean validation
Dice of at least 0.87 (each structure at least 0.85) within 40 minutes of training. Training logs its
validation Dice (39 fold-0 cases, pooled per structure, no TTA) and the wall time after every epoch in
``log.csv``; this script reads that log and the run's ``config.yaml`` and writes the curve, the first times to
mean Dice 0.85 and 0.87, the best and last values within ``--minutes``, and the machine to
``benchmarks/results/train_hippocampus_default_ARCH.json``.

    nohup .venv/bin/medseg train hippocampus --arch unet3d --fold 0 --run-name default_unet3d > /tmp/d.log &
    .venv/bin/medseg predict VAL_IMAGES --model models/default_unet3d -o /tmp/pred   # checkpoint_best.pt
    .venv/bin/medseg evaluate /tmp/pred VAL_LABELS --labels data/hippocampus/dataset.json --nsd-tolerance 1 \\
        -o /tmp/report.csv
    .venv/bin/python benchmarks/hippocampus_default_run.py models/default_unet3d --report tta=/tmp/report.json \\
        --conditions "run alone; CPU steal 4 % (vmstat)"

The run may still be going (the summary covers the epochs logged so far) or stopped by hand: a default run on
a CPU plans 1000 epochs, about a day here. A run made with ``--time-limit`` (the defaults with the whole
learning-rate schedule fitted to the budget) is summarised the same way; pass ``--out`` to keep it apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402  (benchmarks/common.py)

from medseg.training import curves  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = (0.85, 0.87)


def read_log(run: Path) -> list[dict]:
    """The validated epochs of ``log.csv``, values as floats (None where empty)."""
    rows = [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
            for row in curves.read_log(run / "log.csv")]
    return [r for r in rows if r.get("val_dice") is not None]


def point(row: dict) -> dict:
    return {"epoch": int(row["epoch"]), "wall_s": round(row["wall_time_s"], 1), "dice_mean": round(row["val_dice"], 4),
            **{f"dice_{k[len('val_dice_'):].lower()}": round(v, 4) for k, v in row.items()
               if k.startswith("val_dice_") and v is not None}}


def summary(rows: list[dict], minutes: float) -> dict:
    within = [r for r in rows if r["wall_time_s"] <= minutes * 60]
    first = {f"time_to_mean_dice_{t}_s": next((round(r["wall_time_s"], 1) for r in rows if r["val_dice"] >= t), None)
             for t in TARGETS}
    best = max(within, key=lambda r: r["val_dice"]) if within else None
    return {
        **first,
        f"best_within_{minutes:g}_min": point(best) if best else None,
        f"last_within_{minutes:g}_min": point(within[-1]) if within else None,
        "best_overall": point(max(rows, key=lambda r: r["val_dice"])) if rows else None,
        "epochs_logged": int(rows[-1]["epoch"]) if rows else 0,
        "seconds_per_epoch_median": (round(statistics.median(b["wall_time_s"] - a["wall_time_s"]
                                                             for a, b in zip(rows, rows[1:])), 1)
                                     if len(rows) > 1 else None),
        "samples_per_s_median": round(statistics.median(r["samples_per_s"] for r in rows), 2) if rows else None,
    }


def evaluation(report: Path) -> dict:
    """Per-structure means (over cases) of Dice, HD95 and NSD from a ``medseg evaluate`` JSON report."""
    summary = json.loads(report.read_text())["summary"]
    out = {"num_cases": summary["num_cases"]}
    for label, entry in summary["labels"].items():
        out[label.lower()] = {k: round(v["mean"], 4) for k, v in entry["metrics"].items()
                              if k == "dice" or k.startswith(("hd95", "nsd"))}
    out["dice_mean"] = round(sum(v["dice"] for k, v in out.items() if isinstance(v, dict)) / len(summary["labels"]), 4)
    return out


def compare(rows: list[dict], other: Path) -> dict:
    """The logged mean Dice against another summarised run's curve, at the epochs both logged."""
    theirs = {p["epoch"]: p["dice_mean"] for p in json.loads(other.read_text())["curve"]}
    diffs = [row["val_dice"] - theirs[int(row["epoch"])] for row in rows if int(row["epoch"]) in theirs]
    return {"epochs": len(diffs),
            "mean_abs_difference": round(statistics.mean(map(abs, diffs)), 5) if diffs else None,
            "max_abs_difference": round(max(map(abs, diffs)), 5) if diffs else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder (models/NAME)")
    parser.add_argument("--minutes", type=float, default=40.0, help="the time goal (default 40)")
    parser.add_argument("--conditions", default="", help="what else the machine did meanwhile, CPU steal, ...")
    parser.add_argument("--report", action="append", default=[], metavar="NAME=REPORT.json",
                        help="a `medseg evaluate` JSON report of this run's predictions, e.g. tta=/tmp/r.json "
                             "(its per-structure means of Dice, HD95 and NSD are copied); the entries already in "
                             "--out are kept, a NAME given again replaces its entry")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/train_hippocampus_default_ARCH.json")
    parser.add_argument("--command", help="the training command as typed (default: rebuilt from config.yaml, "
                                          "which does not record a --config file)")
    parser.add_argument("--compare", action="append", default=[], type=Path, metavar="RESULT.json",
                        help="another run summarised by this script: the mean and largest difference of the "
                             "logged mean Dice at the epochs both logged (same seed: how far a run replays)")
    args = parser.parse_args()
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    rows = read_log(args.run)
    train, data = config["train"], config["data"]
    out = args.out or RESULTS / f"train_hippocampus_default_{config['model']['arch']}.json"
    # a run resumed across sessions is scored at several checkpoints: keep the earlier scores
    evaluated = json.loads(out.read_text()).get("predict_evaluate", {}) if out.exists() else {}
    evaluated.update({name: evaluation(Path(path)) for name, path in (r.split("=", 1) for r in args.report)})
    result = {
        "benchmark": "hippocampus_default_run: validation Dice against wall time of a run with default settings",
        "command": args.command or (f"medseg train {data['name']} --arch {config['model']['arch']} --fold {data['fold']}"
                                    + (f" --time-limit {train['time_limit']:g}" if train.get("time_limit") else "")),
        "plan": {"model_options": config["model"].get("options"), "patch": data.get("patch_size"),
                 "batch": data.get("batch_size"), "iterations_per_epoch": data.get("iterations_per_epoch"),
                 "epochs": train.get("epochs"), "time_limit_min": train.get("time_limit"),
                 "optim": config.get("optim"), "amp": train.get("amp")},
        "validation": "fold's validation cases, pooled Dice per structure, no TTA, as logged in log.csv",
        **summary(rows, args.minutes),
        "curve": [point(r) for r in rows],
        "predict_evaluate": evaluated,
        "compared_with": {path.name: compare(rows, path) for path in args.compare},
        "conditions": args.conditions,
        # the machine that summarises is the one that trained; its load now says nothing about the run
        "machine": {k: v for k, v in machine().items() if k != "load_average_at_start"},
        "summarised_by": shlex.join(["python", "benchmarks/hippocampus_default_run.py", str(args.run)]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
