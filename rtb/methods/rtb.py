"""The run-time backdoor (RTB) of "Attack as Defense" (Zhang et al. 2024), batched.

For a protected region ``M`` with dilation ``M+`` and ring ``R = M+ − M``, find δ (‖δ‖∞ ≤ ε) minimising

    L = w_i·MSE_M(F(x+δ, M), T) + w_e·MSE_{M+}(F(x+δ, M+), T) + w_h·MSE_R(F(x+δ, R), F(x, R))

so that an edit whose hole covers M outputs the target T, while an edit of the ring behaves as on the
clean image. With ``augment_holes = k > 0`` (mask augmentation, a lever the paper leaves open) every step
also draws k attacker-like holes ``A`` per sample (:func:`rtb.masks.attacker_hole`) and adds
``w_a·mean_k MSE_A(F(x+δ, A), T)``, so the trigger holds for the holes attackers actually paint.

With ``eot`` set (expectation over transformation, :mod:`rtb.transforms`) every step also draws one
transformation ``t`` per sample (a differentiable JPEG at a random quality, a down-and-up resize at a random
scale, a light blur, or none) and optimises ``L`` with ``x+δ`` replaced by ``t(x+δ)`` and the clean ring
edit by ``F(t(x), R)``, so the trigger survives the re-encoding and resizing an image meets before the edit.

Unlike the authors' scripts, a batch of images is optimised at once with per-sample losses (the gradient
of one image never depends on another), the masked passes of a step run as one forward, and the constant
clean ring edit ``F(x, R)`` is computed once (once per surrogate draw).

The budget is per pixel (``config.budget``, :mod:`rtb.budget`: ε everywhere, or a just-noticeable-difference map
with ε as the ceiling) and δ lives in ``config.colour``'s basis (:mod:`rtb.colour`: per RGB channel, or luma and
colour differences with a smaller chroma budget and none on grey images); Adam updates the coordinates of that
basis and every step ends with its exact projection. ``uniform``/``rgb`` is the paper's L∞ ball.
"""

from __future__ import annotations

import torch

from rtb.budget import delta_space
from rtb.config import ProtectConfig
from rtb.metrics import masked_mse
from rtb.masks import attacker_hole, dilate
from rtb.methods.output import MethodOutput
from rtb.targets import make_targets
from rtb.transforms import apply_eot_batch, draw_eot

NAME = "rtb"
# L∞ budget per pixel on [0, 1] (the paper's 0.025 ≈ 6.4/255) and optimisation steps (the paper's 20).
DEFAULT_EPS = 0.025
DEFAULT_STEPS = 20
# How ε bounds δ (rtb.methods.check_budget) and whether the method needs a VAE (a diffusers backend).
NORM = "linf"
NEEDS_VAE = False
# Adam's epsilon in the authors' scripts.
ADAM_EPS = 1e-10


def repeat_noise(noise, times: int):
    """Concatenate every tensor of a per-sample draw ``times`` times along the batch (None stays None)."""
    if noise is None:
        return None
    return {key: torch.cat([value] * times) for key, value in noise.items()}


def trigger_masks(m: torch.Tensor, config: ProtectConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three holes of RTB: ``M``, ``M+`` (box dilation) and the ring ``R``."""
    expanded = dilate(m, config.dilation)
    return m, expanded, expanded - m


def rtb_losses(inpainter, x_adv, holes, weights, targets, clean_ring, noise, augmented=()) -> dict[str, torch.Tensor]:
    """The per-sample loss terms of one step, from a single batched forward of ``(3 + k)·N`` images.

    ``augmented`` is a list of ``k`` (hole, loss-space weight) pairs of ``N×1×H×W`` tensors; with ``k > 0``
    the result has an ``augment`` term, the mean implant loss over them.
    """
    n = x_adv.shape[0]
    all_holes = list(holes) + [hole for hole, _ in augmented]
    passes = len(all_holes)
    out = inpainter.surrogate(torch.cat([x_adv] * passes), torch.cat(all_holes), repeat_noise(noise, passes))
    implant_out, expanded_out, ring_out = out[:n], out[n : 2 * n], out[2 * n : 3 * n]
    losses = {
        "implant": masked_mse(implant_out, targets, weights[0]),
        "expanded": masked_mse(expanded_out, targets, weights[1]),
        "hide": masked_mse(ring_out, clean_ring, weights[2]),
    }
    if augmented:
        losses["augment"] = torch.stack([
            masked_mse(out[(3 + k) * n : (4 + k) * n], targets, weight) for k, (_, weight) in enumerate(augmented)
        ]).mean(dim=0)
    return losses


def draw_augmented(inpainter, m, config: ProtectConfig, generators) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``config.augment_holes`` attacker-like holes per sample, each drawn from the sample's own generator."""
    augmented = []
    for _ in range(config.augment_holes):
        hole = torch.cat([attacker_hole(m[i : i + 1], g, config.dilation) for i, g in enumerate(generators)])
        augmented.append((hole, inpainter.mask_to_loss_space(hole)))
    return augmented


def total_loss(losses: dict[str, torch.Tensor], config: ProtectConfig) -> torch.Tensor:
    """``w_i·implant + w_e·expanded + w_h·hide`` (``+ w_a·augment`` when present) per sample."""
    total = (
        config.implant_weight * losses["implant"]
        + config.expanded_weight * losses["expanded"]
        + config.hide_weight * losses["hide"]
    )
    if "augment" in losses:
        total = total + config.augment_weight * losses["augment"]
    return total


def prepare(inpainter, x, m, config, generators, custom_targets=None):
    """Everything constant over the optimisation: holes, their loss-space weights, targets, surrogate
    draws and the clean ring edit of each draw."""
    holes = trigger_masks(m, config)
    weights = [inpainter.mask_to_loss_space(hole) for hole in holes]
    with torch.no_grad():
        targets = inpainter.to_loss_space(make_targets(x, config.target, custom_targets))
        draws = []
        for _ in range(config.surrogate_draws):
            noise = inpainter.sample_noise(generators, x.shape[-2], x.shape[-1])
            draws.append((noise, inpainter.surrogate(x, holes[2], noise)))
            if noise is None:  # a deterministic model has one draw
                break
    return holes, weights, targets, draws


def run(inpainter, x, m, config: ProtectConfig, generators: list[torch.Generator], custom_targets=None) -> MethodOutput:
    """Optimise the run-time backdoor for a batch.

    Args:
        inpainter: an :class:`~rtb.inpainters.base.Inpainter`.
        x: ``N×3×H×W`` images in [0, 1] on ``inpainter.device``.
        m: ``N×1×H×W`` protected regions (1 = protected).
        config: the run's settings (ε, steps, lr, betas, weights, dilation, target, draws, augmentation, EOT,
            budget map, colour basis and chroma ratio).
        generators: one generator per sample, the only source of its randomness.
        custom_targets: target images for ``config.target == "custom"``.

    Returns:
        :class:`MethodOutput` with δ, the final per-sample losses and the per-step total loss.
    """
    eps = config.eps if config.eps is not None else DEFAULT_EPS
    steps = config.steps if config.steps is not None else DEFAULT_STEPS

    # 1. Constants: holes, loss-space weights, targets, surrogate draws and the clean ring edits.
    holes, weights, targets, draws = prepare(inpainter, x, m, config, generators, custom_targets)

    # 2. The budget (per-pixel bound, basis, chroma bound) and δ ~ U[0, init_high] per sample from the sample's
    #    own generator, in the basis's coordinates u, projected into the budget.
    space = delta_space(x, config, eps)
    delta = torch.stack(
        [torch.rand(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generators]
    )
    u = space.project(space.from_rgb(delta * config.init_high), x)
    u.requires_grad_(True)
    optimizer = torch.optim.Adam([u], lr=config.lr, betas=config.betas, eps=ADAM_EPS)

    # 3. Optimise: one batched forward of the three holes (and any augmented holes, drawn afresh each
    #    step) per step, per-sample losses summed. With EOT each sample's x + δ first goes through its own
    #    transformation of the step, and the ring is held to the clean edit of the same transformation.
    history = torch.zeros(steps, x.shape[0], dtype=x.dtype)
    for step in range(steps):
        noise, clean_ring = draws[step % len(draws)]
        augmented = draw_augmented(inpainter, m, config, generators)
        x_adv = x + space.to_rgb(u)
        if config.eot:
            picks = [draw_eot(config.eot, g) for g in generators]
            x_adv = apply_eot_batch(x_adv, picks)
            with torch.no_grad():
                clean_ring = inpainter.surrogate(apply_eot_batch(x, picks), holes[2], noise)
        losses = rtb_losses(inpainter, x_adv, holes, weights, targets, clean_ring, noise, augmented)
        total = total_loss(losses, config)
        history[step] = total.detach().cpu()
        optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        optimizer.step()
        # 4. Project: |δ| within the per-pixel bound (≤ ε), chroma within its bound, x + δ in [0, 1].
        with torch.no_grad():
            u.copy_(space.project(u, x))

    # 5. Final losses at the final δ (first draw).
    delta = space.delta(u.detach(), x)
    final = evaluate(inpainter, x, delta, holes, weights, targets, draws[0])
    return MethodOutput(delta=delta, losses=final, history=history)


@torch.no_grad()
def evaluate(inpainter, x, delta, holes, weights, targets, draw) -> dict[str, torch.Tensor]:
    """The RTB loss terms of ``x + delta`` under one surrogate draw, per sample."""
    noise, clean_ring = draw
    losses = rtb_losses(inpainter, x + delta, holes, weights, targets, clean_ring, noise)
    return {name: value.detach() for name, value in losses.items()}
