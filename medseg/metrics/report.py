"""Summaries and outputs of an evaluation: statistics, CSV, JSON, the rich table, box plots.

Summary rule (docs/metrics.md): each metric's mean, std (population) and median per structure use the
rows where that metric is finite; ``n`` says how many rows that is, and ``n_nan`` / ``n_inf`` how many
were left out, next to the count of each status. NaN and inf never enter a mean.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from medseg.errors import OutputExistsError, UsageError
from medseg.io.atomic import atomic_path
from medseg.metrics.case import STATUSES
from medseg.metrics.evaluation import EvaluationReport

ROW_KEYS = ("case", "label", "value", "status", "tp", "fp", "fn", "tn")


def _stats(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    stats = {"mean": None, "std": None, "median": None}
    if finite.size:
        stats = {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite))}
    return {**stats, "n": int(finite.size), "n_nan": int(np.isnan(array).sum()), "n_inf": int(np.isinf(array).sum())}


def summarize(report: EvaluationReport) -> dict:
    """``{"labels": {name: {"value", "status_counts", "metrics": {metric: stats}}}, "mean_over_labels": ...}``.

    ``mean_over_labels`` averages the per-label means of each metric (labels without a finite value
    skipped).
    """
    per_label = {}
    for name, value in report.labels.items():
        rows = [row for row in report.rows if row["value"] == value]
        statuses = [row["status"] for row in rows]
        per_label[name] = {
            "value": value,
            "status_counts": {status: statuses.count(status) for status in STATUSES},
            "metrics": {metric: _stats([row[metric] for row in rows]) for metric in report.metrics},
        }
    mean_over_labels = {}
    for metric in report.metrics:
        means = [entry["metrics"][metric]["mean"] for entry in per_label.values()]
        means = [m for m in means if m is not None]
        mean_over_labels[metric] = float(np.mean(means)) if means else None
    return {
        "pred": report.pred, "ref": report.ref, "num_cases": len(report.cases),
        "missing": report.missing, "extra": report.extra,
        "labels": per_label, "mean_over_labels": mean_over_labels,
        "tolerances_mm": list(report.tolerances_mm), "spacing": "reference",
        "rule": "statistics over finite values; n_nan/n_inf and status_counts say what was left out (docs/metrics.md)",
    }


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_json(report: EvaluationReport, include_rows: bool = True) -> dict:
    """The summary, plus the per-case rows (non-finite values as null; ``status`` says why)."""
    from medseg import __version__

    out = {"medseg_version": __version__, "summary": report.summary()}
    if include_rows:
        out["cases"] = [{k: _json_value(v) for k, v in row.items()} for row in report.rows]
    return out


def csv_text(report: EvaluationReport) -> str:
    """One row per case and structure; NaN and inf written as ``nan`` / ``inf``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*ROW_KEYS, *report.metrics], lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.rows)
    return buffer.getvalue()


def output_paths(output: str | Path | None, plots: str | Path | None, metrics: list[str]) -> list[Path]:
    """Every file that ``write_outputs`` would write (to check for existing files up front)."""
    paths = []
    if output is not None:
        output = Path(output)
        suffix = output.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise UsageError(f"-o {output}: the report must end in .csv or .json")
        paths += [output, output.with_suffix(".json")] if suffix == ".csv" else [output]
    if plots is not None:
        paths += [Path(plots) / f"{metric}.png" for metric in metrics]
    return paths


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """OutputExistsError for the first existing path unless ``overwrite``."""
    for path in paths:
        if path.exists() and not overwrite:
            raise OutputExistsError("already exists (use --overwrite to replace it)", path)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_outputs(report: EvaluationReport, output: str | Path | None = None, plots: str | Path | None = None,
                  overwrite: bool = False) -> list[Path]:
    """Write the report: ``.csv`` (rows) with a sibling ``.json`` summary, or ``.json`` (summary and rows);
    box plots into ``plots``. Each file is written atomically; existing files need ``overwrite``."""
    paths = output_paths(output, plots, report.metrics)
    check_outputs(paths, overwrite)
    written = []
    if output is not None:
        output = Path(output)
        if output.suffix.lower() == ".csv":
            _write_text(output, csv_text(report))
            written.append(output)
            output = output.with_suffix(".json")
            _write_text(output, json.dumps(report_json(report, include_rows=False), indent=2) + "\n")
        else:
            _write_text(output, json.dumps(report_json(report), indent=2) + "\n")
        written.append(output)
    if plots is not None:
        written += save_box_plots(report, plots)
    return written


def save_box_plots(report: EvaluationReport, folder: str | Path) -> list[Path]:
    """One PNG per metric in ``folder``: a box per structure over the cases' finite values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in report.metrics:
        data, names = [], []
        for name, value in report.labels.items():
            values = np.asarray([row[metric] for row in report.rows if row["value"] == value], dtype=np.float64)
            data.append(values[np.isfinite(values)])
            names.append(name)
        fig, ax = plt.subplots(figsize=(max(3.0, 1.2 * len(names) + 1.5), 3.5))
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 4 else 0)
        unit = " (mm)" if metric in ("hd", "hd95", "assd") else ""
        ax.set_title(f"{metric}{unit}: {len(report.cases)} cases, finite values")
        fig.tight_layout()
        path = folder / f"{metric}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(path)
    return written


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def print_table(report: EvaluationReport, console=None) -> None:
    """The result table on stdout: mean ± std, median and n per structure and metric, then the
    status counts and the unmatched cases."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = report.summary()
    table = Table(title=f"medseg evaluate: {summary['num_cases']} case(s)", show_lines=False)
    for column, justify in (("label", "left"), ("metric", "left"), ("mean ± std", "right"), ("median", "right"), ("n", "right")):
        table.add_column(column, justify=justify)
    for name, entry in summary["labels"].items():
        for i, (metric, stats) in enumerate(entry["metrics"].items()):
            mean_std = "—" if stats["mean"] is None else f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])}"
            table.add_row(name if i == 0 else "", metric, mean_std, _fmt(stats["median"]), str(stats["n"]),
                          end_section=i == len(entry["metrics"]) - 1)
    console.print(table)
    for name, entry in summary["labels"].items():
        counts = ", ".join(f"{status} {n}" for status, n in entry["status_counts"].items() if n)
        console.print(f"{name}: {counts}", highlight=False)
    if report.missing:
        console.print(f"missing predictions ({len(report.missing)}): {', '.join(report.missing)}", highlight=False)
    if report.extra:
        console.print(f"extra predictions without reference ({len(report.extra)}): {', '.join(report.extra)}", highlight=False)
