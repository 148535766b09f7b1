"""What platforms and attackers do to an image before an edit: JPEG, WebP, resizing, blur.

Three uses share one spelling of a transformation, ``KIND[:VALUE]``:

- **evaluation** (``rtb evaluate --transforms none,jpeg:95,jpeg:75,webp:80,resize:0.5``): the real codec,
  with Pillow, on the 8-bit image (:func:`apply_codec`); every value is fixed;
- **expectation over transformation** (``ProtectConfig.eot``, ``--eot jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0``):
  differentiable stand-ins applied to ``x + δ`` inside the optimiser (:func:`draw_eot`, :func:`apply_eot`),
  each value drawn per sample and step from the sample's own generator, uniformly in ``LOW-HIGH``;
- **output formats** of a protect run (``png``, ``jpeg:Q``, ``webp:Q``; :func:`encode_output`).

Kinds and values:

========== ================================= =================================================================
kind       value                             real codec (evaluation)           / differentiable (EOT)
========== ================================= =================================================================
``none``   —                                 the image unchanged
``jpeg``   quality, integer 1–100            Pillow JPEG (4:2:0, libjpeg tables) / kornia's differentiable JPEG
``webp``   quality, integer 1–100            Pillow lossy WebP                 / none (refused in EOT)
``resize`` scale in [0.1, 1]                 bicubic down to ``round(scale·side)``, bicubic back up to the
                                             original size (a thumbnail and its re-upload) / antialiased
                                             bilinear or area down, bilinear up (drawn per sample)
``blur``   Gaussian σ in pixels, (0, 3]      Pillow ``GaussianBlur(σ)``        / kornia Gaussian blur, 2⌈3σ⌉+1 taps
========== ================================= =================================================================
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from rtb.metrics import uint8_psnr_linf

KINDS = ("none", "jpeg", "webp", "resize", "blur")
# Kinds with a differentiable stand-in (WebP has none: use jpeg as its surrogate).
EOT_KINDS = ("none", "jpeg", "resize", "blur")
# kind → (smallest value, largest value, integer values only)
LIMITS = {"jpeg": (1.0, 100.0, True), "webp": (1.0, 100.0, True), "resize": (0.1, 1.0, False), "blur": (0.0, 3.0, False)}
# Output formats of a protect run: kind → file extension.
OUTPUT_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True)
class Transform:
    """One transformation: a kind and its value, fixed (``low == high``) or a range to draw from."""

    # One of KINDS.
    kind: str
    # The value (quality, scale or σ), or the lower end of its range; None for "none".
    low: float | None = None
    # The upper end of the range (== low for a fixed value); None for "none".
    high: float | None = None

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        if self.low == self.high:
            return f"{self.kind}:{_number(self.low)}"
        return f"{self.kind}:{_number(self.low)}-{_number(self.high)}"

    @property
    def fixed(self) -> bool:
        """True when the value is one number (or the kind has none)."""
        return self.low == self.high


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_transform(item: str, *, ranges: bool = False) -> Transform:
    """``"jpeg:75"`` (or with ``ranges``, ``"jpeg:60-95"``) → :class:`Transform`; ``ValueError`` naming the item."""
    if not isinstance(item, str):
        raise ValueError(f"transform {item!r} must be a string like 'jpeg:75'")
    text = item.strip().lower()
    kind, _, value = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown transform {item!r}; kinds are {', '.join(KINDS)} (e.g. jpeg:75, resize:0.5)")
    if kind == "none":
        if value:
            raise ValueError(f"transform {item!r}: 'none' takes no value")
        return Transform("none")
    if not value:
        raise ValueError(f"transform {item!r} needs a value, e.g. {kind}:{_example(kind)}")
    low_text, dash, high_text = value.partition("-")
    if dash and not ranges:
        raise ValueError(f"transform {item!r}: a range is allowed only for --eot; give one value, e.g. {kind}:{_example(kind)}")
    try:
        low = float(low_text)
        high = float(high_text) if dash else low
    except ValueError:
        raise ValueError(f"transform {item!r}: {value!r} is not a number{' or a LOW-HIGH range' if ranges else ''}") from None
    smallest, largest, integer = LIMITS[kind]
    for number in (low, high):
        if not (smallest <= number <= largest) or (kind == "blur" and number == 0):
            bounds = f"({_number(smallest)}, {_number(largest)}]" if kind == "blur" else f"[{_number(smallest)}, {_number(largest)}]"
            raise ValueError(f"transform {item!r}: {kind} value {_number(number)} is outside {bounds}")
        if integer and not number.is_integer():
            raise ValueError(f"transform {item!r}: {kind} quality must be an integer, got {number:g}")
    if low > high:
        raise ValueError(f"transform {item!r}: the range {_number(low)}-{_number(high)} runs backwards")
    return Transform(kind, low, high)


def _example(kind: str) -> str:
    return {"jpeg": "75", "webp": "80", "resize": "0.5", "blur": "1"}[kind]


def _items(spec) -> list:
    if isinstance(spec, str):
        return [part for part in spec.split(",") if part.strip()] if spec.strip() else []
    return list(spec)


def _unique(transforms: list[Transform], what: str) -> tuple[Transform, ...]:
    seen = set()
    for transform in transforms:
        if str(transform) in seen:
            raise ValueError(f"{what} {str(transform)!r} is listed twice")
        seen.add(str(transform))
    return tuple(transforms)


def parse_transforms(spec) -> tuple[Transform, ...]:
    """The evaluation list (``"none,jpeg:95,jpeg:75,webp:80,resize:0.5"`` or its items): fixed values only.

    ``ValueError`` naming the bad item; an empty list is refused (``none`` is today's evaluation).
    """
    items = _items(spec)
    if not items:
        raise ValueError(f"transforms {spec!r} is empty; give at least one, e.g. none or none,jpeg:75")
    return _unique([item if isinstance(item, Transform) else parse_transform(item) for item in items], "transform")


def parse_eot(spec) -> tuple[Transform, ...]:
    """The EOT set (``"jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0"``, its items, or :class:`Transform`/dicts).

    Ranges are allowed (a fixed value is a range of one); ``webp`` is refused (no differentiable codec).
    Empty (``""`` or ``()``) means no EOT.
    """
    out = []
    for item in _items(spec):
        if isinstance(item, dict):  # a config read back from JSON (dataclasses.asdict)
            item = Transform(**item)
        transform = item if isinstance(item, Transform) else parse_transform(item, ranges=True)
        if transform.kind not in EOT_KINDS:
            raise ValueError(f"eot transform {str(transform)!r}: {transform.kind} has no differentiable version; "
                             f"use jpeg as its stand-in (eot kinds: {', '.join(EOT_KINDS)})")
        if transform.kind != "none":
            parse_transform(str(transform), ranges=True)  # re-validate values given as dataclasses or dicts
        out.append(transform)
    return _unique(out, "eot transform")


def format_transforms(transforms) -> str:
    """The canonical comma list (the inverse of :func:`parse_transforms` / :func:`parse_eot`)."""
    return ",".join(str(t) for t in transforms)


# ----------------------------------------------------------------------------------------------------------
# Real codecs (evaluation)
# ----------------------------------------------------------------------------------------------------------


def apply_codec(image: Image.Image, transform: Transform) -> Image.Image:
    """``image`` (RGB) through the real codec: a new RGB image of the same size (``none``: the same object).

    Deterministic: the same pixels and transform give the same pixels.
    """
    if not transform.fixed:
        raise ValueError(f"transform {str(transform)!r} is a range; the real codec needs one value")
    if image.mode != "RGB":
        raise ValueError(f"apply_codec needs an RGB image, got mode {image.mode!r}")
    kind, value = transform.kind, transform.low
    if kind == "none":
        return image
    if kind in ("jpeg", "webp"):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG" if kind == "jpeg" else "WEBP", quality=int(value))
        decoded = Image.open(io.BytesIO(buffer.getvalue()))
        decoded.load()
        return decoded.convert("RGB")
    if kind == "resize":
        width, height = image.size
        small = (max(1, round(width * value)), max(1, round(height * value)))
        return image.resize(small, Image.Resampling.BICUBIC).resize((width, height), Image.Resampling.BICUBIC)
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=value))
    raise ValueError(f"unknown transform kind {kind!r}")


def apply_codec_tensor(x: torch.Tensor, transform: Transform) -> torch.Tensor:
    """:func:`apply_codec` on a ``3×H×W`` tensor in [0, 1] (rounded to 8 bits first): float64 ``3×H×W``.

    ``none`` returns ``x`` unchanged (no rounding), so an evaluation without transforms is today's.
    """
    if transform.kind == "none":
        return x
    array = (x.detach().to("cpu", torch.float64).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = apply_codec(Image.fromarray(np.ascontiguousarray(array), mode="RGB"), transform)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1).to(torch.float64) / 255.0


# ----------------------------------------------------------------------------------------------------------
# Differentiable stand-ins (expectation over transformation)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EOTDraw:
    """One sample's transformation for one optimiser step."""

    # One of EOT_KINDS.
    kind: str
    # The drawn quality, scale or σ (0 for "none").
    value: float
    # For resize: the downscaling interpolation, "bilinear" (antialiased) or "area".
    mode: str = "bilinear"


def draw_eot(transforms: tuple[Transform, ...], generator: torch.Generator) -> EOTDraw:
    """Draw one transformation from ``transforms`` (uniformly), and its value uniformly in its range.

    Uses only ``generator`` (three draws: kind, value, resize mode), so a sample's draws never depend on
    the other samples of its batch.
    """
    device = generator.device
    index = int(torch.randint(len(transforms), (1,), generator=generator, device=device))
    u, coin = torch.rand(2, generator=generator, device=device, dtype=torch.float64).tolist()
    transform = transforms[index]
    if transform.kind == "none":
        return EOTDraw("none", 0.0)
    value = transform.low + (transform.high - transform.low) * u
    return EOTDraw(transform.kind, value, "area" if coin < 0.5 else "bilinear")


def apply_eot(x: torch.Tensor, draw: EOTDraw) -> torch.Tensor:
    """One sample ``1×3×H×W`` in [0, 1] through a differentiable transformation; same shape and dtype."""
    if draw.kind == "none":
        return x
    if draw.kind == "jpeg":
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.tensor([draw.value], dtype=x.dtype, device=x.device)
        return jpeg_codec_differentiable(x.clamp(0, 1), quality)
    if draw.kind == "resize":
        from kornia.geometry.transform import resize

        height, width = x.shape[-2:]
        small = (max(1, round(height * draw.value)), max(1, round(width * draw.value)))
        if draw.mode == "area":
            down = F.interpolate(x, size=small, mode="area")
        else:
            down = resize(x, small, interpolation="bilinear", align_corners=False, antialias=True)
        return resize(down, (height, width), interpolation="bilinear", align_corners=False)
    if draw.kind == "blur":
        from kornia.filters import gaussian_blur2d

        taps = 2 * math.ceil(3 * draw.value) + 1
        return gaussian_blur2d(x, (taps, taps), (draw.value, draw.value), border_type="reflect")
    raise ValueError(f"unknown eot kind {draw.kind!r}")


def apply_eot_batch(x: torch.Tensor, draws: list[EOTDraw]) -> torch.Tensor:
    """``N×3×H×W`` through each sample's own draw, one sample at a time (a batch never changes a result)."""
    return torch.cat([apply_eot(x[i : i + 1], draw) for i, draw in enumerate(draws)])


# ----------------------------------------------------------------------------------------------------------
# Output formats (protect runs)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """How protected images are stored."""

    # "png" (lossless), "jpeg" or "webp".
    kind: str = "png"
    # Quality 1–100 for jpeg/webp; None for png.
    quality: int | None = None

    def __str__(self) -> str:
        return self.kind if self.quality is None else f"{self.kind}:{self.quality}"

    @property
    def extension(self) -> str:
        """File extension without the dot: png, jpg or webp."""
        return OUTPUT_EXTENSIONS[self.kind]

    @property
    def lossy(self) -> bool:
        return self.kind != "png"


def parse_output_format(spec: str | OutputFormat) -> OutputFormat:
    """``"png"``, ``"jpeg:90"`` or ``"webp:90"`` → :class:`OutputFormat`; ``ValueError`` naming the value."""
    if isinstance(spec, OutputFormat):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"output format {spec!r} must be a string: png, jpeg:Q or webp:Q")
    kind, _, value = spec.strip().lower().partition(":")
    if kind == "png":
        if value:
            raise ValueError(f"output format {spec!r}: png is lossless and takes no quality")
        return OutputFormat("png")
    if kind not in ("jpeg", "webp"):
        raise ValueError(f"unknown output format {spec!r}; choose png, jpeg:Q or webp:Q (Q = quality 1-100)")
    if not value.isdigit() or not (1 <= int(value) <= 100):
        raise ValueError(f"output format {spec!r}: the quality must be an integer in [1, 100], e.g. {kind}:90")
    return OutputFormat(kind, int(value))


@dataclass(frozen=True)
class EncodedOutput:
    """A protected image encoded for storage, and what the encoding did to the bound."""

    # The encoded file.
    data: bytes
    # The format it was written in.
    format: OutputFormat
    # Largest absolute RGB change of the decoded file vs the source, on the [0, 1] scale (the bound reached).
    linf: float
    # PSNR (dB, data range 1) of the decoded file's RGB vs the source; inf when identical.
    psnr: float


def encode_output(protected: Image.Image, source: Image.Image, output_format: str | OutputFormat = "png") -> EncodedOutput:
    """Encode ``protected`` as PNG (default), JPEG or WebP and measure the decoded file against ``source``.

    Args:
        protected: the protected image (RGB, or RGBA: PNG and WebP keep the alpha, JPEG refuses it).
        source: the image it was protected from (same size; its RGB is compared).
        output_format: ``"png"``, ``"jpeg:Q"``, ``"webp:Q"`` or an :class:`OutputFormat`.

    Returns:
        :class:`EncodedOutput`: the bytes, and the L∞ and PSNR of the decoded RGB vs the source's. For PNG
        the L∞ is the protection's own bound; for a lossy format it is what the codec left, which may exceed ε.
    """
    fmt = parse_output_format(output_format)
    if protected.size != source.size:
        raise ValueError(f"protected image is {protected.size[0]}×{protected.size[1]} but the source is "
                         f"{source.size[0]}×{source.size[1]}")
    if fmt.kind == "jpeg" and protected.mode not in ("RGB", "L"):
        raise ValueError(f"output format {str(fmt)!r} cannot store a {protected.mode} image (JPEG has no alpha); "
                         f"use png or webp:Q")
    buffer = io.BytesIO()
    if fmt.kind == "png":
        protected.save(buffer, format="PNG", compress_level=6)
    elif fmt.kind == "jpeg":
        protected.save(buffer, format="JPEG", quality=fmt.quality)
    else:
        protected.save(buffer, format="WEBP", quality=fmt.quality)
    data = buffer.getvalue()
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    psnr, linf = uint8_psnr_linf(np.asarray(decoded.convert("RGB")), np.asarray(source.convert("RGB")))
    return EncodedOutput(data=data, format=fmt, linf=linf, psnr=psnr)
