"""``protect``: the Python API that turns images and their protected regions into protected images."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from rtb import images as imaging
from rtb import metrics
from rtb.budget import delta_space
from rtb.config import ProtectConfig
from rtb.inpainters import Inpainter, load_inpainter
from rtb.methods import get_method, resolved_budget


@dataclass(frozen=True)
class ImageStats:
    """What happened to one image."""

    # Original size in pixels.
    width: int
    height: int
    # Fraction of pixels inside the protected region.
    mask_fraction: float
    # Method and its resolved budget and step count.
    method: str
    eps: float
    steps: int
    # Largest absolute pixel change in the 8-bit output, on the [0, 1] scale.
    linf: float
    # PSNR (dB, data range 1) and SSIM (Gaussian 11/1.5) of the protected image against the source.
    psnr: float
    ssim: float
    # Final RTB loss terms at the final δ (None for methods without them, e.g. the PhotoGuard baselines).
    loss_implant: float | None
    loss_expanded: float | None
    loss_hide: float | None
    # Wall seconds spent on this image (its share of its batch plus its own pre/post-processing).
    seconds: float
    # The device the optimisation ran on.
    device: str
    # Mean over pixels of the per-pixel L∞ bound on [0, 1] (rtb.budget): eps under budget "uniform", less under
    # "jnd" (flat mid-tones get less than ε); 1.0 for an L2 method under "uniform" (no per-pixel bound but the
    # pixel range; a finite figure, as every metrics row needs).
    bound_mean: float
    # CIEDE2000 colour difference of the 8-bit protected image vs the source (rtb.metrics.delta_e00_stats): mean and
    # 95th percentile over pixels, and the share of pixels above a just-noticeable ΔE00 of 2.3
    # (rtb.metrics.JND_DELTA_E).
    delta_e_mean: float
    delta_e_p95: float
    delta_e_above_jnd: float
    # The source is exactly grey (R = G = B on every pixel, whatever its mode).
    source_grey: bool
    # For a grey source: whether the protected image is exactly grey too; None for a colour source.
    grey_preserved: bool | None
    # Total loss at every step.
    loss_history: tuple[float, ...] = field(default=(), repr=False)


@dataclass
class ProtectResult:
    """Protected images (same size as the inputs; RGB, or RGBA with the alpha untouched) and their stats."""

    images: list[Image.Image]
    stats: list[ImageStats]


@dataclass
class _Prepared:
    """One image at full and at working resolution."""

    x: torch.Tensor  # 3×H×W source in [0, 1] (float64, exact 8-bit levels)
    m: torch.Tensor  # 1×H×W protected region
    alpha: Image.Image | None
    size: tuple[int, int]  # working (h, w) before padding
    x_work: torch.Tensor  # 3×h'×w' padded working image
    m_work: torch.Tensor  # 1×h'×w'
    seed: int
    seconds: float


def check_inputs(images, masks, method: str, config: ProtectConfig, targets) -> None:
    """Raise ``ValueError`` naming the bad value before any compute."""
    resolved_budget(method, config.eps, config.steps)  # unknown method, ε out of the method's range
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    if config.target == "custom" and (targets is None or len(targets) != len(images)):
        count = "none" if targets is None else len(targets)
        raise ValueError(f"target 'custom' needs one target image per image: got {count} for {len(images)} images")


def image_seed(seed: int, x: torch.Tensor, m: torch.Tensor) -> int:
    """A 63-bit seed from the run seed and the image's content, so results don't depend on batching."""
    digest = hashlib.sha256(str(seed).encode())
    digest.update(torch.round(x * 255).to(torch.uint8).numpy().tobytes())
    digest.update(m.to(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


def prepare_image(image, mask, inpainter: Inpainter, config: ProtectConfig) -> _Prepared:
    """Decode and validate one pair and bring it to working resolution."""
    start = time.perf_counter()
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = imaging.decode_image(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image or encoded bytes, got {type(image).__name__}")
    mask = imaging.decode_mask(mask) if isinstance(mask, (bytes, bytearray, memoryview)) else imaging.mask_array(mask)
    imaging.check_pair(image, mask, config.max_mask_fraction)
    rgb, alpha = imaging.split_alpha(image)
    x = imaging.to_tensor(rgb)
    m = torch.from_numpy(mask.astype(np.float64))[None]
    size = imaging.working_size(x.shape[1], x.shape[2], config.max_side)
    x_work, m_work = imaging.to_working(x, m, size, inpainter.size_multiple)
    return _Prepared(x, m, alpha, size, x_work, m_work, image_seed(config.seed, x, m), time.perf_counter() - start)


def device_name(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def protect(
    images,
    masks,
    model="reference",
    method: str = "rtb",
    config: ProtectConfig | None = None,
    *,
    targets=None,
) -> ProtectResult:
    """Protect images against inpainting of their protected regions.

    Args:
        images: PIL images (any mode; RGBA keeps its alpha) or encoded image bytes (PNG/JPEG/WebP).
        masks: one per image: PIL image, encoded PNG bytes or an ``H×W`` array; nonzero = protected.
        model: ``"reference"``, a path/URI (see :func:`rtb.inpainters.load_inpainter`) or a loaded inpainter.
        method: ``rtb`` (default), ``noise``, ``photoguard-encoder`` or ``photoguard-diffusion``.
        config: :class:`ProtectConfig`; ``None`` = defaults (the paper's settings for RTB).
        targets: for ``config.target == "custom"``, one target image per image (PIL, any size: resized).

    Returns:
        :class:`ProtectResult`: 8-bit images with ``|protected − source| ≤ ⌈bound·255⌉ ≤ ⌈ε·255⌉`` levels per
        pixel for L∞ methods (``bound`` = the per-pixel budget map of ``config.budget``, :mod:`rtb.budget`; with
        ``"jnd"`` also for the L2 method), exactly grey for an exactly grey source under
        ``config.colour == "luma-chroma"``, and per-image :class:`ImageStats`. Identical inputs and seed give
        identical bytes.
    """
    config = config or ProtectConfig()
    images, masks = list(images), list(masks)

    # 1. Check inputs.
    module = get_method(method)
    check_inputs(images, masks, method, config, targets)
    eps, steps = resolved_budget(method, config.eps, config.steps)
    bounded = module.NORM == "linf"  # an L∞ budget bounds every pixel, so the 8-bit rounding must respect it

    # 2. Load the model and check that the method applies to it.
    inpainter = load_inpainter(model)
    if module.NEEDS_VAE and not inpainter.has_vae:
        raise ValueError(f"method {method!r} needs a diffusers model with a VAE; got {inpainter.name!r}")
    dtype = torch.float64 if inpainter.dtype == torch.float64 else torch.float32

    # 3. Decode, validate and bring every image to working resolution.
    prepared = [prepare_image(image, mask, inpainter, config) for image, mask in zip(images, masks)]

    # 4. Optimise batches of images that share a working shape.
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, item in enumerate(prepared):
        groups[tuple(item.x_work.shape)].append(index)
    deltas: dict[int, torch.Tensor] = {}
    outputs: dict[int, tuple[dict[str, float], tuple[float, ...], float]] = {}
    for shape, indices in groups.items():
        for start in range(0, len(indices), config.batch_size):
            batch = indices[start : start + config.batch_size]
            began = time.perf_counter()
            x = torch.stack([prepared[i].x_work for i in batch]).to(inpainter.device, dtype)
            m = torch.stack([prepared[i].m_work for i in batch]).to(inpainter.device, dtype)
            generators = [
                torch.Generator(device=inpainter.device).manual_seed(prepared[i].seed) for i in batch
            ]
            custom = None
            if config.target == "custom":
                custom = torch.stack([_target_tensor(targets[i], shape[-2:]) for i in batch])
            result = module.run(inpainter, x, m, config, generators, custom_targets=custom)
            share = (time.perf_counter() - began) / len(batch)
            for row, i in enumerate(batch):
                deltas[i] = result.delta[row].detach().to("cpu", torch.float64)
                losses = {name: float(value[row]) for name, value in result.losses.items()}
                history = tuple(float(v) for v in result.history[:, row])
                outputs[i] = (losses, history, share)

    # 5. Map δ back to full size, bring it inside the full-size budget (per-pixel bound, colour basis: a grey
    #    image's δ is exactly grey), quantise with rounding within the per-pixel bound, restore alpha, measure.
    per_pixel = bounded or config.budget != "uniform"
    protected_images, stats = [], []
    for i, item in enumerate(prepared):
        began = time.perf_counter()
        source = item.x[None]
        space = delta_space(source, config, eps if bounded else None)
        delta = imaging.from_working(deltas[i], item.size, tuple(item.x.shape[-2:]))
        delta = space.constrain(delta[None], source)[0]
        rgb = imaging.quantize(item.x, delta, space.bound[0] if per_pixel else None)
        protected_images.append(imaging.to_image(rgb, item.alpha))
        protected = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float64) / 255.0
        delta_e_mean, delta_e_p95, delta_e_above = metrics.delta_e00_stats(protected, source)
        source_grey = bool(metrics.is_grey(source)[0])
        losses, history, share = outputs[i]
        stats.append(
            ImageStats(
                width=item.x.shape[2],
                height=item.x.shape[1],
                mask_fraction=float(item.m.mean()),
                method=method,
                eps=eps,
                steps=steps,
                linf=float(metrics.linf(protected, source)[0]),
                psnr=float(metrics.psnr(protected, source)[0]),
                ssim=float(metrics.ssim(protected, source)[0]),
                loss_implant=losses.get("implant"),
                loss_expanded=losses.get("expanded"),
                loss_hide=losses.get("hide"),
                seconds=item.seconds + share + time.perf_counter() - began,
                device=device_name(inpainter.device),
                bound_mean=float(space.bound.clamp(max=1.0).mean()),
                delta_e_mean=float(delta_e_mean[0]),
                delta_e_p95=float(delta_e_p95[0]),
                delta_e_above_jnd=float(delta_e_above[0]),
                source_grey=source_grey,
                grey_preserved=bool(metrics.is_grey(protected)[0]) if source_grey else None,
                loss_history=history,
            )
        )
    return ProtectResult(images=protected_images, stats=stats)


def _target_tensor(target, size) -> torch.Tensor:
    """A custom target (PIL image, bytes or ``3×H×W`` tensor) as ``3×h×w`` in [0, 1] at ``size``."""
    if isinstance(target, (bytes, bytearray, memoryview)):
        target = imaging.decode_image(target)
    if isinstance(target, Image.Image):
        target = imaging.to_tensor(target.convert("RGB"))
    if not isinstance(target, torch.Tensor) or target.dim() != 3 or target.shape[0] != 3:
        raise ValueError(f"a custom target must be an RGB image or a 3×H×W tensor, got {type(target).__name__}")
    target = target.to(torch.float64)
    if tuple(target.shape[-2:]) != tuple(size):
        target = torch.nn.functional.interpolate(target[None], size=tuple(size), mode="bilinear", antialias=True)[0]
    return target.clamp(0, 1)
