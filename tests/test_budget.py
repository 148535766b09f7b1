"""Per-pixel budgets (rtb.budget): Chou & Li's JND map against an independent computation and the paper's
analytic values, larger in texture than on flat areas, and respected per pixel by every method that takes ε."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import correlate

from rtb import ProtectConfig, load_inpainter, protect
from rtb.budget import budget_map, jnd_levels
from rtb.images import to_tensor
from rtb.inpainters.diffusers_inpaint import load_diffusers
from rtb.methods import photoguard_diffusion, photoguard_encoder
from tests.fixtures.catalogs import sample
from tests.fixtures.inpainters import build_tiny_torchscript
from tests.fixtures.tiny_diffusers import TINY_SIZE, build_tiny_inpaint_pipeline, tiny_generators

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.025


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_inpainter(build_tiny_torchscript(tmp_path_factory.mktemp("models") / "tiny.pt"), device="cpu")


def chou_li_numpy(rgb: np.ndarray) -> np.ndarray:
    """Chou & Li (1995) written out again with scipy, from the paper's kernels and constants: ``H×W`` levels."""
    p = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    b = np.array([[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]) / 32
    g1 = np.array([[0, 0, 0, 0, 0], [1, 3, 8, 3, 1], [0, 0, 0, 0, 0], [-1, -3, -8, -3, -1], [0, 0, 0, 0, 0]])
    g2 = np.array([[0, 0, 1, 0, 0], [0, 8, 3, 0, 0], [1, 3, 0, -3, -1], [0, 0, -3, -8, 0], [0, 0, -1, 0, 0]])
    g3 = np.array([[0, 0, 1, 0, 0], [0, 0, 3, 8, 0], [-1, -3, 0, 3, 1], [0, -8, -3, 0, 0], [0, 0, -1, 0, 0]])
    g4 = np.array([[0, 1, 0, -1, 0], [0, 3, 0, -3, 0], [0, 8, 0, -8, 0], [0, 3, 0, -3, 0], [0, 1, 0, -1, 0]])
    bg = correlate(p, b, mode="nearest")
    mg = np.max([np.abs(correlate(p, g / 16, mode="nearest")) for g in (g1, g2, g3, g4)], axis=0)
    f2 = np.where(bg <= 127, 17 * (1 - np.sqrt(bg / 127)) + 3, 3 / 128 * (bg - 127) + 3)
    f1 = mg * (0.0001 * bg + 0.115) + (0.5 - 0.01 * bg)
    return np.maximum(f1, f2)


def test_jnd_map_matches_an_independent_computation_and_the_papers_values():
    image, _ = sample(0, size=(40, 56))
    rgb = np.asarray(image)
    ours = jnd_levels(to_tensor(image)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, chou_li_numpy(rgb), rtol=0, atol=1e-9)
    # Flat images: f2 alone — black 17 + 3 = 20 levels, mid-grey (bg = 127) 3, white 3/128·128 + 3 = 6.
    flats = torch.stack([torch.full((3, 16, 16), level / 255, dtype=torch.float64) for level in (0, 127, 255)])
    values = jnd_levels(flats)[:, 0, 8, 8].tolist()
    assert values == pytest.approx([20.0, 3.0, 6.0], abs=1e-9)


def test_jnd_is_larger_in_texture_than_on_flat_areas_of_the_same_brightness():
    rng = np.random.default_rng(0)
    pixels = np.full((64, 128, 3), 128, np.uint8)
    blocks = np.kron(rng.integers(0, 2, (16, 16)), np.ones((4, 4))) * 120 - 60  # 4-pixel blocks of 128 ± 60
    pixels[:, 64:] = (128 + blocks[..., None]).astype(np.uint8)  # textured right half, the same mean
    levels = jnd_levels(to_tensor(Image.fromarray(pixels))[None])[0, 0]
    flat, texture = levels[8:-8, 8:56], levels[8:-8, 72:-8]
    assert float(flat.max()) == pytest.approx(3 + 3 / 128 * 1, abs=1e-9)  # bg 128: luminance adaptation only
    assert float(texture.min()) > float(flat.max()) and float(texture.median()) > 2 * float(flat.median())
    # The budget map: ε where texture masks more than ε, the flat area's whole levels (3) below it.
    bound = budget_map(to_tensor(Image.fromarray(pixels))[None], "jnd", EPS)[0, 0]
    assert float(bound.max()) == EPS and (bound[8:-8, 8:56] * 255 == 3).all()
    assert float((bound[8:-8, 72:-8] == EPS).float().mean()) > 0.3


def test_budget_maps_uniform_jnd_ceiling_and_batch_independence():
    x = torch.stack([to_tensor(sample(i, size=(32, 48))[0]) for i in range(3)])
    assert torch.equal(budget_map(x, "uniform", EPS), torch.full((3, 1, 32, 48), EPS, dtype=torch.float64))
    assert torch.isinf(budget_map(x, "uniform", None)).all()  # an L2 method: no per-pixel bound
    jnd = budget_map(x, "jnd", EPS)
    expected = torch.minimum(torch.floor(jnd_levels(x)), torch.tensor(EPS * 255)) / 255
    assert torch.equal(jnd, expected) and float(jnd.max()) <= EPS and float(jnd.min()) >= 3 / 255
    below = jnd < EPS
    assert torch.equal(jnd[below] * 255, torch.round(jnd[below] * 255))  # whole levels under the ceiling
    for i in range(3):  # one image at a time: the batch never changes a map
        assert torch.equal(budget_map(x[i : i + 1], "jnd", EPS), jnd[i : i + 1])
    assert torch.equal(budget_map(x.float(), "jnd", EPS), jnd.float())
    with pytest.raises(ValueError, match="budget must be one of uniform, jnd; got 'perceptual'"):
        ProtectConfig(budget="perceptual")


def within_map(source: Image.Image, protected: Image.Image, ceiling: float | None):
    """(largest excess over the per-pixel bound in levels, share of pixels strictly inside ε, largest change)."""
    bound = budget_map(to_tensor(source.convert("RGB"))[None], "jnd", ceiling)[0, 0].numpy()
    diff = np.abs(np.asarray(protected.convert("RGB"), np.int16) - np.asarray(source.convert("RGB"), np.int16))
    levels = np.ceil(bound * 255 - 1e-9)[..., None]
    return int((diff - levels).max()), float((levels < math.ceil(EPS * 255)).mean()), int(diff.max())


@pytest.mark.parametrize("method, colour, eot", [("rtb", "rgb", ""), ("rtb", "luma-chroma", ""),
                                                  ("rtb", "luma-chroma", "jpeg:60-95,resize:0.5-1.0"),
                                                  ("noise", "luma-chroma", ""), ("noise", "rgb", "")])
def test_jnd_bound_holds_per_pixel_after_8bit_rounding(model, method, colour, eot):
    pairs = [sample(i, size=(40, 48)) for i in range(2)]
    config = ProtectConfig(eps=EPS, steps=4, budget="jnd", colour=colour, eot=eot)
    result = protect([p[0] for p in pairs], [p[1] for p in pairs], model=model, method=method, config=config)
    for (image, _), protected, stats in zip(pairs, result.images, result.stats):
        excess, below_ceiling, largest = within_map(image, protected, EPS)
        assert excess <= 0  # |protected − source| ≤ ⌈bound·255⌉ = bound·255 below the ceiling, pixel by pixel
        assert largest <= math.ceil(EPS * 255) and largest >= math.ceil(EPS * 255) - 1  # ε is reached somewhere
        assert below_ceiling > 0.05  # and the map does hold some pixels below ε
        assert stats.bound_mean < EPS and stats.eps == EPS


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return load_diffusers(build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny") / "sd-inpaint"))


def smooth_batch(n=2):
    """Smooth 32×32 images (flat areas where the JND map is below ε) and a square hole."""
    x = torch.stack([to_tensor(sample(i, size=(TINY_SIZE, TINY_SIZE))[0]) for i in range(n)]).float()
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    m = torch.zeros(n, 1, TINY_SIZE, TINY_SIZE)
    m[..., 8:24, 8:24] = 1
    return x, m


def test_photoguard_methods_respect_the_jnd_map_and_keep_grey(sd, monkeypatch):
    monkeypatch.setattr(photoguard_diffusion, "NOISE_DRAWS", 1)
    monkeypatch.setattr(photoguard_diffusion, "UNROLL_STEPS", 1)
    x, m = smooth_batch()
    x[1] = x[1, :1]  # the second image is exactly grey
    config = ProtectConfig(steps=3, budget="jnd", colour="luma-chroma", chroma_ratio=0.25)
    for module, ceiling in ((photoguard_encoder, photoguard_encoder.DEFAULT_EPS), (photoguard_diffusion, None)):
        out = module.run(sd, x, m, config, tiny_generators([0, 1]))
        bound = budget_map(x, "jnd", ceiling)
        assert (out.delta.abs() <= bound + 1e-6).all() and out.delta.abs().max() > 0
        assert (out.delta * m).abs().max() == 0
        assert (x + out.delta).min() >= 0 and (x + out.delta).max() <= 1  # exactly, in float32
        assert torch.equal(out.delta[1, 0], out.delta[1, 1]) and torch.equal(out.delta[1, 1], out.delta[1, 2])
        if ceiling is not None:
            assert (bound < ceiling).float().mean() > 0.2  # the map is below ε on the smooth images' flat parts
        else:
            assert float(out.delta.flatten(1).norm(dim=1).max()) <= photoguard_diffusion.DEFAULT_EPS + 1e-4


def test_l2_method_through_protect_bounds_every_pixel_by_the_jnd_map(sd, monkeypatch):
    monkeypatch.setattr(photoguard_diffusion, "NOISE_DRAWS", 1)
    monkeypatch.setattr(photoguard_diffusion, "UNROLL_STEPS", 1)
    x, m = smooth_batch(1)
    image = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    mask = m[0, 0].numpy() > 0
    for budget in ("uniform", "jnd"):
        config = ProtectConfig(eps=4.0, steps=2, budget=budget)
        result = protect([image], [mask], model=sd, method="photoguard-diffusion", config=config)
        stats = result.stats[0]
        assert math.isfinite(stats.bound_mean) and stats.eps == 4.0  # a finite figure for the metrics row
        if budget == "uniform":
            assert stats.bound_mean == 1.0  # no per-pixel bound but the pixel range
        else:
            excess, _, largest = within_map(image, result.images[0], None)
            assert excess <= 0 and largest > 0 and stats.bound_mean < 20 / 255
