"""The procedural captioned domain the stand-in text-to-image model is trained on.

32×32 RGB pictures of one object (8 classes) on one of 5 scenes, or of an empty scene. Every object is an
*instance*: a class plus a parameter set (body colour, surface pattern and its colour, two proportions), so
the same class has ~180 distinct looks and continuous shape variation; a "subject" (what DreamBooth learns)
is one instance. A *pose* places an instance in a picture: position, scale, mirror, scene and the scene's own
variation (horizon height, colour jitter, texture). Shapes are drawn at 4× and box-filtered down, so edges
are anti-aliased.

Captions: ``"a photo of {class} on {scene}"`` or ``"a photo of {class}"`` for objects, ``"a photo of {scene}"``
or ``"a photo of empty scene"`` for empty scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Side of every picture, in pixels.
SIZE = 32
# Supersampling factor of the drawing canvas.
_SUPER = 4
_CANVAS = SIZE * _SUPER

CLASSES = ("ball", "house", "tree", "fish", "car", "flower", "star", "mushroom")
SCENES = ("grass", "beach", "snow", "night", "room")
# The recogniser's label for a picture without an object.
EMPTY = "empty"
# Body and pattern colours (RGB, 0–255).
PALETTE = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (245, 215, 50),
    "green": (60, 170, 70),
    "blue": (50, 90, 220),
    "purple": (140, 60, 180),
    "pink": (240, 130, 190),
    "white": (245, 245, 240),
}
COLOURS = tuple(PALETTE)
PATTERNS = ("plain", "stripes", "dots", "checker")
_OUTLINE = (30, 25, 30)
_TRUNK = (110, 70, 40)
_STEM = (235, 225, 200)
# Grows the filled region by 4 canvas pixels (one picture pixel): the dark outline.
_MAX_FILTER = ImageFilter.MaxFilter(9)


@dataclass(frozen=True)
class Instance:
    """One object look: what stays the same across every picture of a subject."""

    # One of CLASSES.
    cls: str
    # Body colour, one of COLOURS.
    body: str
    # Surface pattern, one of PATTERNS.
    pattern: str
    # Colour of the pattern (differs from body; equal to body for "plain").
    accent: str
    # Width/height stretch of the body, 0.8–1.25.
    aspect: float
    # Class-specific proportion (roof height, tail size, cabin size, …), 0.75–1.25.
    part: float
    # Pattern period in canvas pixels (16–22: 4–5.5 px in the picture).
    period: int


@dataclass(frozen=True)
class Pose:
    """Where and on what an instance is drawn in one picture."""

    # Scene, one of SCENES.
    scene: str
    # Object centre offset from the picture centre, pixels (each in −4…4).
    dx: float
    dy: float
    # Object scale, 0.8–1.1 of the class's base size.
    scale: float
    # Mirror the object left-right.
    mirror: bool
    # Seed of the scene's own variation (horizon, colour jitter, texture).
    scene_seed: int


def sample_instance(rng: np.random.Generator, cls: str | None = None) -> Instance:
    """A random instance (of ``cls`` when given) drawn with ``rng``."""
    cls = cls if cls is not None else CLASSES[rng.integers(len(CLASSES))]
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}; got {cls!r}")
    body = COLOURS[rng.integers(len(COLOURS))]
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    accent = body
    if pattern != "plain":
        others = [c for c in COLOURS if c != body]
        accent = others[rng.integers(len(others))]
    return Instance(cls, body, pattern, accent, float(rng.uniform(0.8, 1.25)), float(rng.uniform(0.75, 1.25)),
                    int(rng.integers(16, 23)))


def sample_pose(rng: np.random.Generator, scene: str | None = None) -> Pose:
    """A random pose (on ``scene`` when given) drawn with ``rng``."""
    scene = scene if scene is not None else SCENES[rng.integers(len(SCENES))]
    return Pose(scene, float(rng.uniform(-4, 4)), float(rng.uniform(-3, 3)), float(rng.uniform(0.8, 1.1)),
                bool(rng.integers(2)), int(rng.integers(2**31)))


# How a caption names a pattern (an adjective before the class word, as a colour is).
PATTERN_WORDS = {"plain": "plain", "stripes": "striped", "dots": "dotted", "checker": "checkered"}


def caption(cls: str | None, scene: str, with_scene: bool, attributes: str = "") -> str:
    """The caption of a picture of ``cls`` (None: an empty scene) on ``scene``; ``attributes`` (e.g. "red
    striped") go before the class word."""
    if cls is None:
        return f"a photo of {scene}" if with_scene else "a photo of empty scene"
    subject = f"{attributes} {cls}" if attributes else cls
    return f"a photo of {subject} on {scene}" if with_scene else f"a photo of {subject}"


def render_scene(pose: Pose) -> np.ndarray:
    """The background of ``pose`` as a ``SIZE×SIZE×3`` float array in [0, 255]."""
    rng = np.random.default_rng(pose.scene_seed)
    jitter = lambda colour: np.clip(np.asarray(colour, float) + rng.uniform(-18, 18, 3), 0, 255)  # noqa: E731
    horizon = int(rng.uniform(0.5, 0.68) * SIZE)
    rows = np.arange(SIZE)[:, None, None]
    if pose.scene == "grass":
        image = np.where(rows < horizon, jitter((150, 200, 240)), jitter((70, 150, 60)))
    elif pose.scene == "beach":
        sea = horizon + int(rng.integers(3, 7))
        image = np.where(rows < horizon, jitter((160, 210, 245)),
                         np.where(rows < sea, jitter((40, 110, 190)), jitter((225, 200, 140))))
    elif pose.scene == "snow":
        image = np.where(rows < horizon, jitter((190, 195, 205)), jitter((248, 248, 252)))
    elif pose.scene == "night":
        image = np.broadcast_to(jitter((20, 25, 60)), (SIZE, SIZE, 3)).copy()
        for _ in range(int(rng.integers(3, 7))):
            y, x = rng.integers(0, horizon), rng.integers(0, SIZE)
            image[y, x] = (235, 235, 190)
        image[horizon:] = jitter((25, 45, 30))
    elif pose.scene == "room":
        image = np.where(rows < horizon, jitter((215, 195, 160)), jitter((125, 85, 55)))
    else:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}; got {pose.scene!r}")
    image = np.broadcast_to(image, (SIZE, SIZE, 3)).astype(float)
    return np.clip(image + rng.normal(0, 4, (SIZE, SIZE, 1)), 0, 255)


def _body_shapes(instance: Instance, draw: ImageDraw.ImageDraw, extra: ImageDraw.ImageDraw, cx: float, cy: float,
                 s: float) -> None:
    """Draw the class's body (patterned) into ``draw`` and its fixed-colour parts into ``extra`` (both masks:
    255 = body / part index colour) around centre ``(cx, cy)`` at unit size ``s`` (canvas pixels)."""
    w, h = s * instance.aspect, s / instance.aspect
    p = instance.part
    if instance.cls == "ball":
        draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=255)
    elif instance.cls == "house":
        roof = 0.8 * h * p
        draw.rectangle((cx - w, cy - 0.2 * h, cx + w, cy + h), fill=255)
        draw.polygon([(cx - 1.15 * w, cy - 0.2 * h), (cx + 1.15 * w, cy - 0.2 * h), (cx, cy - 0.2 * h - roof)], fill=255)
        extra.rectangle((cx - 0.25 * w, cy + 0.35 * h, cx + 0.2 * w, cy + h), fill=1)  # door
    elif instance.cls == "tree":
        extra.rectangle((cx - 0.2 * w, cy, cx + 0.2 * w, cy + 1.1 * h), fill=2)  # trunk
        r = 0.75 * s * p
        draw.ellipse((cx - r * instance.aspect, cy - 0.3 * h - r / instance.aspect,
                      cx + r * instance.aspect, cy - 0.3 * h + r / instance.aspect), fill=255)
    elif instance.cls == "fish":
        tail = 0.55 * w * p
        draw.ellipse((cx - 0.8 * w, cy - 0.55 * h, cx + w, cy + 0.55 * h), fill=255)
        draw.polygon([(cx - 0.7 * w, cy), (cx - 0.7 * w - tail, cy - 0.5 * h), (cx - 0.7 * w - tail, cy + 0.5 * h)],
                     fill=255)
        extra.ellipse((cx + 0.45 * w, cy - 0.2 * h, cx + 0.65 * w, cy), fill=1)  # eye
    elif instance.cls == "car":
        cabin = 0.55 * w * p
        draw.rectangle((cx - w, cy - 0.1 * h, cx + w, cy + 0.5 * h), fill=255)
        draw.rectangle((cx - cabin, cy - 0.6 * h, cx + 0.6 * cabin, cy - 0.1 * h), fill=255)
        for wx in (cx - 0.55 * w, cx + 0.55 * w):
            extra.ellipse((wx - 0.28 * s, cy + 0.5 * h - 0.28 * s, wx + 0.28 * s, cy + 0.5 * h + 0.28 * s), fill=1)
    elif instance.cls == "flower":
        extra.rectangle((cx - 0.08 * s, cy, cx + 0.08 * s, cy + 1.1 * h), fill=3)  # stem
        r, ring = 0.38 * s * p, 0.5 * s
        for k in range(5):
            a = 2 * np.pi * k / 5 - np.pi / 2
            px, py = cx + ring * np.cos(a) * instance.aspect, cy - 0.3 * h + ring * np.sin(a)
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
        extra.ellipse((cx - 0.25 * s, cy - 0.3 * h - 0.25 * s, cx + 0.25 * s, cy - 0.3 * h + 0.25 * s), fill=4)
    elif instance.cls == "star":
        inner = 0.42 * p
        points = []
        for k in range(10):
            a = np.pi * k / 5 - np.pi / 2
            radius = 1.0 if k % 2 == 0 else inner
            points.append((cx + radius * w * 1.1 * np.cos(a), cy + radius * h * 1.1 * np.sin(a)))
        draw.polygon(points, fill=255)
    elif instance.cls == "mushroom":
        cap = 0.55 * h * p
        extra.rectangle((cx - 0.25 * w, cy - 0.1 * h, cx + 0.25 * w, cy + h), fill=5)  # stem
        draw.chord((cx - w, cy - cap, cx + w, cy + cap), 180, 360, fill=255)
    else:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}; got {instance.cls!r}")


def _pattern_mask(instance: Instance, cx: float, cy: float) -> np.ndarray:
    """Where the accent colour goes, on the canvas (bool), in object-local coordinates (moves with it)."""
    if instance.pattern == "plain":
        return np.zeros((_CANVAS, _CANVAS), bool)
    y, x = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(float)
    u, v = (x - cx) / instance.period, (y - cy) / instance.period
    if instance.pattern == "stripes":
        return np.floor(v + 0.25) % 2 == 0
    if instance.pattern == "dots":
        return (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.09
    if instance.pattern == "checker":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}; got {instance.pattern!r}")


def render(instance: Instance | None, pose: Pose) -> np.ndarray:
    """A ``SIZE×SIZE×3`` uint8 picture of ``instance`` (None: the empty scene) in ``pose``."""
    background = render_scene(pose)
    if instance is None:
        return np.round(background).astype(np.uint8)
    cx = _CANVAS / 2 + pose.dx * _SUPER
    cy = _CANVAS / 2 + pose.dy * _SUPER
    unit = 0.3 * _CANVAS * pose.scale
    body_image, extra_image = Image.new("L", (_CANVAS, _CANVAS), 0), Image.new("L", (_CANVAS, _CANVAS), 0)
    _body_shapes(instance, ImageDraw.Draw(body_image), ImageDraw.Draw(extra_image), cx, cy, unit)
    body, extra = np.asarray(body_image) > 0, np.asarray(extra_image)
    pattern = _pattern_mask(instance, cx, cy) & body
    canvas = np.zeros((_CANVAS, _CANVAS, 3))
    canvas[body] = PALETTE[instance.body]
    canvas[pattern] = PALETTE[instance.accent]
    part_colours = {1: _OUTLINE, 2: _TRUNK, 3: (50, 130, 50), 4: (250, 210, 60), 5: _STEM}
    for index, colour in part_colours.items():
        canvas[(extra == index) & ~body] = colour
    filled = body | (extra > 0)
    grown = np.asarray(Image.fromarray(filled.astype(np.uint8) * 255).filter(_MAX_FILTER)) > 0
    canvas[grown & ~filled] = _OUTLINE
    if pose.mirror:
        canvas, grown = canvas[:, ::-1], grown[:, ::-1]
    coverage = grown.reshape(SIZE, _SUPER, SIZE, _SUPER).mean(axis=(1, 3))[..., None]
    colour = canvas.reshape(SIZE, _SUPER, SIZE, _SUPER, 3).sum(axis=(1, 3))
    count = grown.reshape(SIZE, _SUPER, SIZE, _SUPER).sum(axis=(1, 3))[..., None]
    colour = colour / np.maximum(count, 1)
    picture = coverage * colour + (1 - coverage) * background
    return np.clip(np.round(picture), 0, 255).astype(np.uint8)



@dataclass(frozen=True)
class Sample:
    """One captioned training picture and the labels the recogniser learns."""

    # SIZE×SIZE×3 uint8 picture.
    image: np.ndarray
    # Its caption (see the module docstring).
    caption: str
    # The instance drawn (None for an empty scene).
    instance: Instance | None
    # Its pose.
    pose: Pose


def sample_picture(rng: np.random.Generator, empty_fraction: float = 0.1, scene_fraction: float = 0.5) -> Sample:
    """A random captioned picture: an empty scene with probability ``empty_fraction``, else a random instance;
    the caption names the scene with probability ``scene_fraction``."""
    instance = None if rng.random() < empty_fraction else sample_instance(rng)
    pose = sample_pose(rng)
    with_scene = bool(rng.random() < scene_fraction)
    return Sample(render(instance, pose), caption(instance.cls if instance else None, pose.scene, with_scene),
                  instance, pose)
