"""``log.csv`` (one row per epoch) and ``curves.png`` (loss, validation Dice and learning rate)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from medseg.io.atomic import atomic_path

BASE_COLUMNS = ["epoch", "train_loss", "val_dice"]
TAIL_COLUMNS = ["lr", "samples_per_s", "data_wait_fraction", "skipped_steps", "effective_batch", "wall_time_s"]


def log_columns(labels: dict[str, int]) -> list[str]:
    """Columns of log.csv: epoch, train_loss, val_dice, val_dice_<class>..., lr, samples_per_s, ..."""
    per_class = [f"val_dice_{name}" for name, value in sorted(labels.items(), key=lambda kv: kv[1]) if value != 0]
    return BASE_COLUMNS + per_class + TAIL_COLUMNS


def read_log(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_log(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """Write all ``rows`` atomically (the file is small: one row per epoch)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k)) for k in columns})
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue())


def _floats(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if value not in (None, ""):
            xs.append(int(float(row["epoch"])))
            ys.append(float(value))
    return xs, ys


def plot_curves(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Training loss and validation Dice against the epoch (top), learning rate (bottom), to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    x, y = _floats(rows, "train_loss")
    ax_loss.plot(x, y, color="tab:blue", label="train loss")
    ax_loss.set_ylabel("loss")
    ax_dice = ax_loss.twinx()
    x, y = _floats(rows, "val_dice")
    ax_dice.plot(x, y, "o-", color="tab:green", label="val Dice (mean foreground)")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_ylim(0, 1)
    lines = ax_loss.get_lines() + ax_dice.get_lines()
    ax_loss.legend(lines, [line.get_label() for line in lines], loc="center right")
    x, y = _floats(rows, "lr")
    ax_lr.plot(x, y, color="tab:orange")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("epoch")
    if title:
        ax_loss.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
