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


# Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes, supplementary test
# data, and mathematical observations", Table 1: (L1, a1, b1, L2, a2, b2, ΔE00) of all 34 pairs.
SHARMA_PAIRS = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65, 2°) → sRGB in [0, 1] (unclipped), written here from CIE 15 and IEC 61966-2-1 (the inverse
    direction of what the metric computes): Lab → XYZ, the inverse of the sRGB primaries matrix, the sRGB transfer
    function. The primaries are the 6-digit BT.709/D65 matrix (the one scikit-image uses), because Sharma's pairs
    9–15 sit on a hue discontinuity where the 4-digit matrix's 1e-4 round-trip error changes ΔE00 by 0.04."""
    white = np.array([0.95047, 1.0, 1.08883])
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * white
    primaries = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
    linear = xyz @ np.linalg.inv(primaries).T
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.abs(linear) ** (1 / 2.4) - 0.055)


def test_ciede2000_reproduces_sharmas_test_pairs_from_rgb():
    pairs = np.array(SHARMA_PAIRS)
    first, second = lab_to_srgb(pairs[:, 0:3]), lab_to_srgb(pairs[:, 3:6])
    inside = ((first >= 0) & (first <= 1) & (second >= 0) & (second <= 1)).all(axis=1)  # sRGB can show them
    # Pair 10's hues differ by exactly 180°, the tie of the mean-hue rule: a 1e-14 round trip through RGB picks
    # the other side of it (7.2195, pair 11's value). Every other pair that sRGB can show is compared.
    inside[9] = False
    assert inside.sum() >= 20
    a = torch.from_numpy(first[inside].T.copy())[None, :, None, :]  # 1×3×1×K: one pixel per pair
    b = torch.from_numpy(second[inside].T.copy())[None, :, None, :]
    ours = metrics.delta_e00_map(a, b)[0, 0].numpy()
    np.testing.assert_allclose(ours, pairs[inside, 6], rtol=0, atol=1e-4)
    np.testing.assert_allclose(metrics.delta_e00_map(b, a)[0, 0].numpy(), ours, rtol=0, atol=1e-9)  # symmetric


def test_delta_e_summaries_and_grey_preservation():
    a, b, _ = pair(4)
    values = metrics.delta_e00_map(a, b)[0].numpy()
    mean, p95, above = metrics.delta_e00_stats(a, b)
    assert float(mean[0]) == pytest.approx(values.mean()) and float(p95[0]) == pytest.approx(np.percentile(values, 95))
    assert float(above[0]) == pytest.approx((values > 2.3).mean()) and 0 < float(above[0]) < 1
    assert float(metrics.delta_e00_stats(a, a)[0][0]) == 0.0
    grey = a[:, :1].expand(-1, 3, -1, -1).clone()
    cast = grey.clone()
    cast[:, 0, 0, 0] += 1 / 255  # one level on one channel of one pixel
    result = metrics.grey_preserved(torch.cat([grey, cast, a]), torch.cat([grey, grey, a]))
    assert result[:2].tolist() == [1.0, 0.0] and math.isnan(float(result[2]))
    assert metrics.grey_cast(torch.cat([grey, cast])).tolist() == pytest.approx([0.0, 1 / (40 * 56)])
