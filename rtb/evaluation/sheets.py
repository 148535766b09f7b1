"""Contact sheets: the one drawing module behind the evaluation report's per-image sheets and the demo's sheet.

A sheet is a grid: a header of column names, then one row per (label lines, tiles). Both sheets show, per row,
``source | protected | |δ| amplified | edit of source | edit of protected`` with the hole outlined in yellow on
the two edits; the report has one row per hole of one image, the demo one row per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# |δ| is shown multiplied by this (a δ of 0.025 becomes a quarter of full scale).
DELTA_GAIN = 10.0
HOLE_COLOUR = (255, 255, 0)
# Column names (ASCII: PIL's default font has no δ or ×).
REPORT_COLUMNS = ("source", "protected", f"|delta| x{DELTA_GAIN:g}", "clean edit", "protected edit")
DEMO_COLUMNS = ("source", "protected", f"|delta| x{DELTA_GAIN:g}", "edit of source", "edit of protected")


@dataclass(frozen=True)
class Layout:
    """Sizes of a sheet in pixels."""

    # Space between tiles and between rows.
    gap: int
    # Height of the header band (column names) and where their text starts.
    header: int
    header_text_y: int
    # Width of the label column left of the tiles, and where its text starts.
    label_width: int
    label_x: int
    # Font sizes of the column names and first label line, and of the further label lines and the footer.
    font_size: int
    small_font_size: int
    # First label line: this far above the row's middle; further lines this far apart.
    label_offset: int
    label_line_height: int
    # Height of the footer band (0: no footer).
    footer: int


REPORT_LAYOUT = Layout(gap=4, header=18, header_text_y=2, label_width=120, label_x=4, font_size=12, small_font_size=12,
                       label_offset=6, label_line_height=14, footer=0)
DEMO_LAYOUT = Layout(gap=6, header=30, header_text_y=5, label_width=150, label_x=6, font_size=18, small_font_size=14,
                     label_offset=22, label_line_height=24, footer=28)


def font(size: int):
    """PIL's default font at ``size`` (the bitmap default before Pillow 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def to_pil(x: torch.Tensor) -> Image.Image:
    """``3×H×W`` in [0, 1] → RGB PIL image (rounded)."""
    array = (x.detach().to("cpu", torch.float64).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def outlined(tile: Image.Image, hole: torch.Tensor, colour=HOLE_COLOUR) -> Image.Image:
    """A copy of ``tile`` with the 1-px boundary of ``hole`` (``H×W``, nonzero = hole) drawn in ``colour``."""
    m = hole.to("cpu").numpy() > 0.5
    inner = np.pad(m, 1)
    edge = m & ~(inner[2:, 1:-1] & inner[:-2, 1:-1] & inner[1:-1, 2:] & inner[1:-1, :-2])
    array = np.asarray(tile).copy()
    array[edge] = colour
    return Image.fromarray(array)


def edit_tiles(source: torch.Tensor, protected: torch.Tensor, clean_edit: torch.Tensor, protected_edit: torch.Tensor,
               hole: torch.Tensor) -> list[Image.Image]:
    """``source | protected | |δ|·DELTA_GAIN | edit of source | edit of protected`` (``3×H×W`` in [0, 1] each;
    the hole ``H×W`` outlined on the edits)."""
    delta = ((protected - source).abs() * DELTA_GAIN).clamp(0, 1)
    return [to_pil(source), to_pil(protected), to_pil(delta), outlined(to_pil(clean_edit), hole),
            outlined(to_pil(protected_edit), hole)]


def grid(columns: tuple[str, ...], rows: list[tuple[list[str], list[Image.Image]]], layout: Layout,
         footer: str = "") -> Image.Image:
    """Draw a sheet: ``columns`` names over the tiles of each row, its label lines on the left, ``footer`` below.

    Every column is as wide as the widest tile; each row as high as its first tile.
    """
    cell_w = max(tile.width for _, tiles in rows for tile in tiles)
    heights = [tiles[0].height for _, tiles in rows]
    footer_h = layout.footer if footer else 0
    width = layout.label_width + len(columns) * (cell_w + layout.gap)
    sheet = Image.new("RGB", (width, layout.header + sum(heights) + layout.gap * len(rows) + footer_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    big, small = font(layout.font_size), font(layout.small_font_size)
    for c, name in enumerate(columns):
        draw.text((layout.label_width + c * (cell_w + layout.gap) + 2, layout.header_text_y), name, fill=(0, 0, 0), font=big)
    top = layout.header
    for (labels, tiles), height in zip(rows, heights):
        for k, label in enumerate(labels):
            y = top + height // 2 - layout.label_offset + k * layout.label_line_height
            draw.text((layout.label_x, y), label, fill=(0, 0, 0) if k == 0 else (60, 60, 60),
                      font=big if k == 0 else small)
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (layout.label_width + c * (cell_w + layout.gap), top))
        top += height + layout.gap
    if footer:
        draw.text((6, sheet.height - footer_h + 6), footer, fill=(60, 60, 60), font=small)
    return sheet


def contact_sheet(source: torch.Tensor, protected: torch.Tensor, rows: list[tuple[str, dict]]) -> Image.Image:
    """The report's sheet of one image: one row per (label, edits) with ``edits`` = ``{"clean": 3×H×W,
    "protected": 3×H×W, "hole": H×W}``; ``source`` and ``protected`` are ``3×H×W`` in [0, 1]."""
    return grid(REPORT_COLUMNS, [([label], edit_tiles(source, protected, e["clean"], e["protected"], e["hole"]))
                                 for label, e in rows], REPORT_LAYOUT)


def sheet_name(image_id: str, transform: str = "none") -> str:
    """File name of an image's contact sheet under ``sheets/`` (ids may contain '/'); a transform other than
    ``none`` adds its label: ``img0.jpeg-75.png``."""
    label = "" if transform == "none" else "." + str(transform).replace(":", "-")
    return image_id.replace("/", "__") + label + ".png"


def small_copy(sheet: Image.Image, path, scale: float = 0.62) -> None:
    """A small PNG copy of ``sheet`` for docs: downscaled, 256 colours, Floyd–Steinberg dithered (gradients stay
    smooth); about 0.3 MB for the demo's six samples."""
    small = sheet.convert("RGB").resize((round(sheet.width * scale), round(sheet.height * scale)), Image.LANCZOS)
    palette = small.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    small.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
