"""Will RTB work on this editor? A quick steerability check to run before protecting a catalog against it.

On a few images the editor's inputs are protected twice at the same budget ε: with RTB and with the ``noise``
control (uniform ±ε). The malicious ``exact`` edit (hole = the protected region) is then run on the clean, the
RTB and the noise image with the same editor and seed, and each protected edit is compared with the clean edit
inside the hole:

- **gain** = RMS change of the fill (hole pixels, all channels, [0, 1] scale) divided by ε: how far the
  perturbation moves what the editor paints, in units of how far any context pixel was allowed to move;
- **exact hole-SSIM** = torchmetrics' SSIM map (Gaussian 11/1.5) averaged over the hole
  (:func:`rtb.evaluation.edits.evaluate_image`, the measurement of ``rtb evaluate``);
- **target distance** = mean RGB distance of the fill to RTB's target colour over √3, clean and protected.

Per image and as medians over images. The rule (all three must hold for "steerable"):

1. ``gain_rtb ≥ MIN_GAIN`` (2): the fill moves at least twice as far as any context pixel did. A fill that is
   an average of its context (push-pull, biharmonic, an MSE-trained network's smooth conditional mean) moves
   by at most about ε, i.e. gain ≤ 1, and no ε-bounded perturbation can repaint it; gain 2 is the smallest
   round number that such an interpolator cannot reach. (Repainting the hole with the target, the efficacy
   goal, needs a gain of about 20 at ε 0.025: ``docs/efficacy.md``.)
2. ``gain_rtb ≥ MIN_GAIN_RATIO · gain_noise`` (3): the amplification is in RTB's direction, not an unstable
   editor that any change moves. A saturated RTB δ has RMS ≈ ε and uniform noise RMS ε/√3, so ≈ 1.7 comes
   from energy alone; 3 asks for the direction RTB found to matter beyond that.
3. ``hole_ssim_noise − hole_ssim_rtb ≥ MIN_SSIM_MARGIN`` (0.05): the edit's structure changes, not only its
   brightness. 0.05 is the repo's own tolerance for "the same edit": the benign goal accepts edits whose
   SSIM to the clean edit is ≥ 0.95.

"Steerable" says an editor gives RTB a lever, not that the protection meets its goal; the verdict line also
says whether the efficacy goal (RTB exact hole-SSIM ≤ 0.30 with the noise control ≥ 0.85) is met at this ε.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from rtb import images as imaging
from rtb.config import PAPER_BUDGET, ProtectConfig
from rtb.evaluation.edits import EditConfig, evaluate_image
from rtb.inpainters import load_inpainter
from rtb.methods import check_budget, resolved_budget
from rtb.metrics import GOALS, fill_gain
from rtb.protect import device_name, protect

DEFAULT_EPS = 0.025
# The rule (module docstring): all three must hold for "steerable".
MIN_GAIN = 2.0
MIN_GAIN_RATIO = 3.0
MIN_SSIM_MARGIN = 0.05
# The efficacy goal of docs/efficacy.md, reported beside the verdict.
GOAL_RTB_SSIM = GOALS.malicious_hole_ssim
GOAL_NOISE_SSIM = GOALS.control_hole_ssim

STEERABLE = "steerable"
NOT_STEERABLE = "not steerable"


@dataclass(frozen=True)
class ImageCheck:
    """The measurements of one image (every edit: the malicious ``exact`` hole = the protected region)."""

    id: str
    width: int
    height: int
    # Share of the image inside the protected region (= the hole).
    mask_fraction: float
    # RMS change of the fill (protected edit − clean edit, inside the hole) divided by ε.
    gain_rtb: float
    gain_noise: float
    # Hole-SSIM of the protected edit against the clean edit (1 = the same fill).
    hole_ssim_rtb: float
    hole_ssim_noise: float
    # Mean RGB distance of the fill to RTB's target colour, over √3 (0 = painted the target).
    target_distance_clean: float
    target_distance_rtb: float
    target_distance_noise: float
    # PSNR (dB) of the RTB-protected image against the source (imperceptibility).
    protect_psnr_rtb: float


@dataclass(frozen=True)
class EditorCheck:
    """The result of :func:`check_editor`: per-image measurements, their medians and the verdict."""

    model: str
    fingerprint: str
    device: str
    eps: float
    steps: int
    seed: int
    images: tuple[ImageCheck, ...]
    # Medians over images.
    gain_rtb: float
    gain_noise: float
    hole_ssim_rtb: float
    hole_ssim_noise: float
    # "steerable" or "not steerable" (the rule in the module docstring).
    verdict: str
    # The conditions of the rule that failed (empty when steerable).
    reasons: tuple[str, ...]
    # Whether the efficacy goal (RTB ≤ 0.30, noise ≥ 0.85 exact hole-SSIM) is met at this ε.
    goal_met: bool
    seconds: float

    @property
    def steerable(self) -> bool:
        return self.verdict == STEERABLE

    @property
    def line(self) -> str:
        """The one-line verdict with its numbers."""
        goal = "met" if self.goal_met else "not met"
        return (f"verdict: {self.verdict} — RTB gain {self.gain_rtb:.2f} vs noise {self.gain_noise:.2f}, "
                f"exact hole-SSIM {self.hole_ssim_rtb:.3f} vs {self.hole_ssim_noise:.3f} "
                f"(goal ≤ {GOAL_RTB_SSIM:.2f}: {goal} at ε {self.eps:g})")


def rule_failures(gain_rtb: float, gain_noise: float, ssim_rtb: float, ssim_noise: float) -> tuple[str, ...]:
    """The conditions of the steerability rule that the medians fail, as short sentences (empty = steerable)."""
    failures = []
    if not gain_rtb >= MIN_GAIN:
        failures.append(f"RTB gain {gain_rtb:.2f} < {MIN_GAIN:g} (the fill moves no more than an average of its context)")
    if not gain_rtb >= MIN_GAIN_RATIO * gain_noise:
        failures.append(f"RTB gain {gain_rtb:.2f} < {MIN_GAIN_RATIO:g} × noise gain {gain_noise:.2f} "
                        "(any perturbation moves the fill about as much)")
    if not ssim_noise - ssim_rtb >= MIN_SSIM_MARGIN:
        failures.append(f"exact hole-SSIM margin {ssim_noise - ssim_rtb:.3f} < {MIN_SSIM_MARGIN:g} "
                        "(the RTB edit keeps the clean edit's structure)")
    return tuple(failures)


def _prepare_pairs(images, masks, ids, max_mask_fraction: float) -> tuple[list[Image.Image], list[np.ndarray], list[str]]:
    """Decode and validate every pair up front, naming the image in any error."""
    images, masks = list(images), list(masks)
    if not images:
        raise ValueError("no images to check: give at least one image and its mask")
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    ids = [str(i) for i in ids] if ids is not None else [f"image-{k}" for k in range(len(images))]
    if len(ids) != len(images) or len(set(ids)) != len(ids):
        raise ValueError(f"ids must be unique, one per image: got {len(ids)} ids ({len(set(ids))} distinct) for {len(images)} images")
    decoded, arrays = [], []
    for image_id, image, mask in zip(ids, images, masks):
        try:
            if isinstance(image, (bytes, bytearray, memoryview)):
                image = imaging.decode_image(image)
            if not isinstance(image, Image.Image):
                raise ValueError(f"an image must be a PIL image or encoded bytes, got {type(image).__name__}")
            array = imaging.decode_mask(mask) if isinstance(mask, (bytes, bytearray, memoryview)) else imaging.mask_array(mask)
            imaging.check_pair(image, array, max_mask_fraction)
        except ValueError as error:
            raise ValueError(f"image {image_id!r}: {error}") from None
        decoded.append(image)
        arrays.append(array)
    return decoded, arrays, ids


def check_editor(
    model,
    images,
    masks,
    *,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    steps: int | None = None,
    ids=None,
    edit_steps: int | None = None,
    prompt: str = "",
    device=None,
    storage_options: dict | None = None,
) -> EditorCheck:
    """Measure whether RTB can steer ``model``'s malicious edits on ``images``, against the noise control.

    Args:
        model: ``"reference"``, a path/URI (:func:`rtb.load_inpainter`) or a loaded inpainter; it is both the
            model RTB optimises through and the editor.
        images: PIL images (any mode; alpha is ignored) or encoded bytes; a few are enough.
        masks: one per image (PIL, PNG bytes or ``H×W`` array; nonzero = protected): the region and the hole.
        eps: the L∞ budget of both protections, in (0, 0.25].
        seed: seed of both protections and of the editor's sampler.
        steps: RTB optimisation steps (``None`` = the paper's 20).
        ids: names of the images in the result (default ``image-0``, ``image-1``, …).
        edit_steps: denoising steps of a diffusion editor (``None`` = its default); ignored otherwise.
        prompt: the edit prompt of text-conditioned editors.
        device, storage_options: passed to :func:`rtb.load_inpainter` when ``model`` is a spec.

    Returns:
        :class:`EditorCheck`. Raises ``ValueError`` naming the bad value (ε, an image, the model).
    """
    started = time.perf_counter()
    # 1. Check the inputs before any compute, then load the model once for everything.
    eps = check_budget("rtb", eps)
    # The rule is calibrated on the paper's L∞ ball per RGB channel (docs/steerability.md), so both protections use it.
    config = ProtectConfig(eps=eps, steps=steps, seed=seed, **PAPER_BUDGET)
    edit_config = EditConfig(families=("exact",), seed=seed, steps=edit_steps)
    pil_images, arrays, ids = _prepare_pairs(images, masks, ids, config.max_mask_fraction)
    inpainter = load_inpainter(model, device=device, storage_options=storage_options)

    # 2. Protect every image with RTB and with the noise control at the same ε and seed (8-bit results, as
    #    users get them).
    protected = {method: protect(pil_images, arrays, model=inpainter, method=method, config=config).images
                 for method in ("rtb", "noise")}

    # 3. Edit the clean, RTB and noise image with the exact hole and the same seed; measure against the clean edit.
    checks = []
    for k, (image_id, image, array) in enumerate(zip(ids, pil_images, arrays)):
        source = imaging.to_tensor(imaging.split_alpha(image)[0])
        arms = {method: imaging.to_tensor(imaging.split_alpha(protected[method][k])[0]) for method in protected}
        region = torch.from_numpy(array.astype(np.float64))
        result = evaluate_image(inpainter, image_id, source, region, arms, edit_config, prompt=prompt)
        rows = {row["arm"]: row for row in result.rows if row["family"] == "exact" and row["status"] == "ok"}
        edits = result.images[("exact", 0)]
        hole = edits["hole"][None, None]

        def gain(arm: str) -> float:
            return float(fill_gain(edits[arm][None], edits["clean"][None], hole, eps)[0])

        checks.append(ImageCheck(
            id=image_id, width=image.width, height=image.height, mask_fraction=float(array.mean()),
            gain_rtb=gain("rtb"), gain_noise=gain("noise"),
            hole_ssim_rtb=rows["rtb"]["hole_ssim"], hole_ssim_noise=rows["noise"]["hole_ssim"],
            target_distance_clean=rows["rtb"]["clean_target_distance"],
            target_distance_rtb=rows["rtb"]["target_distance"], target_distance_noise=rows["noise"]["target_distance"],
            protect_psnr_rtb=rows["rtb"]["protect_psnr"],
        ))

    # 4. Medians and the verdict.
    median = lambda name: float(np.median([getattr(c, name) for c in checks]))  # noqa: E731
    gain_rtb, gain_noise = median("gain_rtb"), median("gain_noise")
    ssim_rtb, ssim_noise = median("hole_ssim_rtb"), median("hole_ssim_noise")
    reasons = rule_failures(gain_rtb, gain_noise, ssim_rtb, ssim_noise)
    return EditorCheck(
        model=inpainter.name, fingerprint=inpainter.fingerprint, device=device_name(inpainter.device), eps=eps,
        steps=resolved_budget("rtb", config.eps, config.steps)[1], seed=seed, images=tuple(checks),
        gain_rtb=gain_rtb, gain_noise=gain_noise, hole_ssim_rtb=ssim_rtb, hole_ssim_noise=ssim_noise,
        verdict=NOT_STEERABLE if reasons else STEERABLE, reasons=reasons,
        goal_met=ssim_rtb <= GOAL_RTB_SSIM and ssim_noise >= GOAL_NOISE_SSIM,
        seconds=time.perf_counter() - started,
    )
