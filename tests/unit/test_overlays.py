"""Overlay pictures: files written, windowing, the focus slice, the index page."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medseg.overlays import CT_WINDOW, _focus, render_overlay, window, write_index
from medseg.phantoms import ct_phantom, image2d_phantom


def test_ct_window_for_hounsfield_and_percentiles_otherwise():
    ct, _ = ct_phantom(0, shape=(24, 24, 8))
    assert window(ct.array[0].astype(np.float32)) == CT_WINDOW
    mr = np.random.default_rng(0).gamma(2.0, 100.0, size=(20, 20, 5))
    lo, hi = window(mr)
    assert 0 < lo < hi < mr.max()


def test_focus_is_inside_largest_structure():
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[2:4, 2:4, 2:4] = 2
    labels[10:18, 8:16, 3:9] = 1
    x, y, z = _focus(labels)
    assert labels[x, y, z] == 1


def test_render_overlay_3d_and_2d(tmp_path):
    ct, seg = ct_phantom(1, shape=(32, 32, 12), orientation="LPS")
    out = render_overlay(ct, tmp_path / "case.png", prediction=seg, reference=seg, title="case")
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[1] > picture.shape[0] > 100  # three panels side by side
    # Contour colours are drawn: some strongly green (reference) and strongly red (liver) pixels.
    green = (picture[..., 1] > 150) & (picture[..., 0] < 120) & (picture[..., 2] < 150)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 100)
    assert green.sum() > 20 and red.sum() > 20
    image, label = image2d_phantom(0, size=(64, 48))
    out2 = render_overlay(image, tmp_path / "img.png", prediction=label)
    assert Image.open(out2).size[0] > 100


def test_index_lists_cases_worst_first(tmp_path):
    page = write_index([{"case": "b", "png": tmp_path / "b.png", "dice": 0.9},
                        {"case": "a", "png": tmp_path / "a.png", "dice": 0.5}], tmp_path)
    text = page.read_text()
    assert text.index(">a<") < text.index(">b<") and "0.500" in text and 'src="a.png"' in text
