"""Colour handling of the perturbation: exact-grey images stay grey, and colour images can be perturbed in a
luminance/chroma basis with a separate, smaller chroma budget.

**Grey detection.** An image is *exactly grey* when every pixel has R = G = B once it is shown as RGB, whatever
its mode: ``1``, ``L``, ``LA``, ``I``, ``I;16`` and ``F`` always are; ``P`` (palette), ``RGB``, ``RGBA``,
``CMYK``, ``YCbCr``, ... are when their RGB pixels are (:func:`is_grey_image`, :func:`grey_samples`). A
black-and-white photo stored as an RGB JPEG decodes exactly grey (its Cb and Cr planes are constant 128).

**The luminance/chroma basis** (``colour="luma-chroma"``). δ is written in the coordinates of JPEG's full-range
YCbCr (ITU-R BT.601 luma weights ``K_R, K_G, K_B = 0.299, 0.587, 0.114``), in the unscaled colour-difference
form: ``u = (y, r, b)`` per pixel with

    y = K_R·δ_R + K_G·δ_G + K_B·δ_B        (the luma change)
    r = δ_R − y,   b = δ_B − y               (the colour-difference changes; Cr = r / 1.402, Cb = b / 1.772)

and back ``δ_R = y + r``, ``δ_B = y + b``, ``δ_G = y − (K_R·r + K_B·b) / K_G``. A change with ``r = b = 0`` is
``y·(1, 1, 1)``: it moves luminance only and keeps R = G = B exactly (the green formula adds ``−0.0``).

**The constraints** on one pixel with L∞ bound ``a`` (the per-pixel budget map, at most ε; :mod:`rtb.budget`)
and chroma bound ``c``:

    |δ_k| ≤ a for k in R, G, B   (the L∞ guarantee; it implies |y| ≤ a, since y is a convex mix of the δ_k)
    |r| ≤ c,  |b| ≤ c          (the chroma budget; c = 0 on exactly grey images)
    0 ≤ x_k + δ_k ≤ 1          (a valid image)

:meth:`DeltaSpace.project` maps any ``u`` into that set in closed form and leaves a point of the set unchanged:
it clips ``r`` and ``b`` to ``±c``, then scales the chroma part by the largest ``t ∈ [0, 1]`` for which a luma
``y`` meeting every channel's bound exists (``t = 0`` always does: ``y = 0``), then clips ``y`` to that interval.
So the luminance budget is used in full and the chroma budget shrinks only where the gamut or the L∞ bound
leave no room for it. With ``colour="rgb"`` (the paper's) δ is per RGB channel and clipped to ``±a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# Bases δ can be optimised in: "rgb" (per channel, the paper's) or "luma-chroma" (see the module docstring).
COLOURS = ("rgb", "luma-chroma")
# ITU-R BT.601 luma weights (JPEG/JFIF's YCbCr; the grey level of Chou & Li's JND model in rtb.budget).
K_R, K_G, K_B = 0.299, 0.587, 0.114
# Modes whose pixels are one grey level each (nothing to check).
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


# ----------------------------------------------------------------------------------------------------------
# Grey detection
# ----------------------------------------------------------------------------------------------------------


def is_grey_image(image: Image.Image) -> bool:
    """True when every pixel of ``image`` has R = G = B as RGB, whatever its mode (alpha is ignored)."""
    if image.mode in GREY_MODES:
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def grey_samples(x: torch.Tensor) -> torch.Tensor:
    """Per sample of ``N×3×H×W``: True when every pixel has exactly equal channels. Bool tensor of shape ``N``."""
    equal = (x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])
    return equal.flatten(1).all(dim=1)


# ----------------------------------------------------------------------------------------------------------
# The luminance/chroma basis
# ----------------------------------------------------------------------------------------------------------


def luma_chroma_from_rgb(delta: torch.Tensor) -> torch.Tensor:
    """``N×3×H×W`` RGB change → its coordinates ``(y, r, b)`` (luma, R − Y, B − Y), same shape."""
    y = K_R * delta[:, 0:1] + K_G * delta[:, 1:2] + K_B * delta[:, 2:3]
    return torch.cat([y, delta[:, 0:1] - y, delta[:, 2:3] - y], dim=1)


def rgb_from_luma_chroma(u: torch.Tensor) -> torch.Tensor:
    """Coordinates ``(y, r, b)`` ``N×3×H×W`` → the RGB change; ``r = b = 0`` gives exactly ``(y, y, y)``."""
    y, r, b = u[:, 0:1], u[:, 1:2], u[:, 2:3]
    return torch.cat([y + r, y - (K_R * r + K_B * b) / K_G, y + b], dim=1)


def _chroma_rgb(r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The chroma part of the RGB change, ``(r, g, b)`` with ``g = −(K_R·r + K_B·b)/K_G``: ``N×3×H×W``."""
    return torch.cat([r, -(K_R * r + K_B * b) / K_G, b], dim=1)


@dataclass(frozen=True)
class DeltaSpace:
    """Where δ is optimised and what bounds it, for one batch of ``N`` images of ``H×W``.

    A method keeps its variable ``u`` in this space: ``delta = space.to_rgb(u)`` in the forward pass and
    ``u = space.project(u, x)`` after each step.
    """

    # "rgb" (u is δ itself) or "luma-chroma" (u = (y, R − Y, B − Y)).
    basis: str
    # N×1×H×W per-pixel L∞ bound of every RGB channel of δ on [0, 1] (≤ ε; rtb.budget); +inf = no per-pixel
    # bound (an L2 method with a uniform budget).
    bound: torch.Tensor
    # N×1×H×W bound of |R − Y| and |B − Y| ("luma-chroma" only; 0 on exactly grey images); None for "rgb".
    chroma: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.basis not in COLOURS:
            raise ValueError(f"basis must be one of {', '.join(COLOURS)}; got {self.basis!r}")
        if self.basis == "luma-chroma" and self.chroma is None:
            raise ValueError("the luma-chroma basis needs a chroma bound")

    def from_rgb(self, delta: torch.Tensor) -> torch.Tensor:
        """An RGB change ``N×3×H×W`` in this space's coordinates."""
        return delta if self.basis == "rgb" else luma_chroma_from_rgb(delta)

    def to_rgb(self, u: torch.Tensor) -> torch.Tensor:
        """Coordinates ``N×3×H×W`` as the RGB change (differentiable; the identity for ``rgb``)."""
        return u if self.basis == "rgb" else rgb_from_luma_chroma(u)

    def scale(self, unit: torch.Tensor) -> torch.Tensor:
        """Coordinates from a draw ``unit`` in [−1, 1] (``N×3×H×W``): each scaled by its own per-pixel bound
        (``bound`` per RGB channel; ``bound, chroma, chroma`` for luma and colour differences). Finite bounds only."""
        if self.basis == "rgb":
            return unit * self.bound
        return unit * torch.cat([self.bound, self.chroma, self.chroma], dim=1)

    def project(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``u`` brought inside the constraints (per-pixel L∞ bound, chroma bound, ``x + δ`` in [0, 1]).

        ``rgb``: clip every channel to ``±bound``, then ``x + δ`` to [0, 1] (the paper's projection). ``luma-chroma``:
        the closed-form map of the module docstring. Points already inside are returned unchanged; a new tensor.
        """
        if self.basis == "rgb":
            return (u.clamp(-self.bound, self.bound) + x).clamp(0, 1) - x
        # 1. Chroma inside its budget.
        r = torch.minimum(torch.maximum(u[:, 1:2], -self.chroma), self.chroma)
        b = torch.minimum(torch.maximum(u[:, 2:3], -self.chroma), self.chroma)
        chroma = _chroma_rgb(r, b)  # N×3×H×W
        # 2. Per channel, y + chroma_k must lie in [low_k, high_k] (the L∞ bound and the gamut): low_k ≤ 0 ≤ high_k.
        low = torch.maximum(-self.bound, -x)
        high = torch.minimum(self.bound, 1 - x)
        # 3. The largest t in [0, 1] with max_k(low_k − t·chroma_k) ≤ min_j(high_j − t·chroma_j): for every pair,
        #    t·(chroma_j − chroma_k) ≤ high_j − low_k (≥ 0), binding where chroma_j > chroma_k.
        spread = chroma[:, :, None] - chroma[:, None, :]  # [j, k] = chroma_j − chroma_k
        room = high[:, :, None] - low[:, None, :]  # [j, k] = high_j − low_k
        limit = torch.where(spread > 0, room / torch.where(spread > 0, spread, torch.ones_like(spread)),
                            torch.full_like(spread, float("inf")))
        t = limit.flatten(1, 2).amin(dim=1, keepdim=True).clamp(max=1.0)
        r, b, chroma = r * t, b * t, chroma * t
        # 4. The luma inside the interval every channel allows.
        y_low = (low - chroma).amax(dim=1, keepdim=True)
        y_high = (high - chroma).amin(dim=1, keepdim=True)
        y = torch.minimum(torch.maximum(u[:, 0:1], y_low), y_high)
        return torch.cat([y, r, b], dim=1)

    def delta(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The RGB δ a method returns for coordinates ``u`` that :meth:`project` gave. ``rgb``: ``u`` itself (the
        paper's δ, unchanged). ``luma-chroma``: ``to_rgb(u)`` clipped per channel to ``±bound`` and ``x + δ`` to
        [0, 1], which removes the float rounding of the basis change (a grey δ has equal channels, so it stays
        exactly grey; the clip moves δ by at most a few ulps)."""
        if self.basis == "rgb":
            return u
        return (self.to_rgb(u).clamp(-self.bound, self.bound) + x).clamp(0, 1) - x

    def constrain(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """An RGB change (e.g. δ resized to full size) brought inside the budget, as an RGB change.

        ``rgb``: clipped to ``±bound`` only (:func:`rtb.images.quantize` clips ``x + δ`` to [0, 1], as before);
        ``luma-chroma``: projected in coordinates, then :meth:`delta`, so a grey image's δ is exactly grey.
        """
        if self.basis == "rgb":
            return delta.clamp(-self.bound, self.bound)
        return self.delta(self.project(self.from_rgb(delta), x), x)
