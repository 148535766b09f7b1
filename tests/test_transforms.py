"""Transform specs, the real codecs (against Pillow itself), the differentiable stand-ins and output formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from rtb.transforms import (
    EOTDraw,
    OutputFormat,
    Transform,
    apply_codec,
    apply_codec_tensor,
    apply_eot,
    apply_eot_batch,
    draw_eot,
    encode_output,
    format_transforms,
    parse_eot,
    parse_output_format,
    parse_transforms,
)


def picture(seed: int = 0, size=(64, 48)) -> Image.Image:
    """Smooth waves with texture and an edge (detail that codecs and resizing remove), width×height = ``size``."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([128 + 90 * np.sin(x / (4 + c) + y / 6 + seed) for c in range(3)], -1)
    rgb += rng.uniform(-20, 20, rgb.shape)
    rgb[h // 3 : h // 2, w // 4 : w // 2] = rng.uniform(0, 255, 3)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].to(torch.float64) / 255


def test_parse_lists_round_trip_to_their_canonical_text():
    transforms = parse_transforms("none, jpeg:95,JPEG:75,webp:80,resize:0.5,resize:0.75,blur:1")
    assert format_transforms(transforms) == "none,jpeg:95,jpeg:75,webp:80,resize:0.5,resize:0.75,blur:1"
    assert transforms[2] == Transform("jpeg", 75.0, 75.0) and transforms[0] == Transform("none")
    eot = parse_eot("jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0,none")
    assert format_transforms(eot) == "jpeg:60-95,resize:0.5-1,blur:0.5-1,none"
    assert eot[0] == Transform("jpeg", 60.0, 95.0) and not eot[0].fixed
    assert parse_eot(format_transforms(eot)) == eot == parse_eot(list(eot))
    assert parse_eot("") == () == parse_eot(())
    assert parse_eot([{"kind": "jpeg", "low": 60.0, "high": 95.0}]) == eot[:1]  # a config read back from JSON


@pytest.mark.parametrize(
    "parse, spec, message",
    [
        (parse_transforms, "none,gif:80", "unknown transform 'gif:80'"),
        (parse_transforms, "jpeg:60-95", "transform 'jpeg:60-95': a range is allowed only for --eot"),
        (parse_transforms, "jpeg:101", "transform 'jpeg:101': jpeg value 101 is outside \\[1, 100\\]"),
        (parse_transforms, "jpeg:75.5", "jpeg quality must be an integer, got 75.5"),
        (parse_transforms, "resize:0.05", "resize value 0.05 is outside \\[0.1, 1\\]"),
        (parse_transforms, "resize:half", "'half' is not a number"),
        (parse_transforms, "blur:0", "blur value 0 is outside \\(0, 3\\]"),
        (parse_transforms, "jpeg", "transform 'jpeg' needs a value, e.g. jpeg:75"),
        (parse_transforms, "none:3", "'none' takes no value"),
        (parse_transforms, "none,jpeg:75,jpeg:75", "transform 'jpeg:75' is listed twice"),
        (parse_transforms, "", "transforms '' is empty"),
        (parse_eot, "jpeg:95-60", "the range 95-60 runs backwards"),
        (parse_eot, "webp:60-90", "eot transform 'webp:60-90': webp has no differentiable version"),
        (parse_eot, "resize:0.5-1.5", "resize value 1.5 is outside"),
        (parse_eot, [Transform("jpeg", 0.0, 50.0)], "jpeg value 0 is outside"),
    ],
)
def test_bad_specs_name_the_item(parse, spec, message):
    with pytest.raises(ValueError, match=message):
        parse(spec)


def test_real_codecs_are_pillow_itself_and_deterministic():
    image = picture()
    # JPEG/WebP: exactly Pillow's encode-decode at that quality; the lower quality moves the pixels more.
    for kind, fmt in (("jpeg", "JPEG"), ("webp", "WEBP")):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=75)
        expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out = apply_codec(image, Transform(kind, 75, 75))
        assert np.array_equal(np.asarray(out), expected) and out.size == image.size
        assert np.array_equal(np.asarray(apply_codec(image, Transform(kind, 75, 75))), expected)
        error = {q: np.abs(np.asarray(apply_codec(image, Transform(kind, q, q)), int) - np.asarray(image, int)).mean()
                 for q in (95, 50)}
        assert 0 < error[95] < error[50]
    # Resize: bicubic down to round(scale·side), bicubic back up to the original size.
    half = apply_codec(image, Transform("resize", 0.5, 0.5))
    manual = image.resize((32, 24), Image.Resampling.BICUBIC).resize((64, 48), Image.Resampling.BICUBIC)
    assert half.size == image.size and np.array_equal(np.asarray(half), np.asarray(manual))
    assert not np.array_equal(np.asarray(half), np.asarray(image))
    blurred = apply_codec(image, Transform("blur", 1.0, 1.0))
    assert np.array_equal(np.asarray(blurred), np.asarray(image.filter(ImageFilter.GaussianBlur(1.0))))
    # none: untouched (the same tensor, no 8-bit rounding); a range is refused by the real codec.
    x = torch.rand(3, 8, 8, dtype=torch.float64)
    assert apply_codec_tensor(x, Transform("none")) is x
    with pytest.raises(ValueError, match="'jpeg:60-95' is a range"):
        apply_codec(image, Transform("jpeg", 60, 95))
    tensor = apply_codec_tensor(as_tensor(image)[0], Transform("jpeg", 75, 75))
    assert torch.equal(tensor, as_tensor(apply_codec(image, Transform("jpeg", 75, 75)))[0])


def test_differentiable_stand_ins_follow_the_real_codecs_and_pass_gradients():
    image = picture(1)
    x = as_tensor(image)
    for draw, real in ((EOTDraw("jpeg", 75.0), Transform("jpeg", 75, 75)),
                       (EOTDraw("resize", 0.5, "bilinear"), Transform("resize", 0.5, 0.5)),
                       (EOTDraw("resize", 0.5, "area"), Transform("resize", 0.5, 0.5)),
                       (EOTDraw("blur", 1.0), Transform("blur", 1, 1))):
        leaf = x.clone().requires_grad_(True)
        out = apply_eot(leaf, draw)
        assert out.shape == x.shape and out.dtype == x.dtype
        reference = as_tensor(apply_codec(image, real))
        # The stand-in lands far nearer the real codec's output than the untransformed image is (ratios
        # 0.09-0.29 here).
        assert (out - reference).abs().mean() < 0.4 * (x - reference).abs().mean(), draw
        out.sum().backward()
        assert leaf.grad.abs().sum() > 0 and torch.isfinite(leaf.grad).all()
    assert apply_eot(x, EOTDraw("none", 0.0)) is x


def test_draws_come_only_from_the_sample_generator_and_cover_the_ranges():
    transforms = parse_eot("none,jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0")
    first = [draw_eot(transforms, torch.Generator().manual_seed(3)) for _ in range(1)]
    generator = torch.Generator().manual_seed(3)
    draws = [draw_eot(transforms, generator) for _ in range(400)]
    assert draws[0] == first[0]
    again = torch.Generator().manual_seed(3)
    assert [draw_eot(transforms, again) for _ in range(400)] == draws
    assert {d.kind for d in draws} == {"none", "jpeg", "resize", "blur"}
    for kind, low, high in (("jpeg", 60, 95), ("resize", 0.5, 1.0), ("blur", 0.5, 1.0)):
        values = [d.value for d in draws if d.kind == kind]
        assert low <= min(values) < low + 0.2 * (high - low) and high - 0.2 * (high - low) < max(values) <= high
    assert {d.mode for d in draws if d.kind == "resize"} == {"area", "bilinear"}
    # A batch applies each sample's own draw: the same as each sample alone.
    x = torch.rand(3, 3, 24, 32, dtype=torch.float64)
    picks = [EOTDraw("jpeg", 70.0), EOTDraw("resize", 0.6, "area"), EOTDraw("none", 0.0)]
    together = apply_eot_batch(x, picks)
    for i, pick in enumerate(picks):
        assert torch.equal(together[i : i + 1], apply_eot(x[i : i + 1], pick))


def test_encode_output_reports_the_bound_reached_after_decoding():
    source = picture(2)
    rng = np.random.default_rng(0)
    pixels = np.asarray(source).astype(int) + rng.integers(-6, 7, (48, 64, 3))
    protected = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    lossless = encode_output(protected, source)
    assert lossless.format == OutputFormat("png") and lossless.data.startswith(b"\x89PNG")
    assert lossless.linf == pytest.approx(6 / 255) and 30 < lossless.psnr < 45
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(lossless.data))), np.asarray(protected))
    jpeg = encode_output(protected, source, "jpeg:75")
    assert jpeg.data.startswith(b"\xff\xd8") and jpeg.format.extension == "jpg" and jpeg.format.lossy
    decoded = np.asarray(Image.open(io.BytesIO(jpeg.data)).convert("RGB")).astype(int)
    assert jpeg.linf == pytest.approx(np.abs(decoded - np.asarray(source).astype(int)).max() / 255)
    assert jpeg.linf > lossless.linf  # the codec's own error exceeds the budget here: recorded, not hidden
    with_alpha = protected.copy()
    with_alpha.putalpha(Image.linear_gradient("L").resize(protected.size))
    webp = encode_output(with_alpha, source, "webp:90")
    decoded = Image.open(io.BytesIO(webp.data))
    assert webp.data[8:12] == b"WEBP" and decoded.mode == "RGBA"
    assert np.abs(np.asarray(decoded)[..., 3].astype(int) - np.asarray(with_alpha)[..., 3]).max() <= 1
    with pytest.raises(ValueError, match="'jpeg:75' cannot store a RGBA image"):
        encode_output(protected.convert("RGBA"), source, "jpeg:75")
    with pytest.raises(ValueError, match="protected image is 32×48 but the source is 64×48"):
        encode_output(protected.crop((0, 0, 32, 48)), source)


@pytest.mark.parametrize("spec, message", [("gif", "unknown output format 'gif'"), ("png:9", "png is lossless"),
                                           ("jpeg", "quality must be an integer in \\[1, 100\\]"),
                                           ("webp:0", "quality must be an integer")])
def test_bad_output_formats_name_the_value(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_output_format(spec)
    assert str(parse_output_format("WEBP:80")) == "webp:80" and parse_output_format("jpeg:90").quality == 90
