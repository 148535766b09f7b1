"""The inpainter contract that every model backend satisfies.

Conventions shared by every method:

- images ``x``: float tensor ``N×3×H×W`` in ``[0, 1]``, on ``inpainter.device``;
- holes ``m``: float tensor ``N×1×H×W`` with 1 = fill (the region the edit replaces), 0 = keep;
- ``H`` and ``W`` are multiples of ``inpainter.size_multiple`` (the caller pads);
- outputs have the dtype of the input (backends may compute in fp16/bf16 internally);
- every output is *composited*: outside the hole it equals the input.

Randomness is per sample. A stochastic backend (a diffusion surrogate) draws sample ``i`` of a batch only
from ``generators[i]``, so an image gets the same result alone or inside any batch. Deterministic backends
return ``None`` from :meth:`Inpainter.sample_noise`.

A backend is a plain class that satisfies this protocol; there is no base class to inherit from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

# Per-sample surrogate randomness: a dict of tensors whose first dimension is the batch, or None.
Noise = dict[str, torch.Tensor] | None


@runtime_checkable
class Inpainter(Protocol):
    # A short human-readable name: "reference", "diffusers:/models/sd2-inpaint", "torchscript:lama.pt".
    name: str
    # sha256 over the weight bytes; identical weights give the identical fingerprint wherever they are loaded.
    fingerprint: str
    # Working height and width must be multiples of this (8 for Stable Diffusion).
    size_multiple: int
    # The side the model was trained at (512 for SD 1.x inpainting, 256 for the reference model), or None.
    native_size: int | None
    # True when the backend has a VAE encoder (the PhotoGuard baselines need one).
    has_vae: bool
    # Where the weights live; inputs must be put on this device.
    device: torch.device
    # The dtype the network computes in.
    dtype: torch.dtype

    def sample_noise(self, generators: list[torch.Generator], height: int, width: int) -> Noise:
        """Draw one surrogate randomness per sample (sample ``i`` only from ``generators[i]``).

        Returns ``None`` for deterministic models. Every tensor in the dict is batch-first, so callers can
        ``torch.cat`` the same draw several times to run several masked passes of a batch as one forward.
        """
        ...

    def surrogate(self, x: torch.Tensor, m: torch.Tensor, noise: Noise = None) -> torch.Tensor:
        """Differentiable inpainting of ``x`` with holes ``m``, expressed in the backend's loss space.

        For pixel models the loss space is the image itself (``N×3×H×W``, composited). A latent diffusion
        surrogate may return its x0 prediction as latents; :meth:`to_loss_space` and
        :meth:`mask_to_loss_space` map targets and masks into the same space.
        """
        ...

    def to_loss_space(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``N×3×H×W`` in [0, 1] (targets, clean references) into the surrogate's space."""
        ...

    def mask_to_loss_space(self, m: torch.Tensor) -> torch.Tensor:
        """Map holes ``N×1×H×W`` to weights over the surrogate's output (same spatial size as it)."""
        ...

    def edit(
        self,
        x: torch.Tensor,
        m: torch.Tensor,
        *,
        prompt: str = "",
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Full-quality composited edit in pixels, as an attacker would run it; no gradient.

        Single-forward models ignore ``prompt``, ``steps`` and ``guidance``. Diffusion backends run their real
        sampler with a generator seeded by ``seed``.
        """
        ...
