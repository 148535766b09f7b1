"""Colour handling (rtb.colour): exact-grey detection in every mode, the luminance/chroma basis and its projection,
and grey images that come back exactly grey from protect() as PNG and as JPEG."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rtb import ProtectConfig, config_hash, load_inpainter, protect
from rtb.budget import budget_map, delta_space
from rtb.colour import DeltaSpace, grey_samples, is_grey_image, luma_chroma_from_rgb, rgb_from_luma_chroma
from rtb.images import to_tensor
from rtb.transforms import encode_output
from tests.fixtures.catalogs import sample
from tests.fixtures.inpainters import build_tiny_torchscript

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_inpainter(build_tiny_torchscript(tmp_path_factory.mktemp("models") / "tiny.pt"), device="cpu")


def grey_photo(seed: int = 0, size=(48, 40)) -> tuple[Image.Image, np.ndarray]:
    """A textured colour sample turned into a black-and-white photo stored as RGB (R = G = B), and its mask."""
    image, mask = sample(seed, size=size)
    return image.convert("L").convert("RGB"), mask


def test_grey_detection_whatever_the_mode():
    colour, _ = sample(0)
    grey, _ = grey_photo(0)
    grey_palette = grey.convert("L").convert("P")
    assert is_grey_image(grey) and is_grey_image(grey.convert("L")) and is_grey_image(grey.convert("LA"))
    assert is_grey_image(grey.convert("1")) and is_grey_image(grey.convert("I")) and is_grey_image(grey.convert("F"))
    assert is_grey_image(grey_palette) and is_grey_image(grey.convert("CMYK")) and is_grey_image(grey.convert("RGBA"))
    assert not is_grey_image(colour) and not is_grey_image(colour.convert("P")) and not is_grey_image(colour.convert("RGBA"))
    one_off = np.asarray(grey).copy()
    one_off[3, 5, 2] ^= 1  # a single level in one channel of one pixel
    assert not is_grey_image(Image.fromarray(one_off))
    batch = torch.stack([to_tensor(grey), to_tensor(colour), to_tensor(Image.fromarray(one_off))])
    assert grey_samples(batch).tolist() == [True, False, False]


def test_luma_chroma_basis_round_trip_and_pure_luma_is_exactly_grey():
    delta = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    u = luma_chroma_from_rgb(delta)
    torch.testing.assert_close(rgb_from_luma_chroma(u), delta, rtol=0, atol=1e-15)
    # The luma coordinate is BT.601 luma: a change with no colour difference has that luma on every channel.
    assert torch.allclose(u[:, 0], 0.299 * delta[:, 0] + 0.587 * delta[:, 1] + 0.114 * delta[:, 2], atol=1e-16)
    pure = torch.zeros_like(u)
    pure[:, 0] = u[:, 0]
    rgb = rgb_from_luma_chroma(pure)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2]) and torch.equal(rgb[:, 0], u[:, 0])


def random_space(seed: int, basis: str, grey: bool = False):
    """A batch with saturated pixels (0 and 1), a random per-pixel bound ≤ 0.03 and a chroma bound."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    x[:, :, :3] = torch.randint(0, 2, (2, 3, 3, 12), generator=g).to(torch.float64)  # gamut corners
    if grey:
        x[:] = x[:, :1]
    bound = torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64) * 0.03
    chroma = None if basis == "rgb" else bound * 0.4 * (0.0 if grey else 1.0)
    u = (torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64) - 0.5) * 0.2  # far outside the budget
    return x, DeltaSpace(basis, bound, chroma), u


@pytest.mark.parametrize("basis", ["rgb", "luma-chroma"])
def test_projection_keeps_every_constraint_and_is_idempotent(basis):
    for seed in range(3):
        x, space, u = random_space(seed, basis)
        projected = space.project(u, x)
        delta = space.to_rgb(projected)
        assert (delta.abs() <= space.bound + 1e-15).all()  # the L∞ bound, per pixel and channel
        assert ((x + delta) >= -1e-15).all() and ((x + delta) <= 1 + 1e-15).all()
        if basis == "luma-chroma":
            assert (projected[:, 1:].abs() <= space.chroma + 1e-15).all()  # |R−Y|, |B−Y| within the chroma bound
            # The luma budget is used: the projection only clips (never shrinks a feasible luma to 0).
            assert (delta.abs().amax(dim=1, keepdim=True) > 0.9 * space.bound).float().mean() > 0.5
        torch.testing.assert_close(space.project(projected, x), projected, rtol=0, atol=1e-15)
        # A point inside the set is left as it is (exactly in luma-chroma; rgb re-derives δ from x + δ).
        inside = projected * 0.5
        if basis == "rgb":
            torch.testing.assert_close(space.project(inside, x), inside, rtol=0, atol=1e-16)
        else:
            assert torch.equal(space.project(inside, x), inside)


def test_projection_of_a_grey_image_with_no_chroma_budget_is_exactly_grey():
    x, space, u = random_space(4, "luma-chroma", grey=True)
    delta = space.to_rgb(space.project(u, x))
    assert torch.equal(delta[:, 0], delta[:, 1]) and torch.equal(delta[:, 1], delta[:, 2])
    assert delta.abs().amax() > 0 and (delta.abs() <= space.bound).all()
    # constrain(): an RGB δ with a colour cast, brought inside the budget, comes back exactly grey.
    cast = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.02
    grey = space.constrain(cast, x)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_delta_space_detects_grey_images_and_scales_the_chroma_budget():
    grey, _ = grey_photo(1)
    colour, _ = sample(1)
    x = torch.stack([to_tensor(grey), to_tensor(colour)])
    space = delta_space(x, ProtectConfig(budget="jnd", colour="luma-chroma", chroma_ratio=0.25), 0.025)
    assert torch.equal(space.bound, budget_map(x, "jnd", 0.025))
    assert space.chroma[0].abs().max() == 0  # no colour on the grey image
    torch.testing.assert_close(space.chroma[1], 0.25 * space.bound[1], rtol=0, atol=0)
    assert delta_space(x, ProtectConfig(colour="rgb"), 0.025).basis == "rgb"


def png_bytes_grey(image: Image.Image) -> bool:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return is_grey_image(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("budget", ["uniform", "jnd"])
def test_a_grey_image_stays_exactly_grey_after_protection_png_and_jpeg(model, budget):
    grey_rgb, mask = grey_photo(2)
    grey_l = grey_photo(3)[0].convert("L")  # a mode-L source (like the bundled cameraman)
    colour, colour_mask = sample(4)
    config = ProtectConfig(steps=4, budget=budget, colour="luma-chroma")
    result = protect([grey_rgb, grey_l, colour], [mask, grey_photo(3)[1], colour_mask], model=model, config=config)
    for source, protected, stats in zip((grey_rgb, grey_l), result.images[:2], result.stats[:2]):
        diff = np.abs(np.asarray(protected, np.int16) - np.asarray(source.convert("RGB"), np.int16))
        assert diff.max() >= 2  # it was perturbed...
        assert png_bytes_grey(protected)  # ...in luminance only: R = G = B on every pixel of the PNG
        assert stats.source_grey and stats.grey_preserved is True
        for quality in (95, 75):  # JPEG: R = G = B gives Cb = Cr = 128 exactly, which decodes grey
            encoded = encode_output(protected, source.convert("RGB"), f"jpeg:{quality}")
            assert is_grey_image(Image.open(io.BytesIO(encoded.data)))
    assert not is_grey_image(result.images[2]) and result.stats[2].grey_preserved is None
    # The paper's per-channel basis gives the grey image a colour cast (what issue 20 is about).
    paper = protect([grey_rgb], [mask], model=model, config=ProtectConfig(steps=4, budget=budget, colour="rgb"))
    assert not is_grey_image(paper.images[0]) and paper.stats[0].grey_preserved is False


def test_colour_settings_are_validated_and_hashed():
    for bad, message in [
        ({"colour": "lab"}, "colour must be one of rgb, luma-chroma; got 'lab'"),
        ({"chroma_ratio": 1.5}, "chroma_ratio must be a number in \\[0, 1\\], got 1.5"),
        ({"chroma_ratio": -0.1}, "chroma_ratio must be a number in \\[0, 1\\], got -0.1"),
        ({"chroma_ratio": "0.5"}, "chroma_ratio must be a number in \\[0, 1\\], got '0.5'"),
        ({"chroma_ratio": math.nan}, "chroma_ratio must be a number in \\[0, 1\\], got nan"),
        ({"chroma_ratio": True}, "chroma_ratio must be a number in \\[0, 1\\], got True"),
    ]:
        with pytest.raises(ValueError, match=message):
            ProtectConfig(**bad)
    paper = ProtectConfig(budget="uniform", colour="rgb")
    # The chroma ratio acts only in the luma-chroma basis: under rgb it changes neither the bytes nor the hash.
    assert config_hash(dataclass_replace(paper, chroma_ratio=0.1), "rtb") == config_hash(paper, "rtb")
    luma_chroma = dataclass_replace(paper, colour="luma-chroma")
    hashes = {config_hash(c, "rtb") for c in (paper, luma_chroma, dataclass_replace(luma_chroma, chroma_ratio=0.1))}
    assert len(hashes) == 3


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)
