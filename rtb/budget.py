"""Per-pixel perturbation budgets: where δ may be large and where it must stay small.

Two budget maps (``ProtectConfig.budget``):

- ``uniform``: ε on every pixel (the paper's setting; an L∞ ball).
- ``jnd``: a just-noticeable-difference (JND) map of the source, with ε as the ceiling:
  ``bound(p) = min(⌊JND(p)⌋, ε·255) / 255``. Where the eye would see less than ε (flat mid-tones) δ gets less;
  where texture or a dark background masks more than ε, it gets ε. ``bound ≤ ε`` everywhere, so the L∞
  guarantee (every pixel within ⌈ε·255⌉ levels) holds, and below the ceiling the bound is a whole number of
  levels, so after the 8-bit rounding every pixel is within its own bound exactly.

The JND model is Chou & Li's pixel-domain model (C.-H. Chou and Y.-C. Li, "A perceptually tuned subband image
coder based on the measure of just-noticeable-distortion profile", IEEE Trans. Circuits Syst. Video Technol.
5(6):467–476, 1995), on the 8-bit grey level ``p`` of the image (its BT.601 luma, 0–255):

- background luminance ``bg = (1/32)·Σ p·B`` over the 5×5 neighbourhood, ``B`` = ones on the border, twos on the
  inner ring, 0 at the centre (:data:`BACKGROUND_KERNEL`);
- the largest weighted mean gradient ``mg = max_k |(1/16)·Σ p·G_k|`` over Chou & Li's four directional 5×5
  operators (:data:`GRADIENT_KERNELS`);
- luminance adaptation (visibility threshold of the background, from their viewing experiment)
  ``f2(bg) = T0·(1 − √(bg/127)) + 3`` for ``bg ≤ 127`` and ``γ·(bg − 127) + 3`` above, ``T0 = 17``, ``γ = 3/128``;
- spatial (texture) masking ``f1(bg, mg) = mg·α(bg) + β(bg)``, ``α = 0.0001·bg + 0.115``, ``β = λ − 0.01·bg``,
  ``λ = 1/2``;
- ``JND = max(f1, f2)`` in grey levels (at least 3: a flat mid-grey background hides 3 levels, a flat black one
  20, a flat white one 6; texture raises it in proportion to its gradient).

Every constant is the paper's. Borders are replicated. The map is computed one image at a time in float64 on the
CPU, so it never depends on the batch or the device. Later refinements (Yang et al. 2005's non-linear additivity
and edge protection) are left out: they need an edge detector's thresholds, and edges are where the ε ceiling
binds anyway.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rtb.colour import COLOURS, K_B, K_G, K_R, DeltaSpace, grey_samples

# Budget maps (ProtectConfig.budget).
BUDGETS = ("uniform", "jnd")
# Chou & Li (1995): background-luminance kernel (divided by 32) ...
BACKGROUND_KERNEL = (
    (1, 1, 1, 1, 1),
    (1, 2, 2, 2, 1),
    (1, 2, 0, 2, 1),
    (1, 2, 2, 2, 1),
    (1, 1, 1, 1, 1),
)
# ... and the four directional gradient operators G1–G4 (divided by 16).
GRADIENT_KERNELS = (
    ((0, 0, 0, 0, 0), (1, 3, 8, 3, 1), (0, 0, 0, 0, 0), (-1, -3, -8, -3, -1), (0, 0, 0, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 8, 3, 0, 0), (1, 3, 0, -3, -1), (0, 0, -3, -8, 0), (0, 0, -1, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 0, 3, 8, 0), (-1, -3, 0, 3, 1), (0, -8, -3, 0, 0), (0, 0, -1, 0, 0)),
    ((0, 1, 0, -1, 0), (0, 3, 0, -3, 0), (0, 8, 0, -8, 0), (0, 3, 0, -3, 0), (0, 1, 0, -1, 0)),
)
# Luminance adaptation f2: threshold at bg = 0 is T0 + 3; slope above mid-grey GAMMA.
T0 = 17.0
GAMMA = 3.0 / 128.0
# Texture masking f1 = mg·(ALPHA_SLOPE·bg + ALPHA_0) + (LAMBDA − BETA_SLOPE·bg).
ALPHA_SLOPE, ALPHA_0 = 0.0001, 0.115
LAMBDA, BETA_SLOPE = 0.5, 0.01


def check_budget_mode(budget) -> str:
    """``budget`` when it names a budget map, else ``ValueError`` naming it."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")
    return budget


def luma_levels(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``N×3×H×W`` RGB in [0, 1], in 8-bit grey levels: ``N×1×H×W`` in [0, 255]."""
    return (K_R * x[:, 0:1] + K_G * x[:, 1:2] + K_B * x[:, 2:3]) * 255.0


def _filter(levels: torch.Tensor, kernels, scale: float) -> torch.Tensor:
    """Correlate ``1×1×H×W`` with each 5×5 kernel (replicated borders), divided by ``scale``: ``1×K×H×W``."""
    weight = torch.tensor(kernels, dtype=torch.float64).reshape(-1, 1, 5, 5) / scale
    return F.conv2d(F.pad(levels, (2, 2, 2, 2), mode="replicate"), weight)


def jnd_levels(x: torch.Tensor) -> torch.Tensor:
    """Chou & Li's (1995) JND of every pixel, in 8-bit levels (≥ 3): ``N×1×H×W`` float64 on the CPU.

    Args:
        x: ``N×3×H×W`` RGB in [0, 1] (any device and float dtype); the grey level is its BT.601 luma.
    """
    out = []
    for image in x.detach().to("cpu", torch.float64):  # one image at a time: no batch effect
        p = luma_levels(image[None])
        bg = _filter(p, (BACKGROUND_KERNEL,), 32.0)
        mg = _filter(p, GRADIENT_KERNELS, 16.0).abs().amax(dim=1, keepdim=True)
        # Luminance adaptation f2 (bg is a mean of levels in [0, 255]).
        dark = T0 * (1 - torch.sqrt(bg.clamp(min=0) / 127.0)) + 3.0
        bright = GAMMA * (bg - 127.0) + 3.0
        f2 = torch.where(bg <= 127.0, dark, bright)
        # Texture masking f1.
        f1 = mg * (ALPHA_SLOPE * bg + ALPHA_0) + (LAMBDA - BETA_SLOPE * bg)
        out.append(torch.maximum(f1, f2))
    return torch.cat(out)


def budget_map(x: torch.Tensor, budget: str, ceiling: float | None) -> torch.Tensor:
    """The per-pixel L∞ bound of δ on [0, 1]: ``N×1×H×W`` on ``x``'s device and dtype.

    Args:
        x: ``N×3×H×W`` sources in [0, 1].
        budget: ``"uniform"`` (``ceiling`` everywhere) or ``"jnd"`` (``min(⌊JND⌋, ceiling·255) / 255``).
        ceiling: ε of an L∞ method; ``None`` for an L2 method, whose ε bounds a norm: ``uniform`` is then no
            per-pixel bound (+inf) and ``jnd`` the JND map itself.
    """
    check_budget_mode(budget)
    shape = (x.shape[0], 1, *x.shape[-2:])
    if budget == "uniform":
        return torch.full(shape, math.inf if ceiling is None else float(ceiling), dtype=x.dtype, device=x.device)
    levels = torch.floor(jnd_levels(x))
    if ceiling is not None:
        levels = levels.clamp(max=float(ceiling) * 255.0)
    return (levels / 255.0).to(x.device, x.dtype)


def delta_space(x: torch.Tensor, config, ceiling: float | None) -> DeltaSpace:
    """The :class:`~rtb.colour.DeltaSpace` of a batch under ``config`` (``budget``, ``colour``, ``chroma_ratio``).

    Args:
        x: ``N×3×H×W`` sources in [0, 1] (working resolution inside a method, full size in :func:`rtb.protect`).
        config: a :class:`~rtb.config.ProtectConfig`.
        ceiling: the method's resolved ε for an L∞ method, ``None`` for an L2 method.

    Returns:
        The space: per-pixel bound from :func:`budget_map`; with ``colour="luma-chroma"`` a chroma bound of
        ``chroma_ratio × bound``, and 0 on every exactly grey image (:func:`rtb.colour.grey_samples`).
    """
    if config.colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)}; got {config.colour!r}")
    bound = budget_map(x, config.budget, ceiling)
    if config.colour == "rgb":
        return DeltaSpace("rgb", bound)
    colour = (~grey_samples(x)).to(x.dtype).view(-1, 1, 1, 1)
    chroma = bound * (config.chroma_ratio * colour) if config.chroma_ratio > 0 else torch.zeros_like(bound)
    chroma = torch.where(colour > 0, chroma, torch.zeros_like(bound))  # 0·inf would be NaN
    return DeltaSpace("luma-chroma", bound, chroma)
