"""Decoding, validation and the round trip between PIL images and working tensors.

Images become float tensors ``3×H×W`` in [0, 1] (RGB; an alpha channel is set aside untouched) and masks
``1×H×W`` in {0, 1} (1 = protected). The protected result goes back to 8-bit by rounding, never truncation.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# Smallest side we protect: SSIM's 11-pixel window and the 17-pixel dilation need room.
MIN_SIDE = 16


def decode_image(data: bytes) -> Image.Image:
    """Decode PNG/JPEG/WebP/... bytes into a loaded PIL image; ``ValueError`` when they are not an image.

    The EXIF orientation is applied (``ImageOps.exif_transpose``): the pixels come back as a viewer displays
    them, so a mask drawn on the displayed photo lines up with them, and the protected image is written
    upright (the EXIF orientation tag is not carried over).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ValueError("image bytes are empty or missing")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(f"image is too large to decode safely: {error}") from None
    except Exception as error:  # PIL raises many types for corrupt data; all mean the same to a caller.
        raise ValueError(
            f"image bytes are not a decodable image ({len(data)} bytes starting {bytes(data[:8])!r}: {error})"
        ) from None
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as error:  # a corrupt EXIF block: same contract as corrupt pixels
        raise ValueError(f"image has an unreadable EXIF orientation: {error}") from None
    return upright if upright is not None else image


def decode_mask(data: bytes) -> np.ndarray:
    """Decode mask bytes (PNG; nonzero = protected) into a boolean ``H×W`` array."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise ValueError("mask bytes are empty or missing")
    try:
        mask = Image.open(io.BytesIO(data))
        mask.load()
    except Exception as error:
        raise ValueError(f"mask bytes are not a decodable image ({len(data)} bytes: {error})") from None
    return mask_array(mask)


def mask_array(mask: Image.Image | np.ndarray) -> np.ndarray:
    """A boolean ``H×W`` array from a PIL mask (any mode; nonzero = protected) or an array."""
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L")) > 0
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array.any(axis=-1) if array.dtype == bool else array.max(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"mask must be a 2-D array (H×W), got shape {array.shape}")
    return array > 0


def check_pair(image: Image.Image, mask: np.ndarray, max_fraction: float = 0.9) -> None:
    """Raise ``ValueError`` with an actionable message when ``image`` and ``mask`` cannot be protected."""
    width, height = image.size
    if mask.shape != (height, width):
        raise ValueError(f"mask is {mask.shape[1]}×{mask.shape[0]} but image is {width}×{height}")
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"image is {width}×{height}; at least {MIN_SIDE}×{MIN_SIDE} is needed")
    covered = int(mask.sum())
    if covered == 0:
        raise ValueError("mask is empty: no pixel is marked as protected")
    fraction = covered / mask.size
    if fraction > max_fraction:
        raise ValueError(
            f"mask covers {fraction:.0%} of the image (at most {max_fraction:.0%}): "
            "no context is left around the protected region"
        )


# Modes whose pixels are grey levels wider than 8 bits (16-bit PNGs and TIFFs decode to these).
WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with wide grey levels brought to 8 bits as a viewer shows them: 16-bit (and 32-bit integer) grey
    divided by 257 (65535 → 255), 32-bit float grey (``F``) taken as 0–255 levels; every other mode unchanged.

    PIL's own ``convert`` clips every level above 255 to white, which would turn a 16-bit photo into a white page.
    """
    if image.mode not in WIDE_GREY_MODES and image.mode != "F":
        return image
    grey = np.asarray(image, dtype=np.float64)
    if image.mode != "F":
        grey = grey / 257.0
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L")


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The RGB content of ``image`` (wide grey brought to 8 bits first, :func:`to_8bit`) and its alpha channel
    (``None`` when it has none)."""
    image = to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return image.convert("RGB"), None


def to_tensor(rgb: Image.Image) -> torch.Tensor:
    """RGB PIL image → float64 tensor ``3×H×W`` in [0, 1] (exact multiples of 1/255)."""
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float64) / 255.0


def working_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """Size the optimizer works at: the original, or downscaled so the largest side is ``max_side``."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_working(x: torch.Tensor, m: torch.Tensor, size: tuple[int, int], multiple: int):
    """Resize ``x`` (3×H×W) and ``m`` (1×H×W) to ``size`` and pad bottom/right to a multiple of ``multiple``.

    The mask is resized conservatively (any overlap stays protected) and padded with zeros; the image
    is padded by replicating its border. Returns the padded pair.
    """
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        x = x.clamp(0, 1)
        m = (F.interpolate(m[None], size=size, mode="area")[0] > 0).to(m.dtype)
    pad_h = (-size[0]) % multiple
    pad_w = (-size[1]) % multiple
    if pad_h or pad_w:
        x = F.pad(x[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
        m = F.pad(m, (0, pad_w, 0, pad_h), value=0.0)
    return x, m


def from_working(delta: torch.Tensor, size: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
    """Crop the padding off a working ``delta`` (3×h×w) and resize it to the ``original`` (H, W)."""
    delta = delta[:, : size[0], : size[1]]
    if size != original:
        delta = F.interpolate(delta[None], size=original, mode="bilinear", align_corners=False)[0]
    return delta


def quantize(x: torch.Tensor, delta: torch.Tensor, linf: float | torch.Tensor | None) -> np.ndarray:
    """The 8-bit protected pixels ``round((x + delta)·255)`` as ``H×W×3`` uint8.

    With an L∞ budget the result is clipped to ``source ± ⌈linf·255⌉`` levels, so the bound holds on the
    bytes users get (rounding alone already keeps it; the clip makes it a guarantee). ``linf`` is one number,
    or a per-pixel budget map ``1×H×W`` (:mod:`rtb.budget`), clipped pixel by pixel; the clip is the same on the
    three channels, so an exactly grey ``x + delta`` stays exactly grey.
    """
    source = torch.round(x * 255.0)
    protected = torch.round((x + delta).clamp(0, 1) * 255.0)
    if isinstance(linf, torch.Tensor):
        levels = torch.ceil(linf.to(protected.dtype) * 255.0 - 1e-9)
        protected = torch.minimum(torch.maximum(protected, source - levels), source + levels)
    elif linf is not None:
        levels = math.ceil(linf * 255.0 - 1e-9)
        protected = torch.minimum(torch.maximum(protected, source - levels), source + levels)
    array = protected.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(array)


def to_image(rgb: np.ndarray, alpha: Image.Image | None) -> Image.Image:
    """RGB uint8 array (+ the untouched alpha) → PIL image in mode RGB or RGBA."""
    image = Image.fromarray(rgb, mode="RGB")
    if alpha is not None:
        image.putalpha(alpha)
    return image
