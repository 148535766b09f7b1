"""The protection methods, one per module, and the one table that names them.

Every method module declares, next to its ``run(inpainter, x, m, config, generators, custom_targets=None)``:
``NAME``, ``DEFAULT_EPS`` and ``DEFAULT_STEPS`` (the published settings), ``NORM`` (``"linf"``: ε bounds every
pixel of δ; ``"l2"``: ε bounds the L2 norm of δ per image) and ``NEEDS_VAE`` (the method attacks the VAE or
sampler of a diffusers backend). :data:`METHODS` maps names to those modules, so "go to definition" on any
use reaches the method; :func:`check_budget` is the one place ε is checked.
"""

from __future__ import annotations

import math

from rtb.methods import noise, photoguard_diffusion, photoguard_encoder, rtb

# Method name → its module.
METHODS = {module.NAME: module for module in (rtb, noise, photoguard_encoder, photoguard_diffusion)}
# Largest budgets accepted: an L∞ ε beyond 0.25 (64/255) is plainly visible; an L2 ε is per image on [0, 1]
# pixels (PhotoGuard's diffusion attack uses 8).
MAX_EPS = {"linf": 0.25, "l2": 64.0}

__all__ = ["MAX_EPS", "METHODS", "check_budget", "get_method", "resolved_budget"]


def get_method(name: str):
    """The module implementing method ``name``; ``ValueError`` naming it when unknown."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def check_budget(name: str, eps) -> float:
    """``eps`` as a float when it is a valid budget for method ``name``, else ``ValueError`` naming it."""
    norm = get_method(name).NORM
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 < eps <= MAX_EPS[norm]:
        kind = "an L∞ budget per pixel" if norm == "linf" else "an L2 budget per image"
        raise ValueError(f"eps {eps!r} is out of range for method {name!r}: {kind} must be in (0, {MAX_EPS[norm]:g}]")
    return float(eps)


def resolved_budget(name: str, eps: float | None, steps: int | None) -> tuple[float, int]:
    """(ε, steps) of method ``name`` with ``None`` replaced by its published defaults; ε is checked."""
    method = get_method(name)
    eps = check_budget(name, method.DEFAULT_EPS if eps is None else eps)
    return eps, int(method.DEFAULT_STEPS if steps is None else steps)
