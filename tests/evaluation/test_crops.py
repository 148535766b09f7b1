"""Report crops (rtb.evaluation.crops): the flattest window is found, and the strip shows source | protected | |δ|
amplified pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rtb.evaluation.crops import CROP_DELTA_GAIN, crop_sheet, crop_strip, flattest_box


def textured_with_flat_patch(seed=0, size=(64, 80), patch=(20, 36, 24)):
    """Random texture everywhere except a flat grey square of side ``patch[2]`` at (top, left) = patch[:2]."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
    top, left, side = patch
    pixels[top : top + side, left : left + side] = (90, 120, 150)
    return Image.fromarray(pixels)


def test_flattest_box_lies_inside_the_flat_patch():
    image = textured_with_flat_patch()
    left, top, right, bottom = flattest_box(image, side=16)
    assert (right - left, bottom - top) == (16, 16)
    assert 36 <= left and right <= 36 + 24 and 20 <= top and bottom <= 20 + 24
    # A smooth gradient counts as flat: it wins against texture too.
    gradient = np.asarray(textured_with_flat_patch()).copy()
    gradient[:32, :32] = np.linspace(0, 255, 32).astype(np.uint8)[None, :, None]
    gradient[20:44, 36:60] = np.random.default_rng(1).integers(0, 256, (24, 24, 3))
    assert flattest_box(Image.fromarray(gradient), side=16)[2] <= 32 and flattest_box(Image.fromarray(gradient), 16)[3] <= 32
    # Windows larger than the image shrink to it; tensors and PIL images give the same box.
    assert flattest_box(image, side=500) == (0, 0, 80, 64)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).double() / 255
    assert flattest_box(tensor, side=16) == (left, top, right, bottom)


def test_crop_strip_shows_source_protected_and_amplified_delta():
    source = textured_with_flat_patch()
    protected = np.asarray(source).copy()
    protected[30, 40] += np.array([2, 0, 0], np.uint8)  # +2 levels of red on one pixel of the flat patch
    strip = crop_strip(source, Image.fromarray(protected), box=(36, 20, 60, 44), zoom=3, gap=4)
    assert strip.size == (3 * 24 * 3 + 2 * 4, 24 * 3)
    tiles = np.asarray(strip)
    source_tile, protected_tile = tiles[:, :72], tiles[:, 76:148]
    delta_tile = tiles[:, 152:]
    np.testing.assert_array_equal(source_tile[::3, ::3], np.asarray(source)[20:44, 36:60])  # nearest-neighbour zoom
    np.testing.assert_array_equal(protected_tile[::3, ::3], protected[20:44, 36:60])
    changed = (30 - 20) * 3, (40 - 36) * 3
    assert tuple(delta_tile[changed]) == (round(2 * CROP_DELTA_GAIN), 0, 0)  # the cast shows in its own colour
    assert delta_tile.sum() == 9 * round(2 * CROP_DELTA_GAIN)  # and nowhere else (3×3 zoomed pixels)


def test_crop_sheet_rows_and_bad_input():
    source = textured_with_flat_patch()
    sheet = crop_sheet([("a", source, source), ("b", source, source.convert("L").convert("RGB"))], side=16, zoom=2)
    assert sheet.mode == "RGB" and sheet.height == 18 + 2 * (16 * 2 + 4) and sheet.width == 150 + 3 * 32 + 8
    with pytest.raises(ValueError, match="box \\(0, 0, 100, 10\\) is outside the 80×64 image"):
        crop_strip(source, source, box=(0, 0, 100, 10))
    with pytest.raises(ValueError, match="source is \\(3, 64, 80\\) but protected is \\(3, 64, 40\\)"):
        crop_strip(source, source.crop((0, 0, 40, 64)))
    with pytest.raises(ValueError, match="zoom must be a positive integer, got 0"):
        crop_strip(source, source, zoom=0)
    with pytest.raises(ValueError, match="at least one"):
        crop_sheet([])
