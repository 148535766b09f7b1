"""Training and held-out data for the reference inpainter; nothing is downloaded.

Two sources of images, both deterministic given a seed:

- the colour photographs that ``scikit-image`` ships (``skimage.data``), cut into random crops with scale
  jitter, flips, 90° rotations and colour jitter; two of them (``astronaut``, ``coffee``) are held out;
- procedurally generated catalog-like images: gradient or textured backgrounds, product-like shaded shapes,
  text and logo overlays, rendered at 2x and downsampled so edges are anti-aliased.

Holes are LaMa-style free-form brush strokes and boxes covering a chosen fraction of the image.
Images are ``H×W×3`` float32 arrays in [0, 1]; masks ``H×W`` float32 arrays with 1 = hole.

The LaMa-style GAN candidate (``reference-gan``) adds, at the end of this module and without changing anything
above: object-shaped holes (faces, text lines, logos, silhouettes), a procedural pool with textures, text pages
and product shots, and batches of uint8 crops drawn per batch index so that worker processes can make them.
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


# ---------------------------------------------------------------------------------------------------------
# Data of the LaMa-style GAN candidate (``reference-gan``): object-shaped masks, more procedural variety, and
# batches made in worker processes. Nothing above is changed by this, so the reference model's training data
# and the held-out set stay what they were.


def _scaled_box(rng: np.random.Generator, size: int, w: float, h: float) -> tuple[float, float, float, float]:
    """A ``w×h`` box at a random position that keeps at least half of it inside the image."""
    x = rng.uniform(-0.25 * w, size - 0.75 * w)
    y = rng.uniform(-0.25 * h, size - 0.75 * h)
    return x, y, x + w, y + h


def _draw_face(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, scale: float) -> None:
    """A face-like ellipse (taller than wide), sometimes with hair above and a neck/shoulders below."""
    w = scale * size * rng.uniform(0.55, 0.85)
    h = w * rng.uniform(1.15, 1.45)
    x0, y0, x1, y1 = _scaled_box(rng, size, w, h)
    draw.ellipse([x0, y0, x1, y1], fill=255)
    if rng.uniform() < 0.4:  # hair: a wider ellipse over the top half
        draw.ellipse([x0 - 0.1 * w, y0 - 0.12 * h, x1 + 0.1 * w, y0 + 0.6 * h], fill=255)
    if rng.uniform() < 0.4:  # neck and shoulders
        cx = (x0 + x1) / 2
        draw.rectangle([cx - 0.2 * w, y1 - 0.1 * h, cx + 0.2 * w, y1 + 0.25 * h], fill=255)
        draw.ellipse([cx - 0.9 * w, y1 + 0.15 * h, cx + 0.9 * w, y1 + 0.9 * h], fill=255)


def _draw_text_lines(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, scale: float) -> None:
    """One to four text lines as a user masks them: plain or rounded rectangles, whole lines or word by word."""
    lines = int(rng.integers(1, 5))
    line_h = max(3.0, scale * size * rng.uniform(0.2, 0.45) / np.sqrt(lines))
    line_w = min(size * 0.95, line_h * rng.uniform(3.0, 12.0))
    x0, y0, _, _ = _scaled_box(rng, size, line_w, lines * line_h * 1.3)
    rounded = rng.uniform() < 0.5
    by_word = rng.uniform() < 0.3
    for i in range(lines):
        top = y0 + i * line_h * rng.uniform(1.1, 1.5)
        width = line_w * (rng.uniform(0.5, 1.0) if i == lines - 1 else 1.0)
        pieces = [(x0, x0 + width)]
        if by_word:  # words with small gaps between them
            cuts = np.sort(rng.uniform(x0, x0 + width, size=int(rng.integers(1, 5))))
            edges = [x0, *cuts, x0 + width]
            pieces = [(a + (0.08 * line_h if j else 0), b) for j, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
        for a, b in pieces:
            if b - a < 1:
                continue
            box = [a, top, b, top + line_h]
            if rounded:
                draw.rounded_rectangle(box, radius=line_h * rng.uniform(0.15, 0.5), fill=255)
            else:
                draw.rectangle(box, fill=255)


def _draw_logo(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, scale: float) -> None:
    """A logo blob: circle, rounded square, star or a smooth random blob."""
    r = scale * size * rng.uniform(0.35, 0.6)
    cx, cy = rng.uniform(0, size, size=2)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == 1:
        draw.rounded_rectangle([cx - r, cy - r, cx + r, cy + r], radius=r * rng.uniform(0.1, 0.5), fill=255)
    else:
        n = 200
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        if kind == 2:  # star
            points = int(rng.integers(4, 9))
            radius = r * (1 - rng.uniform(0.3, 0.6) * (0.5 + 0.5 * np.cos(points * theta)))
        else:  # blob: a few low harmonics of the radius
            radius = np.full(n, r)
            for k in range(2, 6):
                radius += r * rng.uniform(0, 0.25) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        angle = rng.uniform(0, 2 * np.pi)
        draw.polygon([(cx + q * np.cos(t + angle), cy + q * np.sin(t + angle)) for q, t in zip(radius, theta)],
                     fill=255)


def _draw_silhouette(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, scale: float) -> None:
    """An object silhouette: a cluster of two to four overlapping ellipses and rounded rectangles."""
    cx, cy = rng.uniform(0.1, 0.9, size=2) * size
    extent = scale * size * 0.6
    for _ in range(int(rng.integers(2, 5))):
        w, h = rng.uniform(0.3, 1.0, size=2) * extent
        ox, oy = rng.uniform(-0.5, 0.5, size=2) * extent
        box = [cx + ox - w / 2, cy + oy - h / 2, cx + ox + w / 2, cy + oy + h / 2]
        if rng.uniform() < 0.5:
            draw.ellipse(box, fill=255)
        else:
            draw.rounded_rectangle(box, radius=min(w, h) * rng.uniform(0.05, 0.45), fill=255)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a boolean ``H×W`` array by a square of side ``2·radius+1`` (separable maxima)."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            lead = [slice(None)] * 2
            lag = [slice(None)] * 2
            lead[axis], lag[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(lead)] |= out[tuple(lag)]
            grown[tuple(lag)] |= out[tuple(lead)]
        out = grown
    return out


OBJECT_KINDS = ("face", "text", "logo", "silhouette")
_OBJECT_DRAW = {"face": _draw_face, "text": _draw_text_lines, "logo": _draw_logo, "silhouette": _draw_silhouette}


def object_mask(
    rng: np.random.Generator,
    size: int,
    min_area: float = 0.03,
    max_area: float = 0.40,
    kind: str | None = None,
) -> np.ndarray:
    """A hole ``size×size`` float32 (1 = hole) shaped like the objects users mask: faces (ellipses, with hair or
    shoulders), text lines (plain or rounded rectangles, whole lines or word by word), logos (circles, rounded
    squares, stars, blobs) and object silhouettes; sometimes grown by a sloppy margin. ``kind`` picks one of
    :data:`OBJECT_KINDS` for every element (``None``: each at random). The area fraction lies in
    ``[min_area, max_area]``: elements are added until a target drawn uniformly in the range is reached, each
    sized from the area still missing; a draw that overshoots is redrawn.
    """
    if not 0 < min_area <= max_area < 1:
        raise ValueError(f"need 0 < min_area <= max_area < 1, got {min_area}, {max_area}")
    if kind is not None and kind not in OBJECT_KINDS:
        raise ValueError(f"unknown object kind {kind!r}")
    while True:
        target = rng.uniform(min_area, max_area)
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        area = 0.0
        for _ in range(6):
            scale = float(np.sqrt(max(target - area, 0.5 * min_area)))
            name = kind if kind is not None else OBJECT_KINDS[int(rng.choice(4, p=[0.25, 0.3, 0.25, 0.2]))]
            _OBJECT_DRAW[name](rng, draw, size, scale)
            area = float(np.asarray(mask, dtype=np.float32).mean() / 255.0)
            if area >= target:
                break
        array = np.asarray(mask) > 127
        if rng.uniform() < 0.4:  # a margin of 1-3 px around the element, as a user's brush leaves
            array = _dilate(array, int(rng.integers(1, 4)))
        area = float(array.mean())
        if min_area <= area <= max_area:
            return array.astype(np.float32)


def training_mask(rng: np.random.Generator, size: int, min_area: float = 0.05, max_area: float = 0.5) -> np.ndarray:
    """The GAN candidate's training holes: LaMa-style strokes (35%), boxes (20%), strokes and boxes mixed (15%)
    and object-shaped holes (:func:`object_mask`, 30%)."""
    kind = int(rng.choice(4, p=[0.35, 0.2, 0.15, 0.3]))
    if kind == 3:
        return object_mask(rng, size, min_area, max_area)
    return random_mask(rng, size, min_area, max_area, kind=("strokes", "boxes", "mixed")[kind])


# --- more procedural variety


def _fractal_noise(rng: np.random.Generator, size: int, octaves: int = 5, beta: float = 1.0) -> np.ndarray:
    """Sum of bicubically upsampled random grids, amplitudes falling as 2^(−beta·octave); ``size×size`` in [0, 1]."""
    total = np.zeros((size, size), dtype=np.float32)
    cells, amplitude = int(rng.integers(2, 5)), 1.0
    for _ in range(octaves):
        grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1)).astype(np.float32)
        total += amplitude * np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))
        cells, amplitude = min(cells * 2, size), amplitude * 2.0 ** -beta
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _palette_ramp(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Map ``t`` in [0, 1] through a random ramp of 2–4 colours → ``H×W×3``."""
    n = int(rng.integers(2, 5))
    colours = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    stops = np.linspace(0, 1, n)
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A full-frame texture ``size×size×3`` in [0, 1]: fractal noise (clouds, marble, wood, granite) or a
    periodic pattern (bricks, tiles, dots, plaid, chevrons), rotated and slightly warped."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    warp = (_fractal_noise(rng, size, 3, 1.0) - 0.5) * rng.uniform(0, 0.06)
    u, v = u + warp, v + warp[::-1]
    kind = int(rng.integers(0, 9))
    if kind < 4:
        noise = _fractal_noise(rng, size, int(rng.integers(3, 7)), rng.uniform(0.5, 1.5))
        freq = rng.uniform(2, 10)
        if kind == 0:  # clouds
            t = noise
        elif kind == 1:  # marble veins
            t = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * u + rng.uniform(2, 6) * noise))
        elif kind == 2:  # wood rings
            cx, cy = rng.uniform(-0.5, 1.5, size=2)
            r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            t = (freq * 2 * r + rng.uniform(0.5, 2) * noise) % 1.0
        else:  # granite / speckle
            fine = rng.uniform(0, 1, size=(size, size)).astype(np.float32)
            t = np.clip(0.6 * noise + 0.4 * (fine > rng.uniform(0.5, 0.9)), 0, 1)
        image = _palette_ramp(rng, t)
    else:
        freq = rng.uniform(3, 16)
        a, b, c = (rng.uniform(0, 1, size=3).astype(np.float32) for _ in range(3))
        fu, fv = freq * u, freq * v
        if kind == 4:  # bricks: rows offset by half a brick, mortar lines, per-brick colour
            row = np.floor(fv * 2)
            col = np.floor(fu + 0.5 * (row % 2))
            mortar = (((fv * 2) % 1.0) < 0.1) | (((fu + 0.5 * (row % 2)) % 1.0) < 0.05)
            shade = (np.sin(row * 12.9898 + col * 78.233) * 43758.5453) % 1.0
            image = a * (0.8 + 0.4 * shade[..., None])
            image = np.where(mortar[..., None], b, image)
        elif kind == 5:  # tiles with grout
            cell_u, cell_v = np.floor(fu), np.floor(fv)
            grout = ((fu % 1.0) < 0.06) | ((fv % 1.0) < 0.06)
            checker = ((cell_u + cell_v) % 2)[..., None]
            image = np.where(grout[..., None], c, a * (1 - checker) + b * checker)
        elif kind == 6:  # polka dots, square or hexagonal lattice
            shift = 0.5 * (np.floor(fv) % 2) if rng.uniform() < 0.5 else 0.0
            d = np.sqrt(((fu + shift) % 1.0 - 0.5) ** 2 + (fv % 1.0 - 0.5) ** 2)
            image = np.where((d < rng.uniform(0.15, 0.4))[..., None], a, b)
        elif kind == 7:  # plaid: bands in two directions
            band_u = (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * fu)))[..., None]
            band_v = (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * fv * rng.uniform(0.5, 2))))[..., None]
            image = b * (1 - 0.4 * band_u) * (1 - 0.4 * band_v) + a * 0.4 * band_u * band_v
        else:  # chevrons: a triangle wave across stripes
            tri = 2 * np.abs((fu * rng.uniform(0.5, 2)) % 1.0 - 0.5)
            t = (((fv + 0.5 * tri) * 2) % 1.0 < 0.5).astype(np.float32)[..., None]
            image = a * (1 - t) + b * t
        image = image * (0.9 + 0.2 * _fractal_noise(rng, size, 4, 1.0)[..., None])
    image = image + rng.normal(0, rng.uniform(0, 0.03), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def _random_words(rng: np.random.Generator, count: int) -> str:
    letters = string.ascii_lowercase
    words = ["".join(letters[i] for i in rng.integers(0, 26, size=int(rng.integers(1, 10)))) for _ in range(count)]
    if words and rng.uniform() < 0.5:
        words[0] = words[0].capitalize()
    return " ".join(words)


def _text_page(rng: np.random.Generator, size: int) -> np.ndarray:
    """A document or poster: a paper-like background with a header and lines of text, sometimes in columns."""
    big = 2 * size
    paper = np.clip(rng.uniform(0.8, 1.0) + rng.uniform(-0.1, 0.05, size=3), 0, 1) if rng.uniform() < 0.7 \
        else rng.uniform(0, 1, size=3)
    canvas = Image.fromarray((np.broadcast_to(paper, (big, big, 3)) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    ink = tuple(int(c) for c in ((1 - np.round(paper.mean())) * 255 * rng.uniform(0.0, 0.3, size=3)
                                  + np.round(paper.mean()) * rng.uniform(0, 60, size=3)))
    margin = big * rng.uniform(-0.05, 0.1)
    y = margin
    if rng.uniform() < 0.6:  # header
        font = ImageFont.load_default(size=int(big * rng.uniform(0.06, 0.14)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.text((margin, y), _random_words(rng, int(rng.integers(1, 4))), fill=colour, font=font)
        y += big * rng.uniform(0.12, 0.2)
    columns = int(rng.integers(1, 3))
    font_size = int(big * rng.uniform(0.025, 0.07))
    font = ImageFont.load_default(size=font_size)
    column_w = (big - 2 * margin) / columns
    for col in range(columns):
        line_y = y
        while line_y < big:
            words = max(1, int(column_w / (font_size * 3)))
            draw.text((margin + col * column_w, line_y), _random_words(rng, words), fill=ink, font=font)
            line_y += font_size * rng.uniform(1.2, 1.8)
    if rng.uniform() < 0.3:  # ruled lines
        step = big * rng.uniform(0.05, 0.15)
        for k in range(int(big / step) + 1):
            draw.line([(0, k * step), (big, k * step)], fill=tuple(int(c) for c in rng.integers(0, 256, size=3)),
                      width=max(1, big // 256))
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _product_shot(rng: np.random.Generator, size: int) -> np.ndarray:
    """One large product (bottle, box, can, ball) with cylindrical shading, a highlight, a soft floor shadow and
    sometimes a label, on a plain or gradient studio background."""
    big = 2 * size
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    top, bottom = rng.uniform(0.75, 1.0, size=3), rng.uniform(0.6, 1.0, size=3)
    if rng.uniform() < 0.3:
        top, bottom = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    background = top * (1 - yy[..., None]) + bottom * yy[..., None]
    canvas = Image.fromarray((np.clip(background, 0, 1) * 255).astype(np.uint8))
    w = rng.uniform(0.25, 0.6) * big
    h = rng.uniform(0.35, 0.85) * big
    cx, base = rng.uniform(0.35, 0.65) * big, rng.uniform(0.75, 0.95) * big
    shadow = Image.new("L", (big, big), 0)
    ImageDraw.Draw(shadow).ellipse([cx - 0.7 * w, base - 0.06 * w, cx + 0.8 * w, base + 0.1 * w], fill=160)
    canvas.paste(Image.new("RGB", (big, big), (0, 0, 0)), (0, 0), shadow.filter(ImageFilter.GaussianBlur(big / 40)))
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    kind = int(rng.integers(0, 4))
    x0, x1, y0 = cx - w / 2, cx + w / 2, base - h
    if kind == 0:  # bottle: body and neck
        draw.rounded_rectangle([x0, y0 + 0.3 * h, x1, base], radius=w * 0.2, fill=255)
        draw.rounded_rectangle([cx - 0.15 * w, y0, cx + 0.15 * w, y0 + 0.35 * h], radius=w * 0.05, fill=255)
    elif kind == 1:  # box
        draw.rectangle([x0, y0, x1, base], fill=255)
    elif kind == 2:  # can: a rectangle with elliptical ends
        draw.rectangle([x0, y0 + 0.05 * w, x1, base - 0.05 * w], fill=255)
        draw.ellipse([x0, y0, x1, y0 + 0.1 * w], fill=255)
        draw.ellipse([x0, base - 0.1 * w, x1, base], fill=255)
    else:  # ball
        draw.ellipse([cx - w / 2, base - w, cx + w / 2, base], fill=255)
    colour = rng.uniform(0, 1, size=3)
    u = np.clip((xx * big - x0) / max(w, 1), 0, 1)
    light = 0.55 + 0.45 * np.cos((u - rng.uniform(0.3, 0.5)) * np.pi)
    highlight = rng.uniform(0.2, 0.7) * np.exp(-((u - rng.uniform(0.2, 0.4)) ** 2) / 0.004)
    layer = np.clip(colour * light[..., None] + highlight[..., None], 0, 1)
    canvas.paste(Image.fromarray((layer * 255).astype(np.uint8)), (0, 0), mask)
    if rng.uniform() < 0.6:  # label
        draw = ImageDraw.Draw(canvas)
        ly = base - h * rng.uniform(0.3, 0.6)
        label = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.rectangle([x0 + 0.05 * w, ly, x1 - 0.05 * w, ly + 0.25 * h], fill=label)
        font = ImageFont.load_default(size=max(4, int(0.08 * h)))
        draw.text((cx, ly + 0.125 * h), _random_text(rng, int(rng.integers(2, 8))),
                  fill=tuple(255 - c for c in label), font=font, anchor="mm")
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


POOL_KINDS = ("catalog", "texture", "text", "product")


def pool_image(seed: int, index: int, size: int) -> np.ndarray:
    """Procedural training image ``index`` of the GAN candidate's pool, ``size×size×3`` uint8.

    Drawn from its own generator (``[seed, 3, index]``), so a pool rendered by any number of processes is the
    same: catalog scenes (:func:`procedural_image`, 30%), full-frame textures (35%), text pages (15%) and
    product shots (20%).
    """
    rng = np.random.default_rng([seed, 3, index])
    kind = POOL_KINDS[int(rng.choice(4, p=[0.3, 0.35, 0.15, 0.2]))]
    if kind == "catalog":
        image = procedural_image(rng, size)
    elif kind == "texture":
        image = _texture(rng, size)
    elif kind == "text":
        image = _text_page(rng, size)
    else:
        image = _product_shot(rng, size)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


# --- batches for the GAN candidate


@dataclass(frozen=True)
class GanDataConfig:
    # Side of the square training crops.
    crop: int = 256
    # Procedural images pre-rendered once into the pool (side ``pool_side``), then cropped and augmented.
    pool_count: int = 3000
    # Side of the pool images (crops of ``crop`` are cut from them with a little scale jitter).
    pool_side: int = 320
    # Fraction of each batch drawn from the pool (the rest are crops of the skimage training photos).
    pool_fraction: float = 0.6
    # Range of the hole area fraction.
    min_area: float = 0.05
    # Upper end of the hole area fraction (LaMa trains with large holes too).
    max_area: float = 0.5


def load_training_photos(npz: str | None = None) -> list[np.ndarray]:
    """The training photos (:data:`TRAIN_SKIMAGE`) as ``H×W×3`` uint8 arrays: from ``skimage.data``, or from an
    ``.npz`` written by :func:`export_training_photos` (for machines without scikit-image)."""
    if npz is not None:
        with np.load(npz) as data:
            names = sorted(data.files, key=lambda k: int(k.split("_")[-1]))
            return [np.ascontiguousarray(data[k]) for k in names]
    return [(image * 255).round().astype(np.uint8) for name in TRAIN_SKIMAGE for image in load_skimage(name)]


def export_training_photos(path: str) -> None:
    """Write the training photos (never the held-out ones) to ``path`` as an uncompressed ``.npz``."""
    photos = load_training_photos()
    np.savez(path, **{f"photo_{i}": p for i, p in enumerate(photos)})


def draw_jitter(rng: np.random.Generator) -> np.ndarray:
    """Per-sample colour-jitter parameters (10 floats) for :func:`rtb_train.gan.apply_colour_jitter`, drawn
    from the same ranges as :func:`colour_jitter`: saturation, white balance (3), contrast, brightness, gamma,
    channel order (3; permuted with probability 0.2)."""
    params = np.empty(10, dtype=np.float32)
    params[0] = rng.uniform(0.6, 1.4)
    params[1:4] = rng.uniform(0.9, 1.1, size=3)
    params[4] = rng.uniform(0.75, 1.25)
    params[5] = rng.uniform(-0.1, 0.1)
    params[6] = rng.uniform(0.8, 1.25)
    params[7:10] = rng.permutation(3) if rng.uniform() < 0.2 else np.arange(3)
    return params


def random_crop_u8(rng: np.random.Generator, image: np.ndarray, size: int, max_scale: float = 3.0) -> np.ndarray:
    """A random ``size×size×3`` uint8 crop with scale jitter, flips and 90° rotations (colour jitter is
    applied later, on the training device)."""
    h, w = image.shape[:2]
    side = int(min(h, w, size * rng.uniform(1.0, max_scale)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = image[top : top + side, left : left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    crop = np.rot90(crop, k=int(rng.integers(0, 4)))
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def gan_batch(
    seed: int,
    index: int,
    batch: int,
    photos: list[np.ndarray],
    pool: np.ndarray,
    config: GanDataConfig = GanDataConfig(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training batch ``index`` of the GAN candidate, drawn only from ``[seed, 2, index]``.

    Returns ``(images batch×S×S×3 uint8, holes batch×S×S uint8 (1 = hole), jitter batch×10 float32)``: batch
    ``index`` is the same whichever process makes it and whatever came before, so worker processes can make
    batches in parallel and a resumed run continues with exactly the batches it would have seen.
    """
    rng = np.random.default_rng([seed, 2, index])
    photo_areas = np.array([np.sqrt(p.shape[0] * p.shape[1]) for p in photos], dtype=np.float64)
    photo_p = photo_areas / photo_areas.sum()
    images = np.empty((batch, config.crop, config.crop, 3), dtype=np.uint8)
    holes = np.empty((batch, config.crop, config.crop), dtype=np.uint8)
    jitter = np.empty((batch, 10), dtype=np.float32)
    for i in range(batch):
        if rng.uniform() < config.pool_fraction:
            source = pool[int(rng.integers(0, len(pool)))]
            images[i] = random_crop_u8(rng, source, config.crop, max_scale=source.shape[0] / config.crop)
        else:
            images[i] = random_crop_u8(rng, photos[int(rng.choice(len(photos), p=photo_p))], config.crop)
        holes[i] = training_mask(rng, config.crop, config.min_area, config.max_area).astype(np.uint8)
        jitter[i] = draw_jitter(rng)
    return images, holes, jitter
