"""The one definition of every figure this project reports (a functional core, as torchmetrics keeps its
``functional/`` modules under its classes).

Images are float tensors ``N×C×H×W`` in [0, 1] unless said otherwise; holes and weights ``N×1×H×W`` (1 = inside).
Every function returns one value per image (shape ``N``). SSIM is torchmetrics' Gaussian 11/1.5 SSIM and PSNR
uses data range 1, the conventions of the papers this project compares against. The protection losses
(:mod:`rtb.methods`), the evaluation (:mod:`rtb.evaluation`), the jobs, the benchmarks and the trainers all call
these, so each figure in ``docs/`` has exactly one definition.

The goal thresholds the figures are judged by live here too (:data:`GOALS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


@dataclass(frozen=True)
class Goals:
    """What "the protection works" means, as thresholds on the medians of ``rtb evaluate``."""

    # Malicious edit (hole = the protected region) of the protected image vs the clean edit: at most this hole-SSIM.
    malicious_hole_ssim: float = 0.30
    # The same edit of the noise control at equal ε: at least this hole-SSIM (noise alone must not do it).
    control_hole_ssim: float = 0.85
    # Benign edits (elsewhere, half of the ring): at least this full-image SSIM against the clean edit.
    benign_full_ssim: float = 0.95
    # Protected image vs its source: at least this PSNR in dB, and a 95th percentile CIEDE2000 of at most about one
    # just-noticeable difference (docs/imperceptibility.md).
    protect_psnr: float = 32.0
    delta_e_p95: float = 2.3


GOALS = Goals()


# ----------------------------------------------------------------------------------------------------------
# Whole images
# ----------------------------------------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``N×C×H×W`` tensors in [0, 1] (inf where identical)."""
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of ``N×C×H×W`` tensors in [0, 1], Gaussian window 11, σ 1.5."""
    return structural_similarity_index_measure(
        a, b, data_range=1.0, gaussian_kernel=True, sigma=1.5, kernel_size=11, reduction="none"
    )


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image largest absolute difference."""
    return (a - b).abs().flatten(1).amax(dim=1)


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torchmetrics' SSIM map ``N×H×W`` (Gaussian 11/1.5, data range 1, averaged over the channels)."""
    _, full = structural_similarity_index_measure(
        a, b, data_range=1.0, gaussian_kernel=True, sigma=1.5, kernel_size=11, reduction="none",
        return_full_image=True,
    )
    return full.mean(dim=1)


# ----------------------------------------------------------------------------------------------------------
# Inside a hole (or any weight map)
# ----------------------------------------------------------------------------------------------------------


def masked_mse(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where ``weight`` is 1, all channels: shape ``N``.

    ``weight`` is ``N×1×H×W`` (broadcast over the channels) or ``N×C×H×W``; an empty hole gives 0. This is the
    loss of RTB's terms (``MSE_S`` in the paper) and of every hole figure below, so both measure the same thing.
    """
    weight = weight.to(a.dtype)
    squared = (a - b).pow(2) * weight
    count = weight.flatten(1).sum(dim=1) * (a.shape[1] if weight.shape[1] == 1 else 1)
    return squared.flatten(1).sum(dim=1) / count.clamp_min(1e-12)


def masked_psnr(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, data range 1) over the pixels of hole ``m``, all channels. Shape ``N``; ``inf`` where equal."""
    return 10.0 * torch.log10(1.0 / masked_mse(a, b, m))


def hole_and_full_ssim(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hole-SSIM, full-image SSIM) from one SSIM map: the map averaged over the pixels where ``m`` is 1, and
    over every pixel (which is torchmetrics' full-image SSIM). Each of shape ``N``."""
    full_map = ssim_map(a, b)
    weights = m[:, 0].to(full_map.dtype)
    hole = (full_map * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1)
    return hole, full_map.flatten(1).mean(1)


def hole_ssim(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """SSIM inside each hole: the SSIM map averaged over the pixels where ``m`` is 1. Shape ``N``."""
    return hole_and_full_ssim(a, b, m)[0]


def target_distance(edit: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean RGB distance of the hole's content to the target, over √3 (0 = the target exactly, 1 = the farthest
    colour). Shape ``N``."""
    distance = (edit - target).pow(2).sum(dim=1).sqrt() / math.sqrt(3.0)
    weights = m[:, 0].to(edit.dtype)
    return (distance * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1)


def fill_gain(edit: torch.Tensor, clean_edit: torch.Tensor, m: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS change of the fill (``edit − clean_edit`` inside hole ``m``, all channels) divided by ``eps``: how far a
    perturbation of budget ``eps`` moved what the editor paints. Shape ``N``."""
    return masked_mse(edit, clean_edit, m).sqrt() / eps


# ----------------------------------------------------------------------------------------------------------
# 8-bit images as stored
# ----------------------------------------------------------------------------------------------------------


def uint8_psnr_linf(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, L∞ on the [0, 1] scale) of two 8-bit arrays of the same shape, e.g. ``H×W×3``.

    The figures of a stored file against its source (``stored_psnr``/``stored_linf`` of the metrics rows).
    """
    if a.shape != b.shape:
        raise ValueError(f"arrays of shapes {a.shape} and {b.shape} cannot be compared")
    x = torch.from_numpy(np.asarray(a, dtype=np.float64) / 255.0).reshape(1, -1)
    y = torch.from_numpy(np.asarray(b, dtype=np.float64) / 255.0).reshape(1, -1)
    return float(peak_signal_noise_ratio(x, y, data_range=1.0)), float(linf(x, y)[0])


# ----------------------------------------------------------------------------------------------------------
# Imperceptibility as people see it: CIEDE2000 colour difference and exact grey
# ----------------------------------------------------------------------------------------------------------

# A just-noticeable colour difference in ΔE units: 2.3 (Mahy, Van Eycken and Oosterlinck 1994, quoted by Sharma's
# Digital Color Imaging Handbook, 2003), the threshold issue 20's goals are stated on. It was measured for
# CIELAB ΔE*ab; CIEDE2000 was scaled so that ΔE00 ≈ 1 is a just-perceptible difference between uniform patches
# side by side, so on photographs 2.3 is a lenient "noticeable at a glance", not a strict visibility threshold.
JND_DELTA_E = 2.3


def delta_e00_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference ΔE00 per pixel of two sRGB images: ``N×H×W`` float64.

    ``a``, ``b``: ``N×3×H×W`` sRGB in [0, 1]. scikit-image does both steps (a well-kept implementation, checked
    against Sharma, Wu and Dalal's 2005 test pairs in tests/test_metrics.py): ``skimage.color.rgb2lab`` (sRGB →
    CIELAB, D65, 2° observer) and ``skimage.color.deltaE_ciede2000`` with ``kL = kC = kH = 1``.
    """
    from skimage.color import deltaE_ciede2000, rgb2lab

    if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
        raise ValueError(f"need two N×3×H×W images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = a.detach().to("cpu", torch.float64).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    y = b.detach().to("cpu", torch.float64).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    maps = [deltaE_ciede2000(rgb2lab(x[i]), rgb2lab(y[i])) for i in range(x.shape[0])]
    return torch.from_numpy(np.stack(maps).astype(np.float64))


def delta_e00_stats(
    a: torch.Tensor, b: torch.Tensor, threshold: float = JND_DELTA_E
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean ΔE00, 95th percentile of ΔE00, share of pixels with ΔE00 > ``threshold``) over each image's pixels,
    from one :func:`delta_e00_map`. Each of shape ``N``; the percentile is numpy's (linear interpolation)."""
    maps = delta_e00_map(a, b).flatten(1).numpy()
    mean = maps.mean(axis=1)
    p95 = np.percentile(maps, 95, axis=1)
    above = (maps > threshold).mean(axis=1)
    return torch.from_numpy(mean), torch.from_numpy(np.asarray(p95, dtype=np.float64)), torch.from_numpy(above)


def is_grey(x: torch.Tensor) -> torch.Tensor:
    """Per image of ``N×3×H×W``: True when every pixel has exactly R = G = B. Bool, shape ``N``."""
    from rtb.colour import grey_samples

    return grey_samples(x)


def grey_preserved(protected: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Exact-grey preservation per image: 1.0 where the source is exactly grey and the protected image is too,
    0.0 where the source is grey and the protected image is not, NaN where the source has colour (nothing to
    preserve). ``N×3×H×W`` in [0, 1]; shape ``N`` float64."""
    source_grey, protected_grey = is_grey(source), is_grey(protected)
    out = protected_grey.to(torch.float64)
    return torch.where(source_grey, out, torch.full_like(out, math.nan))


def grey_cast(x: torch.Tensor) -> torch.Tensor:
    """How far from grey: the mean over pixels of ``max − min`` over the channels, in 8-bit levels (0 for an
    exactly grey image; a grey source's colour cast after protection). ``N×3×H×W`` in [0, 1]; shape ``N``."""
    return (x.amax(dim=1) - x.amin(dim=1)).flatten(1).mean(dim=1) * 255.0
