import io

import numpy as np
import pytest
import torch
from PIL import Image

from rtb.images import check_pair, decode_image, decode_mask, quantize


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_rejects_non_image_bytes():
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(b"this is not an image")
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"")


def test_decode_mask_nonzero_is_protected():
    array = np.zeros((20, 30), np.uint8)
    array[5:10, 3:7] = 7
    mask = decode_mask(png(Image.fromarray(array)))
    assert mask.dtype == bool and mask.shape == (20, 30) and mask.sum() == 20


@pytest.mark.parametrize(
    "mask_shape, fill, message",
    [
        ((480, 640), (slice(0, 10), slice(0, 10)), "mask is 640×480 but image is 512×512"),
        ((512, 512), (slice(0, 0), slice(0, 0)), "mask is empty"),
        ((512, 512), (slice(0, 512), slice(0, 500)), "mask covers 98% of the image"),
    ],
)
def test_check_pair_names_the_problem(mask_shape, fill, message):
    image = Image.new("RGB", (512, 512))
    mask = np.zeros(mask_shape, bool)
    mask[fill] = True
    with pytest.raises(ValueError, match=message):
        check_pair(image, mask)


def test_check_pair_refuses_tiny_images():
    with pytest.raises(ValueError, match="8×8"):
        check_pair(Image.new("RGB", (8, 8)), np.ones((8, 8), bool))


def test_quantize_rounds_and_bounds():
    x = torch.full((3, 4, 4), 100 / 255, dtype=torch.float64)
    delta = torch.full_like(x, 0.6 / 255)  # rounds up, a truncation would drop it
    assert (quantize(x, delta, 0.025) == 101).all()
    delta = torch.full_like(x, 0.5)  # far outside the budget: clipped to ⌈0.025·255⌉ = 7 levels
    assert (quantize(x, delta, 0.025) == 107).all()


def test_quantize_clips_each_pixel_to_its_own_bound_and_keeps_grey():
    x = torch.full((3, 2, 3), 100 / 255, dtype=torch.float64)
    bound = torch.tensor([[[3, 4.2, 7], [0, 1, 6.375]]], dtype=torch.float64) / 255  # 1×H×W levels / 255
    up = quantize(x, torch.full_like(x, 0.5), bound)
    # ⌈bound·255⌉ levels per pixel (4.2 → 5, 6.375 → 7: the uniform ε = 0.025 rule), the same on every channel.
    assert (up[..., 0] == np.array([[103, 105, 107], [100, 101, 107]])).all()
    assert (up[..., 0] == up[..., 1]).all() and (up[..., 1] == up[..., 2]).all()
    down = quantize(x, torch.full_like(x, -0.5), bound)
    assert (down[..., 2] == np.array([[97, 95, 93], [100, 99, 93]])).all()
    # A map full of ε is the uniform bound exactly.
    delta = torch.linspace(-0.1, 0.1, 18, dtype=torch.float64).reshape(3, 2, 3)
    assert np.array_equal(quantize(x, delta, torch.full((1, 2, 3), 0.025, dtype=torch.float64)), quantize(x, delta, 0.025))


def rotated_jpeg(stored: Image.Image, orientation: int) -> bytes:
    """JPEG bytes of ``stored`` with an EXIF orientation tag (what phone cameras write)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_decode_applies_the_exif_orientation():
    # Stored 40 wide × 30 high with a red block at the stored top-left; orientation 6 = displayed rotated
    # 90° clockwise: 30 wide × 40 high, the block at the displayed top-right.
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:10, :10] = (255, 0, 0)
    image = decode_image(rotated_jpeg(Image.fromarray(stored), 6))
    assert image.size == (30, 40)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels[:10, -10:, 0].mean() > 200 and pixels[:10, -10:, 1].mean() < 60
    assert pixels[-10:, :10, 0].mean() < 60
    # No orientation tag: the pixels as stored.
    plain = decode_image(rotated_jpeg(Image.fromarray(stored), 1))
    assert plain.size == (40, 30)


def test_sixteen_bit_grey_is_brought_to_8_bits_as_a_viewer_shows_it_not_clipped_to_white():
    from rtb.images import split_alpha, to_8bit

    levels = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    image = Image.fromarray(levels)  # uint16: mode I;16
    eight = to_8bit(image)
    assert eight.mode == "L" and np.array_equal(np.asarray(eight), np.rint(levels / 257).astype(np.uint8))
    rgb, alpha = split_alpha(image)
    assert alpha is None and np.asarray(rgb)[..., 0].mean() == pytest.approx(levels.mean() / 257, abs=0.5)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())  # a 16-bit PNG decodes to a wide grey mode
    assert decoded.mode in ("I", "I;16") and np.asarray(split_alpha(decoded)[0])[..., 0].max() == 255
    assert np.asarray(decoded.convert("RGB")).mean() > 250, "PIL's own conversion: a white page"
