"""A held-out evaluation catalog: images the reference model never saw in training, with logo/text/face masks.

Backgrounds come from three sources, none used to train the reference model (:mod:`rtb_train.data`):

- procedural catalog-like images drawn from :data:`HELDOUT_SEED` (training draws them from seed 0);
- random crops of the colour photos that training holds out (``astronaut``, ``coffee``);
- random crops of greyscale ``skimage.data`` photos (``camera``, ``moon``, ``coins``, ...; training uses colour
  photos only), tinted with a random two-colour ramp.

On each background one sensitive element is drawn and masked: a logo (ring, triangle, letters), a text line
with an outline, or a face (a ``skimage.data.lfw_subset`` face, tinted, in an elliptical vignette; or a drawn
face-like ellipse with eyes and mouth). The mask covers the element plus a 2 px margin; its area is 3–15 % of
the image. Written as a ``pairs`` catalog (``NAME.png``, ``NAME_mask.png``, ``NAME.txt``), deterministic:

    python -m rtb_train.heldout OUT_DIR [--count 32] [--size 128]
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Seed of the held-out set (the reference model trains from seed 0 and its own held-out seed is 10_001).
HELDOUT_SEED = 20_261_122
# Greyscale skimage.data photos: never used in training (training uses colour photos only).
GREY_PHOTOS = ("camera", "moon", "coins", "clock", "page", "text", "grass", "gravel", "brick", "cell")
# Colour photos that the reference model's training holds out.
COLOUR_PHOTOS = ("astronaut", "coffee")
ELEMENTS = ("logo", "text", "face", "lfw-face")
MIN_AREA, MAX_AREA = 0.03, 0.15


def _check_not_trained() -> None:
    """Refuse to build when the reference model's training set uses one of our photos."""
    try:
        from rtb_train.data import TRAIN_SKIMAGE
    except ImportError:  # the reference package is absent: nothing to collide with
        return
    overlap = set(TRAIN_SKIMAGE) & (set(GREY_PHOTOS) | set(COLOUR_PHOTOS))
    if overlap:
        raise ValueError(f"held-out photos {sorted(overlap)} are used to train the reference model")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _crop(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    """A random square crop (side 0.5–1 of the short side) resized to ``size``: ``size×size×3`` uint8."""
    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(0.5, 1.0))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    pil = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(pil.resize((size, size), Image.LANCZOS).convert("RGB"))


def background(rng: np.random.Generator, size: int, photos: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """``(source name, size×size×3 uint8)`` from one of the three held-out sources."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        from rtb_train.data import procedural_image

        return "procedural", (procedural_image(rng, size) * 255).round().astype(np.uint8)
    if kind == 1:
        name = COLOUR_PHOTOS[int(rng.integers(0, len(COLOUR_PHOTOS)))]
        return name, _crop(rng, photos[name], size)
    name = GREY_PHOTOS[int(rng.integers(0, len(GREY_PHOTOS)))]
    grey = _crop(rng, photos[name], size)[..., 0].astype(np.float32) / 255.0
    dark, light = rng.uniform(0, 0.5, 3), rng.uniform(0.5, 1.0, 3)
    tinted = dark + (light - dark) * grey[..., None]
    return name, (tinted * 255).round().clip(0, 255).astype(np.uint8)


def _box(rng: np.random.Generator, size: int, aspect: float) -> tuple[float, float, float, float]:
    """A box of area 4–12 % of the image with width/height ``aspect``, placed at random."""
    area = rng.uniform(0.04, 0.12) * size * size
    w = min(size * 0.9, np.sqrt(area * aspect))
    h = min(size * 0.9, area / w)
    x, y = rng.uniform(2, size - w - 2), rng.uniform(2, size - h - 2)
    return x, y, x + w, y + h


def draw_element(rng: np.random.Generator, image: Image.Image, element: str, faces: np.ndarray) -> Image.Image:
    """Draw ``element`` on ``image`` (in place); return its mask (L, 255 = protected) before the margin."""
    size = image.width
    draw = ImageDraw.Draw(image)
    mask = Image.new("L", image.size, 0)
    mdraw = ImageDraw.Draw(mask)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if element == "logo":
        x0, y0, x1, y1 = _box(rng, size, 1.0)
        draw.ellipse((x0, y0, x1, y1), outline=colour, width=max(2, int((x1 - x0) / 10)))
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4
        draw.polygon([(cx, cy - r), (cx - r, cy + 0.7 * r), (cx + r, cy + 0.7 * r)], fill=colour)
        mdraw.ellipse((x0, y0, x1, y1), fill=255)
    elif element == "text":
        letters = "".join(rng.choice(list(string.ascii_uppercase + string.digits), size=int(rng.integers(4, 9))))
        x0, y0, x1, y1 = _box(rng, size, rng.uniform(3, 5))
        font = _font(max(8, int((y1 - y0) * 0.8)))
        draw.text((x0, y0), letters, font=font, fill=colour, stroke_width=1, stroke_fill=(255 - colour[0],) * 3)
        left, top, right, bottom = draw.textbbox((x0, y0), letters, font=font, stroke_width=1)
        mdraw.rectangle((left, top, right, bottom), fill=255)
    elif element == "face":
        x0, y0, x1, y1 = _box(rng, size, 0.8)
        skin = tuple(int(c) for c in rng.uniform([150, 100, 70], [255, 210, 180]))
        draw.ellipse((x0, y0, x1, y1), fill=skin)
        w, h = x1 - x0, y1 - y0
        for ex in (0.32, 0.68):
            draw.ellipse((x0 + w * ex - w * 0.07, y0 + h * 0.35, x0 + w * ex + w * 0.07, y0 + h * 0.45), fill=(40, 30, 30))
        draw.arc((x0 + w * 0.3, y0 + h * 0.5, x0 + w * 0.7, y0 + h * 0.8), 20, 160, fill=(150, 40, 40), width=2)
        mdraw.ellipse((x0, y0, x1, y1), fill=255)
    elif element == "lfw-face":
        x0, y0, x1, y1 = (int(v) for v in _box(rng, size, 0.85))
        face = faces[int(rng.integers(0, len(faces)))]
        tint = rng.uniform([0.8, 0.6, 0.5], [1.0, 0.85, 0.75])
        rgb = (np.clip(face, 0, 1)[..., None] * tint * 255).astype(np.uint8)
        patch = Image.fromarray(rgb).resize((x1 - x0, y1 - y0), Image.BICUBIC)
        vignette = Image.new("L", patch.size, 0)
        ImageDraw.Draw(vignette).ellipse((0, 0, patch.width - 1, patch.height - 1), fill=255)
        image.paste(patch, (x0, y0), vignette.filter(ImageFilter.GaussianBlur(1)))
        mdraw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    else:
        raise ValueError(f"unknown element {element!r}; choose one of {', '.join(ELEMENTS)}")
    return mask


def make_heldout(folder: str | Path, count: int = 32, size: int = 128, seed: int = HELDOUT_SEED) -> list[str]:
    """Write ``count`` image/mask/prompt triples (``size×size``) into ``folder``; return their ids.

    Every image's mask covers 3–15 % of it (elements are redrawn until it does). Deterministic in ``seed``.
    """
    import skimage.data

    # 1. Check inputs.
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if size < 48:
        raise ValueError(f"size must be at least 48 pixels, got {size}")
    _check_not_trained()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    # 2. Load the photos once.
    photos = {name: np.asarray(getattr(skimage.data, name)()) for name in GREY_PHOTOS + COLOUR_PHOTOS}
    photos = {n: (p if p.ndim == 3 else np.stack([p] * 3, -1))[..., :3].astype(np.uint8) for n, p in photos.items()}
    faces = np.asarray(skimage.data.lfw_subset()[:100], dtype=np.float32)  # the first 100 are faces

    # 3. Draw each image until its mask has an admissible area.
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        element = ELEMENTS[i % len(ELEMENTS)]
        while True:
            source, array = background(rng, size, photos)
            image = Image.fromarray(array)
            mask = draw_element(rng, image, element, faces)
            mask = mask.filter(ImageFilter.MaxFilter(5))  # 2 px margin: anti-aliased edges stay inside
            fraction = float((np.asarray(mask) > 0).mean())
            if MIN_AREA <= fraction <= MAX_AREA:
                break
        image_id = f"heldout-{i:03d}-{element}-{source}"
        image.save(folder / f"{image_id}.png")
        mask.point(lambda v: 255 if v else 0).save(folder / f"{image_id}_mask.png")
        (folder / f"{image_id}.txt").write_text(f"remove the {element.replace('lfw-', '')}\n")
        ids.append(image_id)
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED)
    args = parser.parse_args(argv)
    ids = make_heldout(args.output, args.count, args.size, args.seed)
    print(f"wrote {len(ids)} image/mask pairs to {args.output}")


if __name__ == "__main__":
    main()
