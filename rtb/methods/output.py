"""What every protection method returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MethodOutput:
    """The result of one method on a batch at working resolution.

    Args:
        delta: ``N×3×H×W`` perturbation, already bounded and such that ``x + delta`` lies in [0, 1].
        losses: final per-sample losses by name (each a tensor of shape ``N``), measured at ``x + delta``.
        history: ``steps×N`` total loss of every sample at every optimisation step (empty for ``noise``).
    """

    delta: torch.Tensor
    losses: dict[str, torch.Tensor]
    history: torch.Tensor
