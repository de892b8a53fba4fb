"""reorient_to_match (exact permutation/flip) and resample_to_grid (world-coordinate resampling)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.io import Volume, reorient_to_match, resample_to_grid
from medseg.phantoms import ct_phantom, orientation_affine


def _world(vol: Volume, index) -> np.ndarray:
    return (vol.affine @ [*index, 1.0])[:3]


@pytest.mark.parametrize("orientation", ["LPS", "PSR", "ILA", "LAS"])
def test_reorient_is_an_exact_permutation_and_flip(orientation):
    _, ref = ct_phantom(2, shape=(12, 10, 8), spacing=(1.0, 1.5, 2.0), orientation="RAS")
    rng = np.random.default_rng(0)
    ref = ref.with_array(rng.integers(0, 5, ref.array.shape).astype(np.uint8))
    # the same grid points stored in another axis order/direction
    other_affine = orientation_affine((1.0, 1.5, 2.0), "RAS", shape=(12, 10, 8))
    codes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    perm = [codes[c][0] for c in orientation]
    array = ref.array.transpose(0, *[1 + p for p in perm])
    index_map = np.zeros((4, 4))
    index_map[3, 3] = 1
    for new_axis, letter in enumerate(orientation):
        axis, sign = codes[letter]
        if sign < 0:
            array = np.flip(array, 1 + new_axis)
        index_map[axis, new_axis] = sign
        index_map[axis, 3] = 0 if sign > 0 else ref.spatial_shape[axis] - 1
    stored = Volume(np.ascontiguousarray(array), other_affine @ index_map)
    assert stored.axcodes() == orientation
    back = reorient_to_match(stored, ref)
    assert back is not None and back.same_grid(ref, atol=1e-9)
    assert np.array_equal(back.array, ref.array)
    assert np.array_equal(resample_to_grid(stored, ref).array, ref.array)
    # a labelled voxel keeps its world position
    i, j, k = 3, 7, 5
    src_index = np.linalg.solve(stored.affine, [*_world(ref, (i, j, k)), 1])[:3]
    assert np.allclose(src_index, np.round(src_index))
    assert stored.array[(0, *np.round(src_index).astype(int))] == ref.array[0, i, j, k]


def test_reorient_refuses_different_points():
    ref = Volume(np.zeros((1, 4, 5, 6), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
    half = ref.affine.copy()
    half[0, 3] += 0.5
    assert reorient_to_match(Volume(ref.array, half), ref) is None
    assert reorient_to_match(Volume(np.zeros((1, 4, 5, 7), np.uint8), ref.affine), ref) is None
    assert reorient_to_match(Volume(ref.array, np.diag([1.0, 1.0, 3.0, 1.0])), ref) is None


def test_reorient_2d_transpose():
    image = Volume(np.arange(12, dtype=np.uint8).reshape(1, 3, 4), np.eye(4))
    swapped = np.eye(4)[[1, 0, 2, 3]]
    other = Volume(image.array.transpose(0, 2, 1).copy(), swapped)
    back = reorient_to_match(other, image)
    assert back is not None and np.array_equal(back.array, image.array)


def test_resample_nearest_and_linear_on_a_finer_grid():
    coarse = Volume(np.arange(4, dtype=np.int16).reshape(1, 4, 1, 1), np.diag([2.0, 1.0, 1.0, 1.0]))
    fine = Volume(np.zeros((1, 7, 1, 1), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    nearest = resample_to_grid(coarse, fine, order=0)
    assert nearest.array.dtype == np.int16 and nearest.same_grid(fine)
    assert nearest.array[0, ::2, 0, 0].tolist() == [0, 1, 2, 3]
    linear = resample_to_grid(coarse, fine, order=1)
    assert linear.array.dtype == np.float32
    assert np.allclose(linear.array[0, :, 0, 0], [0, 0.5, 1, 1.5, 2, 2.5, 3])


def test_resample_outside_is_background_and_world_aligned():
    label = Volume(np.ones((1, 3, 3, 3), np.uint8), np.eye(4))
    shifted_ref = np.eye(4)
    shifted_ref[:3, 3] = [-1.0, 0.0, 0.0]
    ref = Volume(np.zeros((1, 5, 3, 3), np.uint8), shifted_ref)
    out = resample_to_grid(label, ref)  # ref voxel i is world x = i - 1
    assert out.array[0, :, 1, 1].tolist() == [0, 1, 1, 1, 0]
