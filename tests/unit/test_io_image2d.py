"""2D image reading/writing: layout, colour modes, mask rules (JPEG threshold, 0/255, label tables)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medseg.errors import InputError, LabelError, OutputExistsError
from medseg.io import Volume, read_volume, write_volume
from medseg.io.image2d import read_image2d, write_image2d


def _save(path, pixels, **kw):
    Image.fromarray(pixels, **kw).save(path)
    return path


def test_layout_is_column_row(tmp_path):
    pixels = np.zeros((3, 5), np.uint8)  # 3 rows, 5 columns
    pixels[1, 4] = 200  # row 1, column 4
    vol = read_image2d(_save(tmp_path / "a.png", pixels))
    assert vol.array.shape == (1, 5, 3)
    assert vol.array[0, 4, 1] == 200 and vol.array.sum() == 200
    assert np.array_equal(vol.affine, np.eye(4))


def test_rgba_drops_alpha_and_rgb_keeps_channels(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (4, 6, 4), dtype=np.uint8)
    vol = read_volume(_save(tmp_path / "a.png", rgba))
    assert vol.num_channels == 3
    assert np.array_equal(vol.array[2], rgba[..., 2].T)


def test_palette_gif_gives_indices_for_labels_and_rgb_for_images(tmp_path):
    img = Image.new("P", (4, 3))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    img.putpixel((1, 2), 1)  # column 1, row 2
    img.putpixel((3, 0), 2)
    img.save(tmp_path / "p.gif")
    label = read_image2d(tmp_path / "p.gif", as_label=True)
    assert label.array.shape == (1, 4, 3)
    assert label.array[0, 1, 2] == 1 and label.array[0, 3, 0] == 2 and label.array.sum() == 3
    image = read_image2d(tmp_path / "p.gif")
    assert image.num_channels == 3
    assert tuple(image.array[:, 1, 2]) == (255, 0, 0) and tuple(image.array[:, 3, 0]) == (0, 0, 255)


def test_mask_0_255_becomes_0_1_and_other_values_are_kept(tmp_path):
    pixels = np.zeros((4, 4), np.uint8)
    pixels[:2] = 255
    assert set(np.unique(read_image2d(_save(tmp_path / "m.png", pixels), as_label=True).array)) == {0, 1}
    pixels[3] = 2
    assert set(np.unique(read_image2d(_save(tmp_path / "n.png", pixels), as_label=True).array)) == {0, 2, 255}


def test_label_table_maps_raw_values_and_refuses_unknown(tmp_path):
    pixels = np.array([[0, 100], [200, 100]], np.uint8)
    path = _save(tmp_path / "m.png", pixels)
    vol = read_image2d(path, as_label=True, label_table={0: 0, 100: 1, 200: 2})
    assert np.array_equal(vol.array[0], np.array([[0, 2], [1, 1]]))
    with pytest.raises(LabelError, match="200"):
        read_image2d(path, as_label=True, label_table={0: 0, 100: 1})


def test_jpeg_mask_is_thresholded(tmp_path):
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[8:24, 4:20] = 255
    path = tmp_path / "m.jpg"
    Image.fromarray(pixels).save(path, quality=60)
    assert len(np.unique(np.asarray(Image.open(path)))) > 2  # lossy artefacts exist
    vol = read_image2d(path, as_label=True)
    expected = np.zeros((32, 32), np.uint8)
    expected[4:20, 8:24] = 1  # (x, y)
    assert set(np.unique(vol.array)) == {0, 1}
    assert (vol.array[0] != expected).mean() < 0.02


def test_multichannel_png_mask_with_different_channels_is_refused(tmp_path):
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)
    with pytest.raises(LabelError, match="channels"):
        read_image2d(_save(tmp_path / "m.png", pixels), as_label=True)
    pixels[0, 0] = (255, 255, 255)
    assert read_image2d(_save(tmp_path / "g.png", pixels), as_label=True).array.sum() == 1


def test_16bit_greyscale_is_kept(tmp_path):
    pixels = np.array([[0, 1000], [65535, 7]], np.uint16)
    vol = read_image2d(_save(tmp_path / "d.png", pixels))
    assert np.array_equal(vol.array[0], pixels.T.astype(vol.array.dtype))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_write_read_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    rgb = Volume(rng.integers(0, 256, (3, 7, 5), dtype=np.uint8), np.eye(4))
    labels = Volume(rng.integers(0, 4, (1, 7, 5)).astype(np.uint8), np.eye(4))
    write_volume(rgb, tmp_path / f"rgb{suffix}")
    write_volume(labels, tmp_path / f"lab{suffix}")
    assert np.array_equal(read_volume(tmp_path / f"rgb{suffix}").array, rgb.array)
    assert np.array_equal(read_volume(tmp_path / f"lab{suffix}", as_label=True).array, labels.array)


def test_write_refuses_jpeg_floats_and_existing(tmp_path):
    vol = Volume(np.zeros((1, 4, 4), np.float32) + 0.5, np.eye(4))
    with pytest.raises(InputError, match="JPEG"):
        write_image2d(vol, tmp_path / "x.jpg")
    with pytest.raises(InputError, match="integer"):
        write_image2d(vol, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
    ok = Volume(np.ones((1, 4, 4), np.uint8), np.eye(4))
    write_image2d(ok, tmp_path / "x.png")
    with pytest.raises(OutputExistsError):
        write_image2d(ok, tmp_path / "x.png", overwrite=False)


def test_unreadable_image_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="bad.png"):
        read_volume(bad)
