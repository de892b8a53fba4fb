"""Kvasir-SEG with UNeXt, default settings: epochs and wall time to validation Dice ≥ 0.80, final Dice.

1. ingests ``<shared>/2d/kvasir_seg`` as dataset ``kvasir`` (5 folds: fold 0 = an 80/20 split), unless present;
2. runs ``medseg train kvasir --arch unext --fold 0`` (default recipe: Adam 1e-3, cosine, Dice + CE, one
   pass over the 640 training images per epoch) as a subprocess, resuming the run if it exists unfinished;
3. while it runs, and at the end, writes benchmarks/results/train_kvasir.json from the run's log.csv:
   the first epoch (and its cumulative training wall time) whose validation Dice reaches the target, the
   last and best Dice, and the machine.

    nohup .venv/bin/python benchmarks/train_kvasir.py > /tmp/kvasir_train.log 2>&1 &
    .venv/bin/python benchmarks/train_kvasir.py --report-only     # rewrite the JSON from log.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
RUN = REPO / "models" / "kvasir_unext_fold0"
OUT = REPO / "benchmarks" / "results" / "train_kvasir.json"


from common import machine  # noqa: E402  (benchmarks/common.py)


def report(target: float, status: str, extra: dict | None = None) -> dict:
    """Summarise log.csv into the JSON (written atomically)."""
    rows = []
    if (RUN / "log.csv").exists():
        with open(RUN / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    validated = [r for r in rows if r.get("val_dice")]
    reached = next((r for r in validated if float(r["val_dice"]) >= target), None)
    config = {}
    if (RUN / "config.yaml").exists():
        import yaml

        config = yaml.safe_load((RUN / "config.yaml").read_text())
    result = {
        "status": status,
        "command": "medseg train kvasir --arch unext --fold 0",
        "dataset": "Kvasir-SEG (shared 2d/kvasir_seg, 800 images 256×256), fold 0 of 5: 640 train / 160 val",
        "target_dice": target,
        "epochs_planned": (config.get("train") or {}).get("epochs"),
        "epochs_done": int(rows[-1]["epoch"]) if rows else 0,
        "reached_target": reached is not None,
        "epochs_to_target": int(reached["epoch"]) if reached else None,
        "wall_time_to_target_s": float(reached["wall_time_s"]) if reached else None,
        "final_dice": float(validated[-1]["val_dice"]) if validated else None,
        "best_dice": max((float(r["val_dice"]) for r in validated), default=None),
        "wall_time_s": float(rows[-1]["wall_time_s"]) if rows else 0.0,
        "samples_per_s_last_epoch": float(rows[-1]["samples_per_s"]) if rows else None,
        "data_wait_fraction_last_epoch": float(rows[-1]["data_wait_fraction"]) if rows else None,
        "batch": (config.get("data") or {}).get("batch_size"),
        "iterations_per_epoch": (config.get("data") or {}).get("iterations_per_epoch"),
        "dice_by_epoch": [[int(r["epoch"]), round(float(r["val_dice"]), 4)] for r in validated],
        "machine": machine(),
        "note": "CPU shared with other jobs while this ran: wall times are upper bounds for this machine.",
        **(extra or {}),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.partial")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, OUT)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--poll", type=float, default=60.0, help="seconds between JSON updates")
    parser.add_argument("extra", nargs="*", help="extra `medseg train` options (e.g. --epochs 50)")
    args = parser.parse_args()
    if args.report_only:
        print(json.dumps(report(args.target, "report"), indent=2))
        return

    medseg = [sys.executable, "-m", "medseg"]
    if not (REPO / "data" / "kvasir" / "plan.json").exists():
        subprocess.run([*medseg, "ingest", str(SHARED / "2d" / "kvasir_seg"), "--name", "kvasir", "--folds", "5"],
                       cwd=REPO, check=True)
    command = [*medseg, "train", "kvasir", "--arch", "unext", "--fold", "0", *args.extra]
    if (RUN / "checkpoint_last.pt").exists():
        command.append("--resume")
    print("running:", " ".join(command), flush=True)
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO)
    while process.poll() is None:
        time.sleep(args.poll)
        report(args.target, "running")
    status = "finished" if process.returncode == 0 else f"failed (exit {process.returncode})"
    result = report(args.target, status, {"process_wall_time_s": time.time() - started})
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
