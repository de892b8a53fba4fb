"""Overlay pictures to check segmentations by eye, and an index page to click through them.

``render_overlay`` writes one PNG per case with three panels (axial, coronal, sagittal) through the
centre of the largest structure, the scan windowed for reading (a soft-tissue CT window when the
intensities look like Hounsfield units, the 1st–99th percentiles otherwise), the prediction as
coloured contours (one colour per class) and, when given, the reference as contours in a second
colour (green). Volumes are shown in the radiological convention (patient's right on the image left,
anterior up, superior up) with their physical aspect ratio, whatever their storage orientation.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.io.atomic import atomic_path
from medseg.io.volume import Volume

PRED_COLOURS = ["#ff3b30", "#ffcc00", "#ff2dff", "#ff9500", "#5ac8fa", "#af52de", "#ff6482", "#ffd60a"]
REF_COLOUR = "#34c759"
CT_WINDOW = (-160.0, 240.0)  # soft tissue: level 40, width 400
MAX_LEGEND_CLASSES = 8  # more would cover the panels (e.g. a 40-organ map)


def _canonical(volume: Volume) -> tuple[np.ndarray, tuple[float, ...]]:
    """Array (C, x, y[, z]) reoriented to RAS (flips/permutations only) and its spacing."""
    from medseg.preprocessing.orientation import canonical_ornt, reorient

    ornt = canonical_ornt(volume.affine, volume.ndim)
    spacing = [0.0] * volume.ndim
    for axis, target in enumerate(ornt[:, 0].astype(int)):  # each spacing follows its axis
        spacing[target] = volume.spacing[axis]
    return reorient(volume.array, ornt), tuple(spacing)


def window(image: np.ndarray) -> tuple[float, float]:
    """Display range: the CT soft-tissue window for Hounsfield-like data, else 1st–99th percentile."""
    lo, hi = float(np.min(image)), float(np.max(image))
    if lo <= -500 and hi >= 100:
        return CT_WINDOW
    sample = image[:: max(1, image.size // 200_000)] if image.ndim == 1 else image.ravel()[:: max(1, image.size // 200_000)]
    p1, p99 = np.percentile(sample, [1, 99])
    return float(p1), float(max(p99, p1 + 1e-6))


def _focus(labels: np.ndarray) -> tuple[int, ...]:
    """Voxel index through the centre of the largest labelled structure (or the volume centre)."""
    from scipy import ndimage

    if not labels.any():
        return tuple(s // 2 for s in labels.shape)
    counts = np.bincount(labels.ravel().astype(np.int64))
    counts[0] = 0
    largest = int(np.argmax(counts))
    components, n = ndimage.label(labels == largest)
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == int(np.argmax(sizes))
    else:
        mask = components > 0
    return tuple(int(round(c)) for c in ndimage.center_of_mass(mask))


def _panels(shape: Sequence[int], focus: Sequence[int], spacing: Sequence[float]):
    """(name, slicer, aspect) for axial, coronal and sagittal views of a RAS array (x, y, z)."""
    x, y, z = focus
    sx, sy, sz = spacing
    return [
        ("axial", (slice(None), slice(None), z), sy / sx),
        ("coronal", (slice(None), y, slice(None)), sz / sx),
        ("sagittal", (x, slice(None), slice(None)), sz / sy),
    ]


def render_overlay(image: Volume, path: str | Path, prediction: Volume | None = None,
                   reference: Volume | None = None, title: str = "", label_names: dict[str, int] | None = None) -> Path:
    """Write a PNG of ``image`` with contours of ``prediction`` (class colours) and ``reference`` (green)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    scan, spacing = _canonical(image)
    pred = _canonical(prediction)[0][0] if prediction is not None else None
    ref = _canonical(reference)[0][0] if reference is not None else None
    focus_labels = ref if ref is not None and ref.any() else pred if pred is not None else np.zeros(scan.shape[1:], np.uint8)
    grey = scan[0].astype(np.float32) if scan.shape[0] != 3 else None
    vmin, vmax = window(grey) if grey is not None else (0.0, 255.0)
    classes = sorted({int(v) for arr in (pred, ref) if arr is not None for v in np.unique(arr) if v != 0})
    names = {v: k for k, v in (label_names or {}).items()}

    if scan.ndim - 1 == 2:
        views = [("image", (slice(None), slice(None)), spacing[1] / spacing[0])]
    else:
        views = _panels(scan.shape[1:], _focus(focus_labels), spacing)
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 4.6), facecolor="black", squeeze=False)
    for ax, (name, sl, aspect) in zip(axes[0], views):
        if grey is not None:
            img = grey[sl].T  # rows = second axis (A or y), columns = first axis (R or x)
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower" if scan.ndim == 4 else "upper",
                      aspect=aspect, interpolation="bilinear")
        else:
            rgb = np.moveaxis(scan[:, sl[0], sl[1]], 0, -1).transpose(1, 0, 2)
            ax.imshow(np.clip(rgb, 0, 255).astype(np.uint8), aspect=aspect)
        for arr, colour_of in ((ref, lambda c: REF_COLOUR), (pred, lambda c: PRED_COLOURS[(c - 1) % len(PRED_COLOURS)])):
            if arr is None:
                continue
            plane = arr[sl].T
            for c in classes:
                m = (plane == c).astype(np.float32)
                if m.any() and not m.all():
                    ax.contour(m, levels=[0.5], colors=[colour_of(c)], linewidths=1.4)
        if scan.ndim == 4 and name in ("axial", "coronal"):
            ax.invert_xaxis()  # radiological convention: patient's right on the left of the picture
        ax.set_title(name, color="white", fontsize=10)
        ax.set_axis_off()
    shown = classes[:MAX_LEGEND_CLASSES] if pred is not None else []
    handles = [Line2D([], [], color=PRED_COLOURS[(c - 1) % len(PRED_COLOURS)], label=f"prediction: {names.get(c, c)}")
               for c in shown]
    if pred is not None and len(classes) > len(shown):
        handles.append(Line2D([], [], color="none", label=f"+{len(classes) - len(shown)} more labels"))
    if ref is not None:
        handles.append(Line2D([], [], color=REF_COLOUR, label="reference"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False, labelcolor="white", fontsize=8)
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    rows = -(-len(handles) // 5)
    fig.tight_layout(rect=(0, 0.05 * rows if handles else 0, 1, 0.95))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, facecolor="black", format="png")
    plt.close(fig)
    return path


def write_index(entries: list[dict], out_dir: str | Path, title: str = "medseg overlays") -> Path:
    """Write ``out_dir/index.html`` listing ``entries`` ({"case", "png", "dice" (optional)}) with thumbnails."""
    out_dir = Path(out_dir)
    rows = []
    for e in sorted(entries, key=lambda e: (e.get("dice") is None, e.get("dice") or 0.0, e["case"])):
        dice = "" if e.get("dice") is None else f"{e['dice']:.3f}"
        png = html.escape(Path(e["png"]).name)
        rows.append(f'<tr><td><a href="{png}">{html.escape(e["case"])}</a></td><td>{dice}</td>'
                    f'<td><a href="{png}"><img src="{png}" height="160"></a></td></tr>')
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;background:#111;color:#eee}td{padding:4px 12px}a{color:#8cf}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><p>Cases sorted by mean Dice (worst first). "
            "Prediction contours in class colours, reference in green.</p>"
            "<table><tr><th>case</th><th>mean Dice</th><th>overlay</th></tr>" + "".join(rows) + "</table></body></html>")
    path = out_dir / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path


def _mean_dice(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """Mean Dice over the labels present in either map (None when both are empty)."""
    from medseg.metrics import confusion, overlap_metrics

    values = [v for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0]
    if not values:
        return None
    return float(np.mean([overlap_metrics(confusion(pred == v, ref == v))["dice"] for v in values]))


class OverlayHook:
    """Per-case hook for ``medseg.metrics.evaluate(case_hook=...)``: writes ``out_dir/CASE.png``.

    Picklable (a plain class holding a folder), so it runs in evaluation worker processes. Cases
    without an image are drawn on the reference labels' grid with a blank background.
    """

    def __init__(self, out_dir: str | Path, label_names: dict[str, int] | None = None):
        self.out_dir = Path(out_dir)
        self.label_names = dict(label_names or {})

    def __call__(self, case: str, pred: Volume, ref: Volume, image: Volume | None) -> None:
        dice = _mean_dice(pred.array[0], ref.array[0])
        background = image if image is not None and image.same_grid(ref, atol=1e-3) else ref.with_array(
            np.zeros_like(ref.array, dtype=np.float32))
        title = f"{case}   mean Dice {dice:.3f}" if dice is not None else case
        render_overlay(background, self.out_dir / f"{case}.png", prediction=pred, reference=ref, title=title,
                       label_names=self.label_names)


def check_overlay_folder(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse an overlay folder that already holds pictures unless ``overwrite``."""
    from medseg.errors import OutputExistsError

    out_dir = Path(out_dir)
    if not overwrite and (out_dir / "index.html").exists():
        raise OutputExistsError("overlay folder already holds an index.html (pass --overwrite)", out_dir)


def index_from_report(report, out_dir: str | Path) -> Path:
    """``index.html`` for the pictures an ``OverlayHook`` wrote, with each case's mean foreground Dice."""
    out_dir = Path(out_dir)
    by_case: dict[str, list[float]] = {}
    for row in report.rows:
        if row.get("dice") is not None and row.get("status") in ("ok", "pred_empty", "ref_empty"):
            by_case.setdefault(row["case"], []).append(float(row["dice"]))
    entries = [{"case": case, "png": out_dir / f"{case}.png", "dice": float(np.mean(by_case[case])) if by_case.get(case) else None}
               for case in report.cases if (out_dir / f"{case}.png").exists()]
    return write_index(entries, out_dir)
