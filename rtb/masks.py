"""Mask geometry: the protected region M, its dilation M+, the ring R = M+ − M, and halves of a region.

Masks are float tensors ``N×1×H×W`` with values in {0, 1} (1 = inside).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HALF_CUTS = ("top", "bottom", "left", "right", "diagonal", "antidiagonal")


def dilate(m: torch.Tensor, size: int) -> torch.Tensor:
    """Dilate ``m`` with a ``size×size`` box (``size`` odd): every pixel within ``size//2`` of M in L∞."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"dilation size must be odd and positive, got {size}")
    return F.max_pool2d(m, kernel_size=size, stride=1, padding=size // 2)


def ring(m: torch.Tensor, size: int) -> torch.Tensor:
    """The ring ``dilate(m, size) − m``: the band of context around the protected region."""
    return dilate(m, size) - m


def half(m: torch.Tensor, cut: str) -> torch.Tensor:
    """One half of each region in ``m``, cut through the region's bounding-box centre.

    ``cut`` is ``top``/``bottom`` (a horizontal cut), ``left``/``right`` (a vertical cut), or
    ``diagonal``/``antidiagonal`` (the part below the main / anti diagonal through the centre).
    """
    if cut not in HALF_CUTS:
        raise ValueError(f"cut must be one of {', '.join(HALF_CUTS)}; got {cut!r}")
    n, _, height, width = m.shape
    rows = torch.arange(height, device=m.device, dtype=m.dtype).view(1, 1, height, 1)
    cols = torch.arange(width, device=m.device, dtype=m.dtype).view(1, 1, 1, width)
    out = torch.zeros_like(m)
    for i in range(n):
        ys, xs = torch.nonzero(m[i, 0] > 0.5, as_tuple=True)
        if ys.numel() == 0:
            continue
        cy = (ys.min() + ys.max()).to(m.dtype) / 2
        cx = (xs.min() + xs.max()).to(m.dtype) / 2
        select = {
            "top": rows <= cy,
            "bottom": rows > cy,
            "left": cols <= cx,
            "right": cols > cx,
            "diagonal": (rows - cy) >= (cols - cx),
            "antidiagonal": (rows - cy) >= -(cols - cx),
        }[cut]
        out[i] = m[i] * select[0].to(m.dtype)
    return out


def erode(m: torch.Tensor, size: int) -> torch.Tensor:
    """Erode ``m`` with a ``size×size`` box: the pixels whose whole box lies inside M."""
    return 1.0 - dilate(1.0 - m, size)


def bounding_box(m: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the region in a ``1×1×H×W`` mask, inclusive."""
    ys, xs = torch.nonzero(m[0, 0] > 0.5, as_tuple=True)
    return int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())


def bbox_mask(m: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """The filled bounding box of the region in a ``1×1×H×W`` mask, grown by ``margin`` pixels per side."""
    top, left, bottom, right = bounding_box(m)
    height, width = m.shape[-2:]
    out = torch.zeros_like(m)
    out[..., max(0, top - margin) : min(height, bottom + margin + 1), max(0, left - margin) : min(width, right + margin + 1)] = 1
    return out


def partial_mask(m: torch.Tensor, cut: str, dilation: int = 17) -> torch.Tensor:
    """Half ``cut`` of ``M`` ∪ the complementary half of ``M+``: exact on one side, 8 px too wide on the other."""
    expanded = dilate(m, dilation)
    return torch.maximum(half(m, cut), expanded - half(expanded, cut))


# The attacker-like hole shapes of mask augmentation (see attacker_hole).
ATTACKER_SHAPES = ("jitter", "bbox", "partial")


def attacker_hole(m: torch.Tensor, generator: torch.Generator, dilation: int = 17) -> torch.Tensor:
    """One random hole an attacker might paint over the region of a ``1×1×H×W`` mask.

    Drawn from ``generator`` only (so a sample's holes never depend on its batch), uniformly among:

    - ``jitter``: M with its contour moved out by up to ``dilation // 2`` pixels or in by up to a quarter of
      the region's shorter side (and at most ``dilation // 4``), so the hole still covers most of M;
    - ``bbox``: the region's bounding box grown by 0 to ``dilation // 2`` pixels per side;
    - ``partial``: half of M ∪ the complementary half of ``M+``, cut along a random one of :data:`HALF_CUTS`.

    An empty mask comes back unchanged.
    """
    if not bool((m > 0.5).any()):
        return m
    reach = dilation // 2
    pick = lambda high: int(torch.randint(high, (1,), generator=generator, device=generator.device))  # noqa: E731
    shape = ATTACKER_SHAPES[pick(len(ATTACKER_SHAPES))]
    if shape == "jitter":
        top, left, bottom, right = bounding_box(m)
        inward = min(reach // 2, (min(bottom - top, right - left) + 1) // 4)
        radius = pick(reach + inward + 1) - inward
        if radius >= 0:
            return dilate(m, 2 * radius + 1)
        eroded = erode(m, -2 * radius + 1)
        return eroded if bool((eroded > 0.5).any()) else m
    if shape == "bbox":
        return bbox_mask(m, pick(reach + 1))
    return partial_mask(m, HALF_CUTS[pick(len(HALF_CUTS))], dilation)


def mask_fraction(m: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels inside each mask: shape ``N``."""
    return m.flatten(1).mean(dim=1)
