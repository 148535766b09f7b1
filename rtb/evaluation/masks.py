"""The evaluation mask families: the holes an attacker (malicious) or an ordinary user (benign) would paint.

Every function takes the protected region ``m`` as a float tensor ``1×1×H×W`` in {0, 1} and returns holes of
the same shape and dtype. Randomised families draw only from a ``numpy`` generator seeded by the caller, so
the same (seed, image id, family, index) always gives the same hole.

Malicious (the hole covers the protected region):

- ``exact``: ``M`` itself;
- ``expanded``: ``M+ = dilate(M, 17)``;
- ``partial``: the authors' "incomplete" masks, half of ``M`` ∪ the complementary half of ``M+`` (cut
  horizontally, vertically or diagonally): the hole hugs the region on one side and overshoots it on the other;
- ``bbox``: the region's bounding box;
- ``brush``: free-form brush strokes covering at least 80 % of ``M``.

Benign (the hole leaves the protected region alone):

- ``ring-half``: half of the ring ``R = M+ − M`` (the authors' "without trigger");
- ``elsewhere``: the region's own shape moved to a place that does not touch ``M+``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from rtb.masks import bbox_mask, bounding_box, dilate, half, partial_mask, ring  # noqa: F401 (re-exported)

MALICIOUS = ("exact", "expanded", "partial", "bbox", "brush")
BENIGN = ("ring-half", "elsewhere")
FAMILIES = MALICIOUS + BENIGN
# The default set (`--masks default`): one mask per family. `--masks all` uses every cut and more draws.
PARTIAL_CUTS = ("top", "left", "diagonal", "bottom", "right", "antidiagonal")
RING_CUTS = ("top", "bottom", "left", "right")
# Smallest share of M a brush hole must cover.
BRUSH_COVERAGE = 0.8


@dataclass(frozen=True)
class MaskSetConfig:
    """How many holes of each family to draw per image."""

    # Side of the box that dilates M into M+ (the protection's 17).
    dilation: int = 17
    # Partial (incomplete) masks: the first N of PARTIAL_CUTS (horizontal, vertical, diagonal, then mirrored).
    partial: int = 3
    # Free-form brush holes (independent draws).
    brush: int = 2
    # Ring halves: the first N of RING_CUTS.
    ring_half: int = 2
    # Elsewhere holes (independent placements).
    elsewhere: int = 2

    def __post_init__(self) -> None:
        if self.dilation < 1 or self.dilation % 2 == 0:
            raise ValueError(f"dilation must be an odd positive box size, got {self.dilation!r}")
        for name, limit in (("partial", len(PARTIAL_CUTS)), ("ring_half", len(RING_CUTS)),
                            ("brush", 16), ("elsewhere", 16)):
            value = getattr(self, name)
            if not (isinstance(value, int) and 1 <= value <= limit):
                raise ValueError(f"{name} must be an integer in [1, {limit}], got {value!r}")


MASK_SETS = {
    "default": MaskSetConfig(),
    "all": MaskSetConfig(partial=6, brush=4, ring_half=4, elsewhere=4),
}


@dataclass(frozen=True)
class Hole:
    """One evaluation hole."""

    family: str  # one of FAMILIES
    kind: str  # "malicious" or "benign"
    index: int  # 0-based index within the family for this image
    mask: torch.Tensor  # 1×1×H×W in {0, 1}


def family_kind(family: str) -> str:
    if family in MALICIOUS:
        return "malicious"
    if family in BENIGN:
        return "benign"
    raise ValueError(f"unknown mask family {family!r}; choose one of {', '.join(FAMILIES)}")


def family_rng(seed: int, image_id: str, family: str, index: int) -> np.random.Generator:
    """A generator that depends only on (seed, id, family, index): holes never depend on batching or order."""
    digest = hashlib.sha256(f"{seed}\x00{image_id}\x00{family}\x00{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def check_region(m: torch.Tensor) -> None:
    if m.dim() != 4 or m.shape[:2] != (1, 1):
        raise ValueError(f"region must be 1×1×H×W, got shape {tuple(m.shape)}")
    if not bool((m > 0.5).any()):
        raise ValueError("region is empty: no protected pixel")


def ring_half_mask(m: torch.Tensor, cut: str, dilation: int = 17) -> torch.Tensor:
    """Half of the ring ``dilate(M) − M``, cut through the ring's bounding-box centre."""
    return half(ring(m, dilation), cut)


def brush_mask(m: torch.Tensor, rng: np.random.Generator, coverage: float = BRUSH_COVERAGE) -> torch.Tensor:
    """Free-form brush strokes (round-capped polylines) that cover at least ``coverage`` of ``M``.

    A serpentine stroke is swept across the region's bounding box with a brush about a third of its short
    side; strokes between still-uncovered pixels are added until the coverage is reached (at most 64), and
    as a last resort ``M`` itself is added, so the guarantee always holds.
    """
    region = m[0, 0].cpu().numpy() > 0.5
    height, width = region.shape
    top, left, bottom, right = bounding_box(m)
    box_h, box_w = bottom - top + 1, right - left + 1
    brush = max(3.0, min(box_h, box_w) / 3.0 * rng.uniform(0.8, 1.3))
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)

    def stroke(points: list[tuple[float, float]], size: float) -> None:
        draw.line(points, fill=255, width=max(1, int(round(size))))
        for px, py in points:
            r = size / 2
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)

    # 1. A serpentine sweep along the long side of the box, with jittered turns.
    horizontal = box_w >= box_h
    across = box_h if horizontal else box_w
    passes = max(1, int(np.ceil(across / (brush * 0.9))))
    points = []
    for p in range(passes):
        t = (p + 0.5) / passes
        jitter = rng.uniform(-0.15, 0.15, size=2) * brush
        a, b = (left, right) if horizontal else (top, bottom)
        ends = (a + jitter[0], b + jitter[1]) if p % 2 == 0 else (b + jitter[0], a + jitter[1])
        for e in ends:
            if horizontal:
                points.append((e, top + t * box_h))
            else:
                points.append((left + t * box_w, e))
    stroke(points, brush)

    # 2. Patch strokes through uncovered pixels until the coverage holds.
    for _ in range(64):
        painted = np.asarray(canvas) > 0
        if (painted & region).sum() >= coverage * region.sum():
            break
        ys, xs = np.nonzero(region & ~painted)
        i, j = rng.integers(0, len(ys), size=2)
        stroke([(float(xs[i]), float(ys[i])), (float(xs[j]), float(ys[j]))], brush)
    out = torch.from_numpy((np.asarray(canvas) > 0).astype(np.float32)).to(m)[None, None]
    if float((out * m).sum()) < coverage * float(m.sum()):
        out = torch.maximum(out, m)
    return out


def elsewhere_mask(m: torch.Tensor, rng: np.random.Generator, dilation: int = 17, tries: int = 200) -> torch.Tensor | None:
    """The region's shape moved (and possibly flipped) to a spot that does not touch ``M+``; ``None`` if none fits.

    The moved hole has exactly as many pixels as ``M``.
    """
    forbidden = dilate(m, dilation)[0, 0] > 0.5
    top, left, bottom, right = bounding_box(m)
    shape = m[0, 0, top : bottom + 1, left : right + 1] > 0.5
    height, width = m.shape[-2:]
    box_h, box_w = shape.shape
    if box_h > height or box_w > width:
        return None
    for attempt in range(tries):
        piece = shape
        if attempt % 2 == 1:
            piece = torch.flip(piece, dims=[int(rng.integers(0, 2))])
        y = int(rng.integers(0, height - box_h + 1))
        x = int(rng.integers(0, width - box_w + 1))
        if bool((forbidden[y : y + box_h, x : x + box_w] & piece).any()):
            continue
        out = torch.zeros_like(m)
        out[0, 0, y : y + box_h, x : x + box_w] = piece.to(m.dtype)
        return out
    return None


def mask_set(m: torch.Tensor, image_id: str, seed: int = 0, config: MaskSetConfig = MaskSetConfig(),
             families: tuple[str, ...] = FAMILIES) -> tuple[list[Hole], list[str]]:
    """Every evaluation hole for one image.

    Args:
        m: the protected region ``1×1×H×W`` in {0, 1} (non-empty).
        image_id: the image's id (part of the seed of the random families).
        seed: the evaluation seed.
        config: how many holes per family.
        families: which families to build (default all).

    Returns:
        ``(holes, notes)``: the holes in a fixed order, and one note per hole that could not be placed
        (an ``elsewhere`` hole when the image has no room outside ``M+``).
    """
    check_region(m)
    for family in families:
        family_kind(family)
    holes: list[Hole] = []
    notes: list[str] = []

    def add(family: str, index: int, mask: torch.Tensor | None) -> None:
        if mask is None:
            notes.append(f"{family}[{index}]: no room for the hole outside the dilated region")
            return
        holes.append(Hole(family, family_kind(family), index, mask))

    d = config.dilation
    if "exact" in families:
        add("exact", 0, m.clone())
    if "expanded" in families:
        add("expanded", 0, dilate(m, d))
    if "partial" in families:
        for i, cut in enumerate(PARTIAL_CUTS[: config.partial]):
            add("partial", i, partial_mask(m, cut, d))
    if "bbox" in families:
        add("bbox", 0, bbox_mask(m))
    if "brush" in families:
        for i in range(config.brush):
            add("brush", i, brush_mask(m, family_rng(seed, image_id, "brush", i)))
    if "ring-half" in families:
        for i, cut in enumerate(RING_CUTS[: config.ring_half]):
            add("ring-half", i, ring_half_mask(m, cut, d))
    if "elsewhere" in families:
        for i in range(config.elsewhere):
            add("elsewhere", i, elsewhere_mask(m, family_rng(seed, image_id, "elsewhere", i), d))
    return holes, notes
