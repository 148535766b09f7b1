"""Zoomed crops of the flattest region of an image, where a perturbation is easiest to see, for the report.

:func:`flattest_box` finds the square window with the least texture (the lowest mean luma gradient); flat
areas are where an L∞ perturbation shows, and where a just-noticeable-difference budget (:mod:`rtb.budget`)
shrinks it. :func:`crop_strip` draws one image's window as source | protected | |δ| amplified, each zoomed with
nearest-neighbour so single pixels stay visible; :func:`crop_sheet` stacks such strips with labels.

Images are PIL images (any mode; shown as RGB) or ``3×H×W`` tensors in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from rtb.evaluation import sheets

# |δ| is multiplied by this in the third tile (ε = 0.025 ≈ 6.4 levels becomes 128 levels, mid-grey).
CROP_DELTA_GAIN = 20.0
# Side of the cropped window in source pixels and the nearest-neighbour zoom of each tile.
CROP_SIDE = 48
CROP_ZOOM = 4
CROP_COLUMNS = ("source", "protected", f"|delta| x{CROP_DELTA_GAIN:g}")


def _tensor(image) -> torch.Tensor:
    """A PIL image (any mode) or a ``3×H×W`` tensor as ``3×H×W`` float64 in [0, 1]."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        return torch.from_numpy(array.copy()).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"an image must be a PIL image or a 3×H×W tensor, got {type(image).__name__}")
    return image.detach().to("cpu", torch.float64).clamp(0, 1)


def _pil(x: torch.Tensor) -> Image.Image:
    array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def flattest_box(image, side: int = CROP_SIDE) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the ``side×side`` window (smaller if the image is) with the least texture.

    Texture is the mean over the window of ``|∂x Y| + |∂y Y|``, ``Y`` the BT.601 luma; ties go to the first window
    in row-major order, so the box is deterministic. A smooth gradient counts as flat (its gradient is small).
    """
    if not isinstance(side, int) or side < 1:
        raise ValueError(f"side must be a positive integer, got {side!r}")
    x = _tensor(image)
    height, width = x.shape[-2:]
    box_h, box_w = min(side, height), min(side, width)
    luma = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]
    activity = torch.zeros_like(luma)
    activity[..., :, 1:] += (luma[..., :, 1:] - luma[..., :, :-1]).abs()
    activity[..., 1:, :] += (luma[..., 1:, :] - luma[..., :-1, :]).abs()
    means = F.avg_pool2d(activity, (box_h, box_w), stride=1)[0, 0]  # (H − h + 1)×(W − w + 1)
    index = int(torch.argmin(means.flatten()))
    top, left = divmod(index, means.shape[1])
    return left, top, left + box_w, top + box_h


def crop_strip(source, protected, box: tuple[int, int, int, int] | None = None, zoom: int = CROP_ZOOM,
               gain: float = CROP_DELTA_GAIN, gap: int = 4) -> Image.Image:
    """One window of ``source`` and ``protected`` as an RGB strip: source | protected | ``|δ|·gain`` (per channel, so
    a colour cast shows as colour), each tile zoomed ``zoom``× with nearest-neighbour.

    Args:
        source, protected: the same size (PIL images or ``3×H×W`` tensors in [0, 1]).
        box: ``(left, top, right, bottom)``; None = :func:`flattest_box` of the source.
        zoom: integer zoom of each tile (≥ 1).
        gain: multiplier of ``|protected − source|`` in the third tile.
        gap: white pixels between tiles.
    """
    if not isinstance(zoom, int) or zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom!r}")
    x, y = _tensor(source), _tensor(protected)
    if x.shape != y.shape:
        raise ValueError(f"source is {tuple(x.shape)} but protected is {tuple(y.shape)}")
    left, top, right, bottom = box if box is not None else flattest_box(x)
    if not (0 <= left < right <= x.shape[2] and 0 <= top < bottom <= x.shape[1]):
        raise ValueError(f"box {box!r} is outside the {x.shape[2]}×{x.shape[1]} image")
    crops = [x[:, top:bottom, left:right], y[:, top:bottom, left:right]]
    crops.append(((crops[1] - crops[0]).abs() * gain).clamp(0, 1))
    tiles = [_pil(c).resize(((right - left) * zoom, (bottom - top) * zoom), Image.NEAREST) for c in crops]
    tile_w, tile_h = tiles[0].size
    strip = Image.new("RGB", (3 * tile_w + 2 * gap, tile_h), (255, 255, 255))
    for c, tile in enumerate(tiles):
        strip.paste(tile, (c * (tile_w + gap), 0))
    return strip


def crop_sheet(items, side: int = CROP_SIDE, zoom: int = CROP_ZOOM, gain: float = CROP_DELTA_GAIN) -> Image.Image:
    """A sheet with one labelled row per ``(label, source, protected)``: the flattest ``side×side`` window of the
    source as source | protected | ``|δ|·gain``, zoomed ``zoom``×, under a header naming the columns.

    Rows of images smaller than ``side`` are narrower; the sheet is as wide as its widest row.
    """
    items = list(items)
    if not items:
        raise ValueError("crop_sheet needs at least one (label, source, protected) item")
    gap, header, label_w = 4, 18, 150
    font = sheets.font(12)
    strips = [(label, crop_strip(source, protected, flattest_box(source, side), zoom, gain, gap))
              for label, source, protected in items]
    width = label_w + max(strip.width for _, strip in strips)
    height = header + sum(strip.height + gap for _, strip in strips)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    tile_w = side * zoom
    names = CROP_COLUMNS if gain == CROP_DELTA_GAIN else (*CROP_COLUMNS[:2], f"|delta| x{gain:g}")
    for c, name in enumerate(names):
        draw.text((label_w + c * (tile_w + gap) + 2, 2), name, fill=(0, 0, 0), font=font)
    top = header
    for label, strip in strips:
        draw.text((4, top + strip.height // 2 - 6), str(label), fill=(0, 0, 0), font=font)
        sheet.paste(strip, (label_w, top))
        top += strip.height + gap
    return sheet
