"""``ingest``: a source dataset → ``data/NAME/`` (dataset.json, fingerprint.json, plan.json, splits.json,
preprocessed/*.npy + CASE.json), as docs/INTERNALS.md lays out.

Two passes over the cases, each parallel over ``workers`` processes:

1. read + check every case, collect its fingerprint stats, and cache the checked arrays (original
   grid, integer label) as ``.npy`` inside the folder being built;
2. with the dataset-level plan (target spacing, normalization), run ``medseg.preprocessing.preprocess``
   on each cached case and write its arrays and properties.

The dataset folder is built under a temporary name and renamed into place at the end: a failure leaves
nothing under ``data/NAME``. A hash of the inputs (paths, sizes, modification times) and options is kept
in dataset.json so that an identical re-run returns at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__, errors, progress
from medseg.errors import InputError, MedsegError, OutputExistsError, UsageError
from medseg.ingest.fingerprint import aggregate, case_stats
from medseg.ingest.plan import MODALITIES, make_plan, make_splits, parse_target_spacing
from medseg.ingest.sources import Case, find_cases, labels_from_json

PREPROCESSED = "preprocessed"
CACHE = ".cache"
FORMAT = 1  # bump when the preprocessed output changes, so old datasets are rebuilt
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- errors across processes ---------------------------------------------------------------------------
def _error_info(exc: Exception, fallback_path: Path) -> tuple[str, str, str | None]:
    """(class name, message without the path prefix, path) of an error raised while handling a case."""
    if isinstance(exc, MedsegError):
        text = str(exc)
        if exc.path is not None and text.startswith(f"{exc.path}: "):
            text = text[len(exc.path) + 2:]
        return type(exc).__name__, text, exc.path
    return "InputError", f"could not read this case ({type(exc).__name__}: {exc})", str(fallback_path)


def _rebuild_error(info: tuple[str, str, str | None]) -> MedsegError:
    cls = getattr(errors, info[0], InputError)
    return cls(info[1], info[2])


@contextlib.contextmanager
def _pool(workers: int, n_tasks: int):
    """A process pool (spawn: safe with threads in the parent) shared by both passes, or None for 1 worker."""
    if workers <= 1 or n_tasks <= 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=min(workers, n_tasks), mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _quietly(func: Callable, task):
    """``func(task)`` with nested progress bars (the DICOM reader's, per case) off, as in worker processes."""
    was = progress.enabled()
    progress.enable(False)
    try:
        return func(task)
    finally:
        progress.enable(was)


def _run(func: Callable, tasks: list, pool, description: str, stop_on_error: bool) -> list:
    """``func(task)`` for every task (in ``pool`` when given), results in task order.

    Each result is ``("ok", payload)`` or ``("error", error_info)``; with ``stop_on_error`` the first
    error cancels what has not started yet (unfinished results stay None)."""
    results: list = [None] * len(tasks)
    with progress.bar(description, len(tasks)) as advance:
        if pool is None:
            for i, task in enumerate(tasks):
                results[i] = _quietly(func, task)
                advance(1)
                if stop_on_error and results[i][0] == "error":
                    break
            return results
        from concurrent.futures import FIRST_COMPLETED, wait

        pending = {pool.submit(func, task): i for i, task in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                results[i] = future.result()
                advance(1)
                if stop_on_error and results[i][0] == "error":
                    for other in pending:
                        other.cancel()
                    return results
    return results


# --- the two passes (module-level functions: they run in worker processes) ------------------------------
def _check_case(task: dict[str, Any]) -> tuple[str, Any]:
    """Pass 1: read + check one case, cache its arrays, return its fingerprint stats."""
    from medseg.ingest.checks import read_case

    case: Case = task["case"]
    try:
        image, label = read_case(case.images, case.label, declared=task["declared"], series_uid=task["series_uid"])
        stats = case_stats(image, label, seed=task["seed"])
        cache = Path(task["cache"])
        np.save(cache / f"{case.case_id}_image.npy", image.array)
        if label is not None:
            np.save(cache / f"{case.case_id}_label.npy", label.array)
        stats["affine"] = image.affine.tolist()
        stats["has_label"] = label is not None
        return "ok", stats
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a one-line error naming the file
        return "error", _error_info(exc, case.images[0])


def _preprocess_case(task: dict[str, Any]) -> tuple[str, Any]:
    """Pass 2: preprocess one cached case with the plan and write its .npy files and CASE.json."""
    from medseg.io import Volume
    from medseg.preprocessing import preprocess

    case_id, cache, out = task["case_id"], Path(task["cache"]), Path(task["out"])
    try:
        image = Volume(np.load(cache / f"{case_id}_image.npy", mmap_mode="r"), np.asarray(task["affine"]), source=case_id)
        label = None
        if task["has_label"]:
            label = image.with_array(np.load(cache / f"{case_id}_label.npy", mmap_mode="r"))
        array, seg, properties = preprocess(image, task["plan"], label)
        np.save(out / f"{case_id}_image.npy", array)
        if seg is not None:
            np.save(out / f"{case_id}_label.npy", seg)
        (out / f"{case_id}.json").write_text(json.dumps({"case_id": case_id, **properties}))
        for suffix in ("image", "label"):
            (cache / f"{case_id}_{suffix}.npy").unlink(missing_ok=True)
        return "ok", {"shape": list(array.shape[1:])}
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001
        return "error", _error_info(exc, Path(case_id))


# --- options and decisions ----------------------------------------------------------------------------
def _resolve_label_names(label_names) -> dict[str, int] | None:
    """``label_names``: None, a dict in either JSON form, or a path to such a JSON file."""
    if label_names is None:
        return None
    if isinstance(label_names, dict):
        return labels_from_json(label_names, "label names")
    path = Path(label_names)
    if not path.is_file():
        raise InputError("labels JSON file does not exist", path)
    try:
        return labels_from_json(json.loads(path.read_text()), path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path) from None


def _normalize_modality(modality: str | None) -> str | None:
    if modality is None:
        return None
    value = {"MRI": "MR"}.get(modality.strip().upper(), modality.strip().upper())
    if value not in MODALITIES:
        raise UsageError(f"--modality must be one of {', '.join(MODALITIES)} (got {modality!r})")
    return value


def _decide_modality(explicit: str | None, dims: int, channel_names: list[str] | None, stats: list[dict]) -> str:
    """Explicit > 2D data > declared channel names > DICOM Modality > HU-like intensities (min ≤ -500) > MR."""
    if explicit is not None:
        if (explicit == "2D") != (dims == 2):
            raise UsageError(f"--modality {explicit} does not fit {dims}D data")
        return explicit
    if dims == 2:
        return "2D"
    if channel_names:
        return "CT" if any(n.strip().upper() == "CT" for n in channel_names) else "MR"
    dicom = {s["dicom_modality"] for s in stats if s.get("dicom_modality")}
    if dicom:
        return "CT" if dicom == {"CT"} else "MR"
    return "CT" if min(min(s["min"]) for s in stats) <= -500 else "MR"


def _channel_names(declared: list[str] | None, count: int, modality: str) -> list[str]:
    if declared and len(declared) == count:
        return list(declared)
    if modality == "2D":
        return ["R", "G", "B"] if count == 3 else [f"channel_{c}" for c in range(count)]
    return [modality] if count == 1 else [f"{modality}_{c}" for c in range(count)]


def _input_hash(cases: Sequence[Case], options: dict[str, Any]) -> str:
    """A hash of every input file's path, size and modification time, and of the options."""
    digest = hashlib.sha256(json.dumps({**options, "format": FORMAT, "medseg": __version__}, sort_keys=True).encode())
    for case in cases:
        digest.update(case.case_id.encode())
        for path in (*case.images, *([case.label] if case.label else [])):
            files = [path] if not path.is_dir() else sorted(
                Path(root) / name for root, _, names in os.walk(path, followlinks=True) for name in names)
            for f in files:
                try:
                    st = f.stat()
                    digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
                except OSError:
                    digest.update(f"{f}|missing".encode())
    return digest.hexdigest()


def _up_to_date(out: Path, input_hash: str) -> bool:
    try:
        meta = json.loads((out / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    complete = all((out / name).is_file() for name in ("plan.json", "fingerprint.json", "splits.json"))
    return complete and meta.get("medseg_input_hash") == input_hash


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# --- the entry point ----------------------------------------------------------------------------------
def ingest(source: str | Path | None, name: str, *, data_root: str | Path = "data",
           images: str | Path | None = None, labels: str | Path | None = None,
           channels: Sequence[str] | None = None, label_file: str | None = None,
           modality: str | None = None, target_spacing: str | Sequence[float] | None = "auto",
           label_names: dict | str | Path | None = None, folds: int = 5, seed: int = 0, workers: int = 1,
           overwrite: bool = False, skip_bad: bool = False, series_uid: str | None = None,
           max_cases: int | None = None) -> Path:
    """Turn a source dataset into ``data_root/name`` and return that folder.

    Sources (see :mod:`medseg.ingest.sources`): a Decathlon / nnU-Net raw folder; ``images``/``labels``
    folders (relative to ``source`` when given) matched by stem; per-case folders (or ``source`` itself
    as one case) with ``channels`` entry names and a ``label_file`` name. ``series_uid`` picks one series
    in DICOM folders holding several. ``modality``: CT | MR | 2D (default: from dataset.json, DICOM
    headers or intensities). ``target_spacing``: "auto" or one number per axis (RAS order).
    ``label_names``: {"name": value} or {"value": "name"}, or a JSON file of either; default: the source's
    dataset.json, else ``label_N`` for each value found. ``max_cases``: the first N cases by id.
    ``skip_bad``: leave out failing cases (listed in the summary and in dataset.json under "skipped")
    instead of stopping at the first. Raises ``OutputExistsError`` when ``data_root/name`` holds a
    dataset built from other inputs or options and ``overwrite`` is False.
    """
    from medseg.io.atomic import atomic_dir

    if not name or not _NAME.match(name):
        raise UsageError(f"--name must be a simple folder name (letters, digits, . _ -), got {name!r}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {workers})")
    if max_cases is not None and max_cases < 1:
        raise UsageError(f"--max-cases must be at least 1 (got {max_cases})")
    explicit_modality = _normalize_modality(modality)
    declared = _resolve_label_names(label_names)
    info = find_cases(source, images=images, labels=labels, channels=list(channels) if channels else None,
                      label_file=label_file)
    declared = declared or info.labels
    problems = list(info.problems)
    if problems and not skip_bad:
        raise problems[0][1]
    cases = sorted(info.cases, key=lambda c: c.case_id)
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"several inputs give the case id '{duplicates[0]}'", source or images)
    if max_cases is not None:
        cases = cases[:max_cases]
        problems = [p for p in problems if p[0] < cases[-1].case_id] if cases else problems
    if not cases:
        raise InputError("no cases found", source or images)
    missing_labels = [c for c in cases if c.label is None]
    if missing_labels:
        raise InputError("this case has no label map (ingest needs one per case)", missing_labels[0].images[0])
    if target_spacing is not None and not isinstance(target_spacing, str):
        target_spacing = list(target_spacing)

    out = Path(data_root) / name
    options = {"layout": info.layout, "modality": explicit_modality, "target_spacing": target_spacing,
               "labels": declared, "folds": folds, "seed": seed, "skip_bad": skip_bad, "series_uid": series_uid,
               "channels": list(channels) if channels else None, "label_file": label_file, "max_cases": max_cases}
    input_hash = _input_hash(cases, options)
    if out.exists():
        if not overwrite and _up_to_date(out, input_hash):
            progress.info(f"dataset '{name}' is up to date (same inputs and options): {out}")
            return out
        if not overwrite:
            raise OutputExistsError("a dataset with this name exists (built from other inputs or options); "
                                    "use --overwrite to rebuild it", out)

    skipped = [{"case_id": case_id, "reason": _error_info(exc, Path(case_id))[1]} for case_id, exc in problems]
    with atomic_dir(out) as build, _pool(workers, len(cases)) as pool:
        cache, pre = build / CACHE, build / PREPROCESSED
        cache.mkdir()
        pre.mkdir()
        declared_values = set(declared.values()) if declared else None
        tasks = [{"case": c, "declared": declared_values, "series_uid": series_uid, "cache": str(cache),
                  "seed": zlib.crc32(c.case_id.encode()) ^ seed} for c in cases]
        results = _run(_check_case, tasks, pool, "checking cases", stop_on_error=not skip_bad)
        good, stats = [], []
        for case, result in zip(cases, results):
            if result is None:
                continue
            if result[0] == "error":
                if not skip_bad:
                    raise _rebuild_error(result[1])
                skipped.append({"case_id": case.case_id, "reason": result[1][1]})
                continue
            good.append(case)
            stats.append(result[1])
        if not good:
            raise InputError(f"no usable cases ({len(skipped)} skipped: {skipped[0]['reason'] if skipped else ''})",
                             source or images)
        reference = stats[0]
        for case, s in list(zip(good, stats))[1:]:
            for key, what in (("dims", "spatial dimensions"), ("num_channels", "channels")):
                if s[key] != reference[key]:
                    error = InputError(f"case has {s[key]} {what} but case '{good[0].case_id}' has {reference[key]}",
                                       case.images[0])
                    if not skip_bad:
                        raise error
                    skipped.append({"case_id": case.case_id, "reason": _error_info(error, case.images[0])[1]})
        bad_ids = {s["case_id"] for s in skipped}
        kept = [(c, s) for c, s in zip(good, stats) if c.case_id not in bad_ids]
        good, stats = [c for c, _ in kept], [s for _, s in kept]
        dims, num_channels = reference["dims"], reference["num_channels"]

        fingerprint = aggregate([c.case_id for c in good], stats)
        chosen_modality = _decide_modality(explicit_modality, dims, info.channel_names if info.names_declared else None, stats)
        names = _channel_names(info.channel_names, num_channels, chosen_modality)
        label_map = declared or {"background": 0, **{f"label_{v}": v for v in fingerprint["label_values"] if v}}
        plan = make_plan(fingerprint, dims=dims, modality=chosen_modality, channel_names=names, labels=label_map,
                         dtypes=[stats[0]["dtype"]] * num_channels,
                         target_spacing=parse_target_spacing(target_spacing, dims))

        tasks = [{"case_id": c.case_id, "cache": str(cache), "out": str(pre), "plan": plan,
                  "affine": s["affine"], "has_label": s["has_label"]} for c, s in zip(good, stats)]
        for result in _run(_preprocess_case, tasks, pool, "preprocessing", stop_on_error=True):
            if result is not None and result[0] == "error":
                raise _rebuild_error(result[1])
        cache.rmdir()

        case_ids = [c.case_id for c in good]
        splits = make_splits(case_ids, folds, seed)
        dataset = {
            "name": name,
            "channel_names": {str(c): n for c, n in enumerate(names)},
            "labels": label_map,
            "numTraining": len(good),
            "file_ending": ".npy",
            "training": [{"case_id": c, "image": [f"{PREPROCESSED}/{c}_image.npy"], "label": f"{PREPROCESSED}/{c}_label.npy"}
                         for c in case_ids],
            "modality": chosen_modality,
            "medseg_version": __version__,
            "source_layout": info.layout,
            "skipped": skipped,
            "medseg_input_hash": input_hash,
        }
        _write_json(build / "dataset.json", dataset)
        _write_json(build / "fingerprint.json", fingerprint)
        _write_json(build / "plan.json", plan)
        _write_json(build / "splits.json", splits)
    _print_summary(out, dataset, plan, splits)
    return out


def _print_summary(out: Path, dataset: dict, plan: dict, splits: list) -> None:
    if not progress.enabled():
        return
    from rich.table import Table

    table = Table(title=f"ingested {dataset['name']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    spacing = " × ".join(f"{s:.3g}" for s in plan["target_spacing"])
    schemes = ", ".join(n["scheme"] for n in plan["normalization"])
    rows = [
        ("cases", f"{dataset['numTraining']} ingested, {len(dataset['skipped'])} skipped"),
        ("modality", f"{plan['modality']} ({plan['dims']}D), channels: {', '.join(plan['channel_names'])}"),
        ("labels", ", ".join(f"{v}={k}" for k, v in plan["labels"].items())),
        ("target spacing", f"{spacing} mm" if plan["dims"] == 3 else "1 × 1 (pixels)"),
        ("median shape", " × ".join(str(s) for s in plan["median_shape"])),
        ("normalization", schemes + (", cropped to nonzero" if plan["crop_nonzero"] else "")),
        ("folds", str(len(splits))),
        ("output", str(out)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console = progress.console()
    console.print(table)
    if dataset["skipped"]:
        skipped = Table(title="skipped cases")
        skipped.add_column("case")
        skipped.add_column("reason")
        for row in dataset["skipped"]:
            skipped.add_row(row["case_id"], row["reason"])
        console.print(skipped)
