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


def mask_fraction(m: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels inside each mask: shape ``N``."""
    return m.flatten(1).mean(dim=1)
