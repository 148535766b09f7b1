"""PhotoGuard diffusion attack (Salman et al., ICML 2023), a baseline.

Backpropagates through the whole inpainting sampler — the backend's ``unrolled`` surrogate: ``UNROLL_STEPS``
DDIM steps from noise, decoded — and pushes the generated fill towards a flat gray (0.5, "zero" on [−1, 1])
image with L2 PGD. Each iteration averages the gradient over ``NOISE_DRAWS`` sampler noises.

Choices and how they map to the paper:
- PhotoGuard protects what the attacker *keeps*: δ lives only where ``m = 0``.
- Budget and step on [0, 1] pixels: ε 16 → 8.0 (L2 norm per image), step 1 → 0.5 (a normalised-gradient
  step), 200 iterations, 10 noise draws, 4 sampler steps. δ starts at zero.
- Guidance 7.5 with the empty prompt (the paper) equals guidance 1 for SD 1.x/2.x: the unconditional branch
  encodes the same empty prompt, so ``uncond + 7.5·(cond − uncond) = cond``. The sampler therefore runs a
  single UNet pass per step, with no approximation.
- The loss is the mean squared distance to gray *inside the hole*. The backend composites its output, so
  outside the hole it is ``x + δ`` itself; the paper's uncomposited loss over the whole image would mostly
  measure δ there rather than what the model generates.
- Memory: each sampler step is checkpointed by the backend, and noise draws are run one after another with
  the gradient accumulated, so peak memory is one UNet step's activations for the batch.
- The run's budget (:mod:`rtb.budget`, :mod:`rtb.colour`): ε bounds the L2 norm, so ``budget="uniform"`` adds no
  per-pixel bound (the paper's) and ``"jnd"`` adds the JND map as one; ``colour="luma-chroma"`` projects every step
  onto luma and colour differences within the chroma bound (none on exactly grey images, which stay grey). The
  projection applies the per-pixel constraints first, then scales into the L2 ball (a scale by at most 1 keeps
  every per-pixel and chroma bound and ``x + δ`` in [0, 1]).
"""

from __future__ import annotations

import torch

from rtb.budget import delta_space
from rtb.methods.output import MethodOutput
from rtb.metrics import masked_mse

NAME = "photoguard-diffusion"
# L2 budget per image on [0, 1] pixels (the paper's 16 on [−1, 1]).
DEFAULT_EPS = 8.0
# PGD iterations (the paper's 200).
DEFAULT_STEPS = 200
# ε bounds the L2 norm of δ per image; the attack needs a diffusers backend (VAE and sampler).
NORM = "l2"
NEEDS_VAE = True
# L2 step on [0, 1] pixels (the paper's 1 on [−1, 1]).
STEP_SIZE = 0.5
# Sampler noises averaged per iteration (the paper's 10).
NOISE_DRAWS = 10
# Denoising steps of the unrolled sampler (the paper's 4).
UNROLL_STEPS = 4
# Gray level of the target output.
TARGET_GRAY = 0.5


def check_inpainter(inpainter, method: str = NAME) -> None:
    """Raise ``ValueError`` naming the model when it is not a latent-diffusion backend with a VAE."""
    if not getattr(inpainter, "has_vae", False) or not hasattr(inpainter, "unrolled"):
        raise ValueError(
            f"method {method!r} needs a diffusers model with a VAE; got {getattr(inpainter, 'name', inpainter)!r}"
        )


def _hole_loss(output: torch.Tensor, m: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared distance to ``target`` over the hole pixels (all channels) → Tensor[N]."""
    return masked_mse(output.float(), target, m.float())


def _draws(inpainter, x, m, target, generators, *, grad: bool):
    """Average the hole loss (and, when ``grad``, its gradient w.r.t. ``x``) over ``NOISE_DRAWS`` noises."""
    height, width = x.shape[-2:]
    loss_sum = torch.zeros(x.shape[0], device=x.device)
    grad_sum = torch.zeros_like(x)
    for _ in range(NOISE_DRAWS):
        noise = inpainter.sample_noise(generators, height, width)
        if grad:
            images = x.detach().requires_grad_(True)
            loss = _hole_loss(inpainter.unrolled(images, m, noise, steps=UNROLL_STEPS), m, target)
            grad_sum += torch.autograd.grad(loss.sum(), images)[0]
        else:
            with torch.no_grad():
                loss = _hole_loss(inpainter.unrolled(x, m, noise, steps=UNROLL_STEPS), m, target)
        loss_sum += loss.detach()
    return loss_sum / NOISE_DRAWS, grad_sum / NOISE_DRAWS


def run(
    inpainter,
    x: torch.Tensor,
    m: torch.Tensor,
    config,
    generators: list[torch.Generator],
    custom_targets: torch.Tensor | None = None,
) -> MethodOutput:
    """Diffusion-attack L2 PGD on a batch.

    Args:
        inpainter: a backend with ``has_vae``, ``sample_noise`` and ``unrolled`` (``DiffusersInpainter``).
        x: ``N×3×H×W`` float32 in [0, 1] on ``inpainter.device``.
        m: ``N×1×H×W`` holes, 1 = the region an attacker fills (left unperturbed here).
        config: ``ProtectConfig``; reads ``eps`` (L2 per image, None → ``DEFAULT_EPS``), ``steps``
            (None → ``DEFAULT_STEPS``), ``budget``, ``colour`` and ``chroma_ratio``.
        generators: one per sample; sample ``i``'s sampler noises come only from ``generators[i]``.
        custom_targets: optional ``N×3×H×W`` target images in [0, 1] replacing gray inside the hole (the
            dispatcher passes them for ``config.target == "custom"``; other ``config.target`` values are RTB's
            and ignored here: PhotoGuard's target is gray).
    Returns:
        ``MethodOutput`` with δ (zero inside the hole, ``‖δ‖₂ ≤ ε`` per image, ``x + δ`` in [0, 1]),
        ``losses={"diffusion": Tensor[N]}`` at ``x + δ`` (averaged over ``NOISE_DRAWS`` fresh noises) and
        ``history`` (steps×N, the draw-averaged loss before each step).
    """
    # 1. Check inputs and resolve the published defaults
    check_inpainter(inpainter)
    eps = DEFAULT_EPS if config.eps is None else float(config.eps)
    steps = DEFAULT_STEPS if config.steps is None else int(config.steps)
    if x.ndim != 4 or m.shape != (x.shape[0], 1, *x.shape[-2:]):
        raise ValueError(f"x must be N×3×H×W and m N×1×H×W; got {tuple(x.shape)!r} and {tuple(m.shape)!r}")
    if len(generators) != x.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for {x.shape[0]} images")
    if custom_targets is not None and tuple(custom_targets.shape) != tuple(x.shape):
        raise ValueError(f"custom_targets must have shape {tuple(x.shape)!r}, got {tuple(custom_targets.shape)!r}")
    x = x.float()
    target = torch.full_like(x, TARGET_GRAY) if custom_targets is None else custom_targets.to(x)
    keep = 1 - m.float()
    space = delta_space(x, config, None)
    paper = space.basis == "rgb" and config.budget == "uniform"  # no per-pixel constraint: the paper's projection
    delta = torch.zeros_like(x)

    # 2. PGD: a normalised gradient step (of δ), then projection onto the kept region, the per-pixel budget,
    #    the L2 ball and [0, 1]
    history = torch.zeros(steps, x.shape[0])
    for step in range(steps):
        loss, grad = _draws(inpainter, x + delta, m, target, generators, grad=True)
        history[step] = loss.cpu()
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        stepped = delta - STEP_SIZE * grad / norm
        delta = _project(stepped, x, keep, eps) if paper else _project_budget(space, stepped, x, keep, eps)

    # 3. Final losses at x + δ
    final, _ = _draws(inpainter, x + delta, m, target, generators, grad=False)
    return MethodOutput(delta=delta, losses={"diffusion": final.cpu()}, history=history)


def _project(delta: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero inside the hole, scale into the L2 ball of radius ``eps``, keep ``x + δ`` in [0, 1]."""
    delta = delta * keep
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    delta = delta * (eps / norm).clamp(max=1)
    return ((x + delta).clamp(0, 1) - x).detach()


def _project_budget(space, delta: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero inside the hole, the budget's per-pixel projection (bound, chroma, [0, 1]), then the L2 ball (a scale by
    at most 1; ``x + δ`` is re-clipped to [0, 1] against its float rounding, which only shortens δ)."""
    delta = space.delta(space.project(space.from_rgb(delta * keep), x), x)
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return ((x + delta * (eps / norm).clamp(max=1)).clamp(0, 1) - x).detach()
