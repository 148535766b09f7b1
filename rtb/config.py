"""The configuration of one protection run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from rtb.budget import BUDGETS
from rtb.colour import COLOURS
from rtb.transforms import Transform, format_transforms, parse_eot

TARGETS = ("primary", "gray", "invert", "custom")


# The paper's perturbation set: one L∞ ball per RGB channel (ProtectConfig(**PAPER_BUDGET) is the paper's setting;
# the defaults bound δ per pixel by a JND map and in luma/chroma instead).
PAPER_BUDGET = {"budget": "uniform", "colour": "rgb"}


@dataclass(frozen=True)
class ProtectConfig:
    """Everything that shapes the protected bytes besides the model, the method and the inputs.

    ``None`` for ``eps`` or ``steps`` means the chosen method's published default.
    """

    # Perturbation budget on [0, 1] pixels: L∞ for rtb/noise/photoguard-encoder, L2 per image for
    # photoguard-diffusion. None = the method's default (rtb 0.025). Its range depends on the method, so it is
    # checked where the method is known (rtb.methods.check_budget).
    eps: float | None = None
    # Optimisation steps. None = the method's default (rtb 20).
    steps: int | None = None
    # Adam learning rate of the rtb optimizer (the paper's 0.1, i.e. 4·ε: every step saturates).
    lr: float = 0.1
    # Adam betas of the rtb optimizer (the paper's (0.5, 0.5)).
    betas: tuple[float, float] = (0.5, 0.5)
    # Side of the square box that dilates the protected region into M+ (the paper's 17 = 8 px per side).
    dilation: int = 17
    # Weights of the rtb loss terms: L = w_i·implant + w_e·expanded + w_h·hide (the paper's 1, 1, 2).
    implant_weight: float = 1.0
    expanded_weight: float = 1.0
    hide_weight: float = 2.0
    # Mask augmentation: attacker-like holes over the region (jittered contour, grown bounding box, partial
    # halves; rtb.masks.attacker_hole) drawn afresh per sample and step and pushed to the target alongside M
    # and M+. 0 = the paper's two malicious holes only. Each adds one forward per image and step.
    augment_holes: int = 0
    # Weight of the mean implant loss over the augmented holes (w_a in L = ... + w_a·mean_k MSE_{A_k}).
    augment_weight: float = 1.0
    # Expectation over transformation: each step, every sample's x + δ goes through one of these
    # transformations (drawn from the sample's own generator, its value uniform in the range) before the
    # editor, so the protection survives them (rtb.transforms: jpeg:LOW-HIGH, resize:LOW-HIGH, blur:LOW-HIGH,
    # none), applied at the working resolution (see max_side). A string "jpeg:60-95,resize:0.5-1.0" is parsed
    # into the tuple. () = no EOT (the paper's method). Adds one no-grad forward per image and step.
    eot: tuple[Transform, ...] = ()
    # Upper end of the uniform δ initialisation, δ ~ U[0, init_high] (the paper's 0.01).
    init_high: float = 0.01
    # What a malicious edit should output: "primary" (pure R, G or B farthest from the mean colour),
    # "gray", "invert" (1 − x) or "custom" (images passed to protect(targets=...)).
    target: str = "primary"
    # Largest side the optimizer works at; larger images are downscaled for the optimisation and the
    # perturbation is resized back to the original size. None = optimise at full size.
    max_side: int | None = None
    # Images optimised together in one batch (per-sample losses: the batch never changes a result).
    batch_size: int = 8
    # Base seed; each image's generator is seeded from it and the image's content.
    seed: int = 0
    # Surrogate draws (timestep and noise) cycled over the steps for stochastic (diffusion) backends;
    # the constant clean ring edit is computed once per draw. Ignored by deterministic models.
    surrogate_draws: int = 4
    # Masks covering more than this fraction of the image are refused (nothing left to hide a trigger in).
    max_mask_fraction: float = 0.9
    # Per-pixel budget map (rtb.budget): "jnd" (the default) = Chou & Li's (1995) just-noticeable-difference map of
    # the source (luminance adaptation and texture masking) with ε as the ceiling, so flat mid-tones get less than
    # ε and the L∞ guarantee still holds; "uniform" = ε on every pixel (the paper's). For the L2 method
    # (photoguard-diffusion) "jnd" adds the JND map as a per-pixel bound beside its L2 ball. The default and why:
    # docs/imperceptibility.md (only jnd + luma-chroma 0.25 keeps ΔE00 p95 under one JND on both sets).
    budget: str = "jnd"
    # Basis δ is optimised in (rtb.colour): "rgb" = per RGB channel (the paper's; an exactly grey image gets a
    # colour cast); "luma-chroma" = luma and colour differences (Y, R−Y, B−Y), the colour differences bounded by
    # chroma_ratio × the budget, and an exactly grey image (R = G = B, whatever its mode) perturbed in luma only,
    # so it comes back exactly grey. Default "luma-chroma"; "rgb" is the paper's.
    colour: str = "luma-chroma"
    # With colour="luma-chroma": bound of |R−Y| and |B−Y| as a fraction of the per-pixel budget, in [0, 1]
    # (0 = luma only for every image). Ignored with colour="rgb".
    chroma_ratio: float = 0.25

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "eot", parse_eot(self.eot))
        except ValueError as error:
            raise ValueError(f"eot {self.eot!r}: {error}") from None
        # Only the sign here: the range depends on the method (rtb.methods.check_budget is where it is checked).
        if self.eps is not None and not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")
        if self.steps is not None and not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if self.dilation < 1 or self.dilation % 2 == 0:
            raise ValueError(f"dilation must be an odd positive box size, got {self.dilation!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {self.target!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"max_side must be at least 16 pixels, got {self.max_side!r}")
        if not (0.0 < self.max_mask_fraction <= 1.0):
            raise ValueError(f"max_mask_fraction must be in (0, 1], got {self.max_mask_fraction!r}")
        if not (isinstance(self.augment_holes, int) and 0 <= self.augment_holes <= 16):
            raise ValueError(f"augment_holes must be an integer in [0, 16], got {self.augment_holes!r}")
        if self.surrogate_draws < 1:
            raise ValueError(f"surrogate_draws must be at least 1, got {self.surrogate_draws!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {self.budget!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {', '.join(COLOURS)}; got {self.colour!r}")
        ratio = self.chroma_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0.0 <= ratio <= 1.0):
            raise ValueError(f"chroma_ratio must be a number in [0, 1], got {ratio!r}")


def config_hash(config: ProtectConfig, method: str) -> str:
    """sha256 (hex) of the method name and every config field: equal hashes mean equal settings.

    ``eot`` enters as its canonical string and only when set, so configs without EOT keep the hashes they
    had before the field existed. Likewise ``budget`` enters only when not ``"uniform"``, ``colour`` only when not
    ``"rgb"`` and ``chroma_ratio`` only with ``colour="luma-chroma"`` (the only setting it acts on): a config at
    those values protects exactly as before the fields existed (same bytes), so it keeps its hash, and any other
    value changes the output, so it changes the hash and an incremental run re-protects.
    """
    payload = {"method": method, **dataclasses.asdict(config)}
    for name in ("eot", "budget", "colour", "chroma_ratio"):
        payload.pop(name)
    if config.eot:
        payload["eot"] = format_transforms(config.eot)
    if config.budget != "uniform":
        payload["budget"] = config.budget
    if config.colour != "rgb":
        payload["colour"] = config.colour
        payload["chroma_ratio"] = float(config.chroma_ratio)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()
