"""The run-time backdoor (RTB) of "Attack as Defense" (Zhang et al. 2024), batched.

For a protected region ``M`` with dilation ``M+`` and ring ``R = M+ − M``, find δ (‖δ‖∞ ≤ ε) minimising

    L = w_i·MSE_M(F(x+δ, M), T) + w_e·MSE_{M+}(F(x+δ, M+), T) + w_h·MSE_R(F(x+δ, R), F(x, R))

so that an edit whose hole covers M outputs the target T, while an edit of the ring behaves as on the
clean image. Unlike the authors' scripts, a batch of images is optimised at once with per-sample losses
(the gradient of one image never depends on another), the three masked passes of a step run as one
forward, and the constant clean ring edit ``F(x, R)`` is computed once (once per surrogate draw).
"""

from __future__ import annotations

import torch

from rtb.config import ProtectConfig
from rtb.masks import dilate
from rtb.methods.output import MethodOutput
from rtb.targets import make_targets

DEFAULT_EPS = 0.025
DEFAULT_STEPS = 20
# Adam's epsilon in the authors' scripts.
ADAM_EPS = 1e-10


def masked_mse(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over the pixels where ``weight`` is 1, all channels: shape ``N``."""
    squared = (a - b).pow(2) * weight
    count = weight.flatten(1).sum(dim=1) * a.shape[1]
    return squared.flatten(1).sum(dim=1) / count.clamp_min(1e-12)


def repeat_noise(noise, times: int):
    """Concatenate every tensor of a per-sample draw ``times`` times along the batch (None stays None)."""
    if noise is None:
        return None
    return {key: torch.cat([value] * times) for key, value in noise.items()}


def trigger_masks(m: torch.Tensor, config: ProtectConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three holes of RTB: ``M``, ``M+`` (box dilation) and the ring ``R``."""
    expanded = dilate(m, config.dilation)
    return m, expanded, expanded - m


def rtb_losses(inpainter, x_adv, holes, weights, targets, clean_ring, noise) -> dict[str, torch.Tensor]:
    """The three per-sample loss terms of one step, from a single batched forward of ``3N`` images."""
    n = x_adv.shape[0]
    out = inpainter.surrogate(torch.cat([x_adv] * 3), torch.cat(holes), repeat_noise(noise, 3))
    implant_out, expanded_out, ring_out = out[:n], out[n : 2 * n], out[2 * n :]
    return {
        "implant": masked_mse(implant_out, targets, weights[0]),
        "expanded": masked_mse(expanded_out, targets, weights[1]),
        "hide": masked_mse(ring_out, clean_ring, weights[2]),
    }


def total_loss(losses: dict[str, torch.Tensor], config: ProtectConfig) -> torch.Tensor:
    """``w_i·implant + w_e·expanded + w_h·hide`` per sample."""
    return (
        config.implant_weight * losses["implant"]
        + config.expanded_weight * losses["expanded"]
        + config.hide_weight * losses["hide"]
    )


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
        config: the run's settings (ε, steps, lr, betas, weights, dilation, target, draws).
        generators: one generator per sample, the only source of its randomness.
        custom_targets: target images for ``config.target == "custom"``.

    Returns:
        :class:`MethodOutput` with δ, the final per-sample losses and the per-step total loss.
    """
    eps = config.eps if config.eps is not None else DEFAULT_EPS
    steps = config.steps if config.steps is not None else DEFAULT_STEPS

    # 1. Constants: holes, loss-space weights, targets, surrogate draws and the clean ring edits.
    holes, weights, targets, draws = prepare(inpainter, x, m, config, generators, custom_targets)

    # 2. δ ~ U[0, init_high] per sample from the sample's own generator, projected into the budget.
    delta = torch.stack(
        [torch.rand(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generators]
    )
    delta = ((delta * config.init_high).clamp(-eps, eps) + x).clamp(0, 1) - x
    delta.requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=config.lr, betas=config.betas, eps=ADAM_EPS)

    # 3. Optimise: one batched forward of the three holes per step, per-sample losses summed.
    history = torch.zeros(steps, x.shape[0], dtype=x.dtype)
    for step in range(steps):
        noise, clean_ring = draws[step % len(draws)]
        losses = rtb_losses(inpainter, x + delta, holes, weights, targets, clean_ring, noise)
        total = total_loss(losses, config)
        history[step] = total.detach().cpu()
        optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        optimizer.step()
        # 4. Project: ‖δ‖∞ ≤ ε and x + δ in [0, 1].
        with torch.no_grad():
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)

    # 5. Final losses at the final δ (first draw).
    delta = delta.detach()
    final = evaluate(inpainter, x, delta, holes, weights, targets, draws[0])
    return MethodOutput(delta=delta, losses=final, history=history)


@torch.no_grad()
def evaluate(inpainter, x, delta, holes, weights, targets, draw) -> dict[str, torch.Tensor]:
    """The RTB loss terms of ``x + delta`` under one surrogate draw, per sample."""
    noise, clean_ring = draw
    losses = rtb_losses(inpainter, x + delta, holes, weights, targets, clean_ring, noise)
    return {name: value.detach() for name, value in losses.items()}
