"""Per-edit metrics: how far an edit of a protected image is from the same edit of the clean image.

For one image and every evaluation hole (:mod:`rtb.evaluation.masks`) the editor inpaints the clean source,
the protected image and optionally a control (e.g. the ``noise`` method at the same ε) with the same hole and
seed — after the same transformation (a real JPEG/WebP re-encode, a down-and-up resize, ... of
:mod:`rtb.transforms`; ``none`` by default) when one is given. Each (hole, arm) gives one row:

- ``hole_ssim``/``hole_psnr``: protected edit vs clean edit inside the hole (SSIM map of torchmetrics'
  Gaussian 11/1.5 SSIM averaged over the hole's pixels; PSNR of the hole's pixels, data range 1);
  every figure is computed by :mod:`rtb.metrics`;
- ``full_ssim``/``full_psnr``: the same on the whole image (:func:`rtb.metrics.ssim`/:func:`rtb.metrics.psnr`);
- ``target_distance``: mean RGB distance of the hole's content to the protection's target, divided by √3
  (0 = the edit painted the target exactly, 1 = the farthest colour); ``clean_target_distance`` is the same
  for the clean edit (the baseline a protection must beat);
- ``protect_psnr``/``protect_ssim``/``protect_linf``, ``protect_delta_e_mean``/``_p95``/``_above_jnd`` (CIEDE2000)
  and ``protect_grey_preserved`` (1/0 for a grey source, NaN for a colour one): the imperceptibility of the arm
  (vs the source).

Images are float tensors ``N×3×H×W`` in [0, 1]; holes ``N×1×H×W`` in {0, 1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rtb import metrics
from rtb.evaluation.masks import FAMILIES, MaskSetConfig, family_kind, mask_set
from rtb.targets import make_targets
from rtb.transforms import Transform, apply_codec_tensor, parse_transform

# Columns of one edit row, in order (the edits/*.parquet schema is built from these in jobs/evaluate.py).
ROW_FIELDS = (
    "id", "arm", "transform", "family", "kind", "index", "hole_fraction", "hole_ssim", "hole_psnr", "full_ssim",
    "full_psnr", "target_distance", "clean_target_distance", "protect_psnr", "protect_ssim", "protect_linf",
    "protect_delta_e_mean", "protect_delta_e_p95", "protect_delta_e_above_jnd", "protect_grey_preserved", "status",
    "error",
)


@dataclass(frozen=True)
class EditConfig:
    """How the edits of one image are run and measured."""

    # Mask families to build (subset of rtb.evaluation.masks.FAMILIES).
    families: tuple[str, ...] = FAMILIES
    # How many holes per family.
    masks: MaskSetConfig = field(default_factory=MaskSetConfig)
    # Seed of the random mask families and of the editor's sampler (diffusion editors).
    seed: int = 0
    # Denoising steps of the edit for diffusion editors (None = the backend's default); ignored otherwise.
    steps: int | None = None
    # Prompt given to text-conditioned editors when the catalog has none.
    prompt: str = ""
    # Target of the protection, for target_distance: "primary", "gray" or "invert" (rtb.targets).
    target: str = "primary"
    # Holes edited per editor call.
    batch_size: int = 16

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"unknown mask families {unknown or self.families!r}; choose from {', '.join(FAMILIES)}")
        if self.target not in ("primary", "gray", "invert"):
            raise ValueError(f"target must be primary, gray or invert, got {self.target!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps!r}")


@dataclass
class ImageEdits:
    """Everything measured for one image."""

    rows: list[dict]  # one dict per (hole, arm) with ROW_FIELDS
    notes: list[str]  # holes that could not be placed
    # The edits themselves, for contact sheets: {(family, index): {"clean": 3×H×W, "protected": ..., "control": ...}}
    images: dict[tuple[str, int], dict[str, torch.Tensor]]
    # What the editor was given, after the transform: {"source": 3×H×W, "protected": ..., "control": ...}
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------------------


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if pad_h or pad_w:
        mode = "replicate" if x.shape[1] == 3 else "constant"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x


def run_edits(editor, x: torch.Tensor, holes: torch.Tensor, config: EditConfig, prompt: str) -> torch.Tensor:
    """Edit image ``x`` (1×3×H×W) once per hole (K×1×H×W): ``K×3×H×W`` float64 on the CPU, composited."""
    height, width = x.shape[-2:]
    multiple = int(getattr(editor, "size_multiple", 1) or 1)
    dtype = torch.float64 if editor.dtype == torch.float64 else torch.float32
    out = []
    for start in range(0, holes.shape[0], config.batch_size):
        m = _pad(holes[start : start + config.batch_size], multiple).to(editor.device, dtype)
        xs = _pad(x, multiple).expand(m.shape[0], -1, -1, -1).to(editor.device, dtype)
        with torch.no_grad():
            edited = editor.edit(xs, m, prompt=prompt, steps=config.steps, seed=config.seed)
        out.append(edited[..., :height, :width].to("cpu", torch.float64).clamp(0, 1))
    return torch.cat(out)


def evaluate_image(
    editor,
    image_id: str,
    source: torch.Tensor,
    region: torch.Tensor,
    arms: dict[str, torch.Tensor],
    config: EditConfig = EditConfig(),
    prompt: str | None = None,
    transform: Transform | str = "none",
) -> ImageEdits:
    """Edit one image with every evaluation hole and measure each arm against the clean edit.

    Args:
        editor: an inpainter (:class:`rtb.inpainters.base.Inpainter`).
        image_id: the image's id (seeds the random holes).
        source: the clean image ``3×H×W`` in [0, 1].
        region: the protected region ``H×W`` or ``1×H×W`` (nonzero = protected).
        arms: protected versions of ``source`` by name (``{"protected": 3×H×W, "control": 3×H×W}``).
        config: :class:`EditConfig`.
        prompt: the edit prompt for text-conditioned editors (``None`` = ``config.prompt``).
        transform: what happens to every image before the edit (:mod:`rtb.transforms`, a fixed value:
            ``none``, ``jpeg:75``, ``webp:80``, ``resize:0.5``, ``blur:1``): the source and every arm go
            through the same real codec, so each arm is compared with the clean edit of the same copy. The
            imperceptibility columns then compare the transformed arm with the transformed source; the
            target stays the one made from the untransformed source.

    Returns:
        :class:`ImageEdits` with one row per (hole, arm).
    """
    # 1. Check inputs, then put the source and every arm through the transform.
    source = source.to(torch.float64)
    region = (region.reshape(1, 1, *source.shape[-2:]) > 0).to(torch.float64)
    for name, image in arms.items():
        if tuple(image.shape) != tuple(source.shape):
            raise ValueError(f"arm {name!r} has shape {tuple(image.shape)} but the source is {tuple(source.shape)}")
    transform = transform if isinstance(transform, Transform) else parse_transform(transform)
    original = source
    source = apply_codec_tensor(source, transform)
    arms = {name: apply_codec_tensor(image.to(torch.float64), transform) for name, image in arms.items()}

    # 2. Build the holes.
    holes, notes = mask_set(region, image_id, config.seed, config.masks, config.families)
    stacked = torch.cat([hole.mask for hole in holes])  # K×1×H×W
    count = stacked.shape[0]

    # 3. Edit the clean image and every arm with every hole.
    prompt = config.prompt if prompt is None else prompt
    clean = run_edits(editor, source[None], stacked, config, prompt)
    edited = {name: run_edits(editor, image.to(torch.float64)[None], stacked, config, prompt) for name, image in arms.items()}

    # 4. Measure.
    target = make_targets(original[None], config.target).expand(count, -1, -1, -1)
    clean_distance = metrics.target_distance(clean, target, stacked)
    fraction = stacked.flatten(1).mean(1)
    rows = []
    for name, edits in edited.items():
        protected = arms[name].to(torch.float64)[None]
        delta_e = [float(v[0]) for v in metrics.delta_e00_stats(protected, source[None])]
        imperceptibility = {
            "protect_psnr": float(metrics.psnr(protected, source[None])[0]),
            "protect_ssim": float(metrics.ssim(protected, source[None])[0]),
            "protect_linf": float(metrics.linf(protected, source[None])[0]),
            "protect_delta_e_mean": delta_e[0], "protect_delta_e_p95": delta_e[1], "protect_delta_e_above_jnd": delta_e[2],
            "protect_grey_preserved": _grey_flag(float(metrics.grey_preserved(protected, source[None])[0])),
        }
        # One SSIM map per arm serves both the hole and the full-image SSIM; float32 keeps the 11×11
        # convolutions fast, within 1e-5 of float64.
        hole_ssim, full_ssim = metrics.hole_and_full_ssim(edits.float(), clean.float(), stacked)
        values = {
            "hole_ssim": hole_ssim.double(),
            "hole_psnr": metrics.masked_psnr(edits, clean, stacked),
            "full_ssim": full_ssim.double(),
            "full_psnr": metrics.psnr(edits, clean),
            "target_distance": metrics.target_distance(edits, target, stacked),
        }
        for k, hole in enumerate(holes):
            row = {"id": image_id, "arm": name, "transform": str(transform), "family": hole.family, "kind": hole.kind,
                   "index": hole.index, "hole_fraction": float(fraction[k])}
            row.update({metric: float(v[k]) for metric, v in values.items()})
            row.update(clean_target_distance=float(clean_distance[k]), **imperceptibility, status="ok", error=None)
            rows.append(row)
    for note in notes:  # holes that found no room: recorded, not measured
        family, index = note.split("[", 1)[0], int(note.split("[", 1)[1].split("]", 1)[0])
        for name in arms:
            rows.append({**error_row(image_id, note, name, str(transform)), "family": family,
                         "kind": family_kind(family), "index": index, "status": "skipped"})
    images = {
        (hole.family, hole.index): {"clean": clean[k], **{name: e[k] for name, e in edited.items()}, "hole": hole.mask[0, 0]}
        for k, hole in enumerate(holes)
    }
    return ImageEdits(rows=rows, notes=notes, images=images, inputs={"source": source, **arms})


def _grey_flag(value: float) -> float | None:
    """1.0/0.0 for a grey source (stayed grey or not), None for a colour one (NaN would not compare equal)."""
    return None if math.isnan(value) else value


def error_row(image_id: str | None, error: str, arm: str = "protected", transform: str | None = None) -> dict:
    """The row recorded for an image that could not be evaluated (``transform`` None: under every transform)."""
    row = {name: None for name in ROW_FIELDS}
    row.update(id=image_id, arm=arm, transform=transform, status="error", error=error)
    return row
