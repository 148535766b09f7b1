"""The control: uniform random noise in [−ε, ε], so every efficacy figure has a baseline at equal budget.

The noise fills the same budget as RTB (:mod:`rtb.budget`, :mod:`rtb.colour`): each coordinate of
``config.colour``'s basis is drawn uniformly within its per-pixel bound (``±bound`` per RGB channel for ``rgb``;
luma ``±bound`` and colour differences ``±chroma`` for ``luma-chroma``), then projected. The RTB loss terms of
the noisy image are reported too, so a control row is comparable with an RTB row.
"""

from __future__ import annotations

import dataclasses

import torch

from rtb.budget import delta_space
from rtb.config import ProtectConfig
from rtb.methods import rtb
from rtb.methods.output import MethodOutput

NAME = "noise"
DEFAULT_EPS = rtb.DEFAULT_EPS
DEFAULT_STEPS = 0
NORM = "linf"
NEEDS_VAE = False


def run(inpainter, x, m, config: ProtectConfig, generators: list[torch.Generator], custom_targets=None) -> MethodOutput:
    """δ ~ U[−bound, bound] per pixel and coordinate from each sample's generator, with ``x + δ`` kept in [0, 1]."""
    eps = config.eps if config.eps is not None else DEFAULT_EPS

    # 1. Draw the noise per sample, scaled to each coordinate's per-pixel bound.
    space = delta_space(x, config, eps)
    noise = torch.stack(
        [torch.rand(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generators]
    )
    delta = space.delta(space.project(space.scale(noise * 2 - 1), x), x)

    # 2. Measure the RTB losses of the noisy image, for comparison with RTB. Only the first surrogate draw
    #    is evaluated, so prepare only that one (the same values: it is drawn first either way).
    single_draw = dataclasses.replace(config, surrogate_draws=1)
    holes, weights, targets, draws = rtb.prepare(inpainter, x, m, single_draw, generators, custom_targets)
    losses = rtb.evaluate(inpainter, x, delta, holes, weights, targets, draws[0])
    return MethodOutput(delta=delta, losses=losses, history=torch.zeros(0, x.shape[0], dtype=x.dtype))
