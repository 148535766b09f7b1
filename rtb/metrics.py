"""Image quality metrics, from torchmetrics: SSIM (Gaussian 11/1.5, RGB in [0, 1]) and PSNR (data range 1)."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


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
