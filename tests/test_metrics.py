"""The metrics core (rtb.metrics) against independent computations: scikit-image on the same arrays, numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from rtb import metrics


def pair(seed=0, h=40, w=56):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    a = torch.nn.functional.avg_pool2d(a, 3, 1, 1)  # some structure, not pure noise
    b = (a + 0.08 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    m = torch.zeros(1, 1, h, w, dtype=torch.float64)
    m[..., 9:27, 14:40] = 1
    return a, b, m


def skimage_ssim_map(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """skimage's SSIM map with torchmetrics' border handling: pad by reflection, measure, crop the pad."""
    x = np.pad(a[0].permute(1, 2, 0).numpy(), ((5, 5), (5, 5), (0, 0)), mode="reflect")
    y = np.pad(b[0].permute(1, 2, 0).numpy(), ((5, 5), (5, 5), (0, 0)), mode="reflect")
    _, full = sk_ssim(x, y, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                      use_sample_covariance=False, full=True)
    return full[5:-5, 5:-5].mean(axis=2)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_and_psnr_match_scikit_image(seed):
    a, b, m = pair(seed)
    reference = skimage_ssim_map(a, b)
    np.testing.assert_allclose(metrics.ssim_map(a, b)[0].numpy(), reference, atol=1e-6)
    inside = m[0, 0].numpy() > 0
    assert float(metrics.hole_ssim(a, b, m)[0]) == pytest.approx(reference[inside].mean(), abs=1e-6)
    assert float(metrics.ssim(a, b)[0]) == pytest.approx(reference.mean(), abs=1e-6)
    # An interior-only check needs no padding trick: skimage's own default on the same arrays.
    plain = sk_ssim(a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy(), data_range=1.0, channel_axis=2,
                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)[1].mean(axis=2)
    np.testing.assert_allclose(metrics.ssim_map(a, b)[0, 5:-5, 5:-5].numpy(), plain[5:-5, 5:-5], atol=1e-6)
    x, y = a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy()
    assert float(metrics.masked_psnr(a, b, m)[0]) == pytest.approx(sk_psnr(x[inside], y[inside], data_range=1.0), abs=1e-6)
    assert float(metrics.psnr(a, b)[0]) == pytest.approx(sk_psnr(x, y, data_range=1.0), abs=1e-6)


def test_metric_edge_cases():
    a, _, m = pair()
    assert float(metrics.hole_ssim(a, a, m)[0]) == pytest.approx(1.0) and math.isinf(float(metrics.masked_psnr(a, a, m)[0]))
    red = torch.zeros_like(a)
    red[:, 0] = 1
    assert float(metrics.target_distance(red, red, m)[0]) == 0.0
    assert float(metrics.target_distance(1 - red, red, m)[0]) == pytest.approx(1.0)


def test_masked_mse_matches_numpy_for_pixel_and_channel_weights():
    a, b, m = pair(2)
    inside = m[0, 0].numpy() > 0
    expected = ((a[0].numpy() - b[0].numpy()) ** 2)[:, inside].mean()
    assert float(metrics.masked_mse(a, b, m)[0]) == pytest.approx(expected, rel=1e-12)
    assert float(metrics.masked_mse(a, b, m.expand(-1, 3, -1, -1))[0]) == pytest.approx(expected, rel=1e-12)
    assert float(metrics.masked_mse(a, b, torch.zeros_like(m))[0]) == 0.0  # an empty hole is no error


def test_fill_gain_is_rms_change_over_eps():
    a, b, m = pair(3)
    inside = m[0, 0].numpy() > 0
    rms = math.sqrt(((a[0].numpy() - b[0].numpy()) ** 2)[:, inside].mean())
    assert float(metrics.fill_gain(b, a, m, 0.025)[0]) == pytest.approx(rms / 0.025, rel=1e-12)


def test_uint8_psnr_linf_against_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    psnr, linf = metrics.uint8_psnr_linf(a, b)
    assert psnr == pytest.approx(sk_psnr(a, b, data_range=255), abs=1e-5)
    assert linf == pytest.approx(np.abs(a.astype(int) - b.astype(int)).max() / 255)
    assert metrics.uint8_psnr_linf(a, a) == (math.inf, 0.0)
    with pytest.raises(ValueError, match=r"\(24, 32, 3\) and \(24, 31, 3\)"):
        metrics.uint8_psnr_linf(a, a[:, :31])
