"""PhotoGuard encoder attack (Salman et al., ICML 2023), a baseline.

L∞ PGD with a random start and signed gradient steps that pull the VAE latent mean of ``x + δ`` towards the
latent of a flat gray (0.5) image, so the diffusion model's view of the image is that of a gray one.

PhotoGuard protects what the attacker *keeps*: δ lives only where ``m = 0`` (the opposite of RTB, which
perturbs around the hole to plant a trigger). Published settings, mapped from [−1, 1] to [0, 1] pixels:
ε 0.06 → 0.03, step 0.01 → 0.005 decaying linearly to 1/100 of itself, 1000 iterations.

The ε ball is the run's budget (:mod:`rtb.budget`, :mod:`rtb.colour`): per pixel (``uniform`` = ε everywhere, the
paper's; ``jnd`` = a JND map with ε as the ceiling), and the signed steps are taken in ``config.colour``'s basis
(per RGB channel, the paper's, or luma and colour differences with a chroma bound), each followed by its projection.
"""

from __future__ import annotations

import torch

from rtb.budget import delta_space
from rtb.methods.output import MethodOutput

NAME = "photoguard-encoder"
# L∞ budget on [0, 1] pixels (the paper's 0.06 on [−1, 1]).
DEFAULT_EPS = 0.03
# PGD iterations (the paper's 1000).
DEFAULT_STEPS = 1000
# ε bounds δ per pixel; the attack needs the VAE encoder of a diffusers backend.
NORM = "linf"
NEEDS_VAE = True
# First step size on [0, 1] pixels (the paper's 0.01 on [−1, 1]); it decays linearly to STEP_SIZE / 100.
STEP_SIZE = 0.005
FINAL_STEP_FRACTION = 0.01
# The gray level of the target image whose latent δ pulls towards.
TARGET_GRAY = 0.5


def check_inpainter(inpainter, method: str = NAME) -> None:
    """Raise ``ValueError`` naming the model when it has no VAE encoder to attack."""
    if not getattr(inpainter, "has_vae", False) or not hasattr(inpainter, "encode_latents"):
        raise ValueError(
            f"method {method!r} needs a diffusers model with a VAE; got {getattr(inpainter, 'name', inpainter)!r}"
        )


def _latent_loss(inpainter, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared distance between the latents of ``images`` and ``target`` → Tensor[N]."""
    latents = inpainter.encode_latents(images).float()
    return (latents - target).pow(2).flatten(1).mean(1)


def run(
    inpainter,
    x: torch.Tensor,
    m: torch.Tensor,
    config,
    generators: list[torch.Generator],
    custom_targets: torch.Tensor | None = None,
) -> MethodOutput:
    """Encoder-attack PGD on a batch.

    Args:
        inpainter: a backend with ``has_vae`` and ``encode_latents`` (``DiffusersInpainter``).
        x: ``N×3×H×W`` float32 in [0, 1] on ``inpainter.device``.
        m: ``N×1×H×W`` holes, 1 = the region an attacker fills (left unperturbed here).
        config: ``ProtectConfig``; reads ``eps`` (L∞ ceiling, None → ``DEFAULT_EPS``), ``steps`` (None →
            ``DEFAULT_STEPS``), ``budget``, ``colour`` and ``chroma_ratio``.
        generators: one per sample; sample ``i``'s random start comes only from ``generators[i]``.
        custom_targets: optional ``N×3×H×W`` target images in [0, 1] replacing the gray one (the dispatcher
            passes them for ``config.target == "custom"``; other ``config.target`` values are RTB's and
            ignored here: PhotoGuard's target is gray).
    Returns:
        ``MethodOutput`` with δ (zero inside the hole, ``|δ| ≤`` the per-pixel bound ``≤ ε``, ``x + δ`` in [0, 1]),
        ``losses={"encoder": Tensor[N]}`` at ``x + δ`` and ``history`` (steps×N, the loss before each step).
    """
    # 1. Check inputs and resolve the published defaults
    check_inpainter(inpainter)
    eps = DEFAULT_EPS if config.eps is None else float(config.eps)
    steps = DEFAULT_STEPS if config.steps is None else int(config.steps)
    if x.ndim != 4 or m.shape != (x.shape[0], 1, *x.shape[-2:]):
        raise ValueError(f"x must be N×3×H×W and m N×1×H×W; got {tuple(x.shape)!r} and {tuple(m.shape)!r}")
    if len(generators) != x.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for {x.shape[0]} images")
    x = x.float()
    keep = 1 - m.float()

    if custom_targets is not None and tuple(custom_targets.shape) != tuple(x.shape):
        raise ValueError(f"custom_targets must have shape {tuple(x.shape)!r}, got {tuple(custom_targets.shape)!r}")

    # 2. Target: the latent of a flat gray image (or of the given targets)
    target_images = torch.full_like(x, TARGET_GRAY) if custom_targets is None else custom_targets.to(x)
    with torch.no_grad():
        target = inpainter.encode_latents(target_images).float()

    # 3. The budget, and a random start inside it, per sample from its own generator
    space = delta_space(x, config, eps)
    starts = [
        torch.rand(x.shape[1:], generator=g, device=g.device).to(x.device) * 2 - 1 for g in generators
    ]
    u = _project(space, space.scale(torch.stack(starts)), x, keep)

    # 4. PGD with a linearly decaying signed step (in the basis's coordinates)
    history = torch.zeros(steps, x.shape[0])
    for step in range(steps):
        fraction = step / max(steps - 1, 1)
        step_size = STEP_SIZE * (1 - (1 - FINAL_STEP_FRACTION) * fraction)
        u.requires_grad_(True)
        loss = _latent_loss(inpainter, x + space.to_rgb(u), target)
        # Per-sample losses are summed: each sample's gradient is its own, whatever the batch.
        (grad,) = torch.autograd.grad(loss.sum(), u)
        history[step] = loss.detach().cpu()
        with torch.no_grad():
            u = _project(space, u - step_size * grad.sign(), x, keep)

    # 5. Final losses at x + δ
    delta = space.delta(u, x).detach()
    with torch.no_grad():
        final = _latent_loss(inpainter, x + delta, target)
    return MethodOutput(delta=delta, losses={"encoder": final.cpu()}, history=history)


def _project(space, u: torch.Tensor, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero inside the hole, then the budget's projection (per-pixel bound, chroma, ``x + δ`` in [0, 1])."""
    return space.project(u * keep, x).detach()
