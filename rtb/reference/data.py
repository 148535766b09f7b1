"""Training and held-out data for the reference inpainter; nothing is downloaded.

Two sources of images, both deterministic given a seed:

- the colour photographs that ``scikit-image`` ships (``skimage.data``), cut into random crops with scale
  jitter, flips, 90° rotations and colour jitter; two of them (``astronaut``, ``coffee``) are held out;
- procedurally generated catalog-like images: gradient or textured backgrounds, product-like shaded shapes,
  text and logo overlays, rendered at 2x and downsampled so edges are anti-aliased.

Holes are LaMa-style free-form brush strokes and boxes covering a chosen fraction of the image.
Images are ``H×W×3`` float32 arrays in [0, 1]; masks ``H×W`` float32 arrays with 1 = hole.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Colour images of skimage.data used for training (stereo_motorcycle contributes both views).
TRAIN_SKIMAGE = (
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "logo",
    "stereo_motorcycle",
)
# Colour images of skimage.data never seen in training.
HELDOUT_SKIMAGE = ("astronaut", "coffee")
# Seed of the held-out procedural images (training draws procedural images from the training seed).
HELDOUT_PROCEDURAL_SEED = 10_001


def load_skimage(name: str) -> list[np.ndarray]:
    """The ``skimage.data`` image ``name`` as a list of ``H×W×3`` float32 arrays in [0, 1].

    RGBA images are composited on white; stereo pairs give both views.
    """
    import skimage.data

    loaded = getattr(skimage.data, name)()
    # stereo_motorcycle returns (left, right, disparity): keep the colour views only.
    arrays = [a for a in loaded if np.ndim(a) == 3] if isinstance(loaded, tuple) else [loaded]
    out = []
    for array in arrays:
        image = np.asarray(array, dtype=np.float32) / 255.0
        if image.shape[-1] == 4:
            alpha = image[..., 3:]
            image = image[..., :3] * alpha + (1.0 - alpha)
        out.append(np.ascontiguousarray(image[..., :3]))
    return out


# ---------------------------------------------------------------------------------------------------------
# Procedural catalog-like images


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(0, 5)
    a, b = _random_colour(rng), _random_colour(rng)
    if kind == 0:  # near-solid studio background
        a = np.clip(a * 0.3 + rng.uniform(0.6, 1.0), 0, 1)
        t = 0.1 * (yy * rng.uniform(-1, 1) + xx * rng.uniform(-1, 1))
    elif kind == 1:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 2:  # radial gradient
        cx, cy = rng.uniform(0, 1, size=2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = np.clip(t / rng.uniform(0.5, 1.2), 0, 1)
    elif kind == 3:  # smooth noise texture (upsampled random grid)
        cells = int(rng.integers(2, 12))
        grid = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        t = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))
        t = np.clip(t, 0, 1)
    else:  # periodic texture: stripes, checks or waves
        freq = rng.uniform(3, 24)
        angle = rng.uniform(0, np.pi)
        u = np.cos(angle) * xx + np.sin(angle) * yy
        v = -np.sin(angle) * xx + np.cos(angle) * yy
        pattern = rng.integers(0, 3)
        if pattern == 0:
            t = (np.sin(2 * np.pi * freq * u) > 0).astype(np.float32)
        elif pattern == 1:
            t = ((np.floor(freq * u) + np.floor(freq * v)) % 2).astype(np.float32)
        else:
            t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + 2 * np.sin(2 * np.pi * freq / 3 * v))
    image = a * (1 - t[..., None]) + b * t[..., None]
    image = image + rng.normal(0, rng.uniform(0, 0.03), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def _shaded_shape(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """An RGB layer with a shaded product-like shape and its alpha mask (PIL images of ``size``)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    w, h = rng.uniform(0.1, 0.6, size=2) * size
    cx, cy = rng.uniform(0.1, 0.9, size=2) * size
    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    kind = rng.integers(0, 4)
    if kind == 0:
        draw.rectangle(box, fill=255)
    elif kind == 1:
        draw.ellipse(box, fill=255)
    elif kind == 2:
        draw.rounded_rectangle(box, radius=float(min(w, h) * rng.uniform(0.05, 0.45)), fill=255)
    else:
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        radii = rng.uniform(0.5, 1.0, size=n)
        points = [(cx + r * w / 2 * np.cos(t), cy + r * h / 2 * np.sin(t)) for r, t in zip(radii, angles)]
        draw.polygon(points, fill=255)
    # Shading: a linear light gradient plus a highlight, as on a photographed product.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    colour = _random_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.75 + 0.35 * (np.cos(angle) * (xx - cx / size) + np.sin(angle) * (yy - cy / size)) / 0.5
    hx, hy = (cx + rng.uniform(-0.3, 0.3) * w) / size, (cy + rng.uniform(-0.3, 0.3) * h) / size
    highlight = rng.uniform(0, 0.5) * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.05 + 0.1 * w / size) ** 2))
    layer = np.clip(colour * light[..., None] + highlight[..., None], 0, 1)
    return Image.fromarray((layer * 255).astype(np.uint8)), mask


def _random_text(rng: np.random.Generator, length: int) -> str:
    alphabet = string.ascii_letters + string.digits + "  $%&-.,"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=length)).strip() or "A"


def procedural_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """One catalog-like image ``size×size×3`` float32 in [0, 1], drawn only from ``rng``."""
    big = 2 * size
    # 1. Background.
    canvas = Image.fromarray((_background(rng, big) * 255).astype(np.uint8))
    # 2. Product-like shaded shapes, sometimes with a soft drop shadow.
    for _ in range(int(rng.integers(0, 5))):
        layer, mask = _shaded_shape(rng, big)
        if rng.uniform() < 0.4:
            offset = tuple(int(v) for v in rng.integers(2, big // 25 + 3, size=2))
            shadow = Image.new("L", (big, big), 0)
            shadow.paste(mask, offset)
            shadow = shadow.filter(ImageFilter.GaussianBlur(big / 60)).point(lambda v: int(v * 0.5))
            canvas.paste(Image.new("RGB", (big, big), (0, 0, 0)), (0, 0), shadow)
        canvas.paste(layer, (0, 0), mask)
    draw = ImageDraw.Draw(canvas)
    # 3. Text overlays (prices, product names).
    for _ in range(int(rng.integers(0, 4))):
        font = ImageFont.load_default(size=int(rng.integers(big // 24, big // 6)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        position = tuple(float(v) for v in rng.uniform(-0.1, 0.8, size=2) * big)
        draw.text(position, _random_text(rng, int(rng.integers(2, 14))), fill=colour, font=font)
    # 4. A logo: a badge (circle or square) with one or two letters.
    if rng.uniform() < 0.5:
        r = float(rng.uniform(0.05, 0.15) * big)
        cx, cy = rng.uniform(r, big - r, size=2)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        ink = tuple(255 - c for c in colour)
        if rng.uniform() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
        font = ImageFont.load_default(size=max(int(r), 4))
        draw.text((cx, cy), _random_text(rng, 2)[:2], fill=ink, font=font, anchor="mm")
    # 5. Downsample 2x: anti-aliased edges, as in photographs.
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------------
# Crops and augmentation


def random_crop(rng: np.random.Generator, image: np.ndarray, size: int, max_scale: float = 3.0) -> np.ndarray:
    """A random ``size×size×3`` crop with scale jitter, flips, 90° rotations and colour jitter."""
    h, w = image.shape[:2]
    # 1. A square window between ``size`` and ``max_scale·size`` pixels (bounded by the image), resized.
    side = int(min(h, w, size * rng.uniform(1.0, max_scale)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = image[top : top + side, left : left + side]
    if side != size:
        pil = Image.fromarray((crop * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        crop = np.asarray(pil, dtype=np.float32) / 255.0
    # 2. Flips and rotations.
    crop = np.rot90(crop, k=int(rng.integers(0, 4)))
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    return colour_jitter(rng, np.ascontiguousarray(crop))


def colour_jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Brightness, contrast, saturation, per-channel gain and gamma jitter; stays in [0, 1]."""
    grey = image.mean(axis=2, keepdims=True)
    image = grey + (image - grey) * rng.uniform(0.6, 1.4)  # saturation
    image = image * rng.uniform(0.9, 1.1, size=3).astype(np.float32)  # white balance
    mean = image.mean()
    image = mean + (image - mean) * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)  # contrast, brightness
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
    if rng.uniform() < 0.2:
        image = image[..., rng.permutation(3)]
    return np.ascontiguousarray(image, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# Masks


def _draw_stroke(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    width = int(rng.uniform(0.04, 0.14) * size) + 1
    x, y = rng.uniform(0, size, size=2)
    points = [(x, y)]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(2, 8))):
        angle += rng.uniform(-1.5, 1.5)
        step = rng.uniform(0.1, 0.35) * size
        x = float(np.clip(x + step * np.cos(angle), 0, size))
        y = float(np.clip(y + step * np.sin(angle), 0, size))
        points.append((x, y))
    draw.line(points, fill=255, width=width, joint="curve")
    r = width / 2
    for px, py in points:
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)


def _draw_box(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, max_side: float) -> None:
    w, h = rng.uniform(0.1, max_side, size=2) * size
    x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
    draw.rectangle([x, y, x + w, y + h], fill=255)


def random_mask(
    rng: np.random.Generator,
    size: int,
    min_area: float = 0.05,
    max_area: float = 0.40,
    kind: str | None = None,
) -> np.ndarray:
    """A hole mask ``size×size`` float32 (1 = hole) whose area fraction lies in ``[min_area, max_area]``.

    ``kind`` is ``"strokes"`` (free-form brush strokes), ``"boxes"`` (one to a few rectangles), ``"mixed"``
    or ``None`` (picked at random). Elements are added until a target area drawn uniformly in the range
    is reached; a draw that overshoots ``max_area`` is redrawn.
    """
    if not 0 < min_area <= max_area < 1:
        raise ValueError(f"need 0 < min_area <= max_area < 1, got {min_area}, {max_area}")
    if kind is None:
        kind = ("strokes", "boxes", "mixed")[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    if kind not in ("strokes", "boxes", "mixed"):
        raise ValueError(f"unknown mask kind {kind!r}")
    max_side = float(min(0.8, np.sqrt(max_area) * 1.2))
    while True:
        target = rng.uniform(min_area, max_area)
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        area = 0.0
        for _ in range(50):
            use_box = kind == "boxes" or (kind == "mixed" and rng.uniform() < 0.5)
            if use_box:
                _draw_box(rng, draw, size, max_side)
            else:
                _draw_stroke(rng, draw, size)
            array = np.asarray(mask, dtype=np.float32) / 255.0
            area = float(array.mean())
            if area >= target:
                break
        if min_area <= area <= max_area:
            return (array > 0.5).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Training stream and held-out set


@dataclass(frozen=True)
class DataConfig:
    # Side of the square training crops, pixels.
    crop: int = 128
    # Number of procedural training images pre-rendered once (side ``procedural_side``), then cropped.
    procedural_count: int = 2000
    # Side at which procedural training images are rendered (crops of ``crop`` are cut from them).
    procedural_side: int = 160
    # Fraction of each batch drawn from procedural images (the rest are skimage photo crops).
    procedural_fraction: float = 0.5
    # Range of the hole area fraction during training.
    min_area: float = 0.05
    # Upper end of the hole area fraction during training.
    max_area: float = 0.40


class TrainingStream:
    """Deterministic stream of training batches: every draw comes from one generator seeded by ``seed``.

    ``next_batch(n)`` returns ``(images n×3×S×S, masks n×1×S×S)`` as float32 numpy arrays in [0, 1].
    """

    def __init__(self, seed: int, config: DataConfig = DataConfig()):
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.photos = [image for name in TRAIN_SKIMAGE for image in load_skimage(name)]
        # Larger photos are drawn more often, in proportion to their area.
        areas = np.array([p.shape[0] * p.shape[1] for p in self.photos], dtype=np.float64)
        self.photo_p = np.sqrt(areas) / np.sqrt(areas).sum()
        pool_rng = np.random.default_rng([seed, 1])
        self.procedural = np.stack(
            [
                (procedural_image(pool_rng, config.procedural_side) * 255).astype(np.uint8)
                for _ in range(config.procedural_count)
            ]
        )

    def next_image(self) -> np.ndarray:
        cfg = self.config
        if self.rng.uniform() < cfg.procedural_fraction:
            source = self.procedural[int(self.rng.integers(0, len(self.procedural)))].astype(np.float32) / 255.0
            return random_crop(self.rng, source, cfg.crop, max_scale=cfg.procedural_side / cfg.crop)
        source = self.photos[int(self.rng.choice(len(self.photos), p=self.photo_p))]
        return random_crop(self.rng, source, cfg.crop)

    def next_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        images = np.stack([self.next_image().transpose(2, 0, 1) for _ in range(n)])
        masks = np.stack([random_mask(self.rng, cfg.crop, cfg.min_area, cfg.max_area)[None] for _ in range(n)])
        return images, masks


def _square(image: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
    crop = image[top : top + side, left : left + side]
    pil = Image.fromarray((crop * 255).round().astype(np.uint8))
    if side != size:
        pil = pil.resize((size, size), Image.LANCZOS)
    return np.asarray(pil, dtype=np.float32) / 255.0


def heldout_images(size: int = 256, procedural: int = 8) -> list[tuple[str, np.ndarray]]:
    """The held-out evaluation set: named ``size×size×3`` float32 images in [0, 1].

    Four views of each held-out skimage photo (the whole image squared and resized, and three native-scale
    crops), plus ``procedural`` catalog-like images drawn from ``HELDOUT_PROCEDURAL_SEED``.
    """
    out = []
    for name in HELDOUT_SKIMAGE:
        image = load_skimage(name)[0]
        h, w = image.shape[:2]
        s = min(h, w)
        out.append((f"{name}-full", _square(image, (h - s) // 2, (w - s) // 2, s, size)))
        corners = [(0, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
        for i, (top, left) in enumerate(corners):
            out.append((f"{name}-crop{i}", _square(image, top, left, size, size)))
    rng = np.random.default_rng(HELDOUT_PROCEDURAL_SEED)
    out += [(f"procedural-{i}", procedural_image(rng, size)) for i in range(procedural)]
    return out
