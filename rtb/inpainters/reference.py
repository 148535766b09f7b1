"""The reference inpainter backend: the small in-repo network of :mod:`rtb.reference`.

A single-forward convolutional inpainter (a stand-in for LaMa): deterministic, differentiable in the image,
computing in pixels, so its loss space is the image itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rtb.reference.model import ReferenceNet, composite, load_weights
from rtb.storage import fetch_to_cache, fingerprint

# The weights shipped inside the package (trained by ``jobs/train_reference.py``).
PACKAGED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "reference.safetensors"


class ReferenceInpainter:
    """Satisfies :class:`rtb.inpainters.base.Inpainter` with a :class:`ReferenceNet`.

    ``surrogate(x, m)`` and ``edit(x, m)`` take images ``N×3×H×W`` in [0, 1] and holes ``N×1×H×W``
    (1 = fill), ``H`` and ``W`` multiples of 16, and return ``x·(1−m) + net(x·(1−m), m)·m`` with the
    prediction clamped to [0, 1], in the dtype of ``x``.
    """

    name = "reference"
    size_multiple = 16
    native_size = 256
    has_vae = False

    def __init__(self, net: ReferenceNet, fingerprint: str, device: torch.device, dtype: torch.dtype):
        self.net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.fingerprint = fingerprint
        self.device = device
        self.dtype = dtype

    def sample_noise(self, generators: list[torch.Generator], height: int, width: int) -> None:
        """Deterministic model: no randomness."""
        return None

    def check_inputs(self, x: torch.Tensor, m: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be N×3×H×W, got shape {tuple(x.shape)}")
        if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] != x.shape[0] or m.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"holes must be N×1×H×W matching images {tuple(x.shape)}, got {tuple(m.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"height and width must be multiples of {self.size_multiple}, got {h}×{w}")

    def surrogate(self, x: torch.Tensor, m: torch.Tensor, noise: None = None) -> torch.Tensor:
        """Differentiable composited inpainting ``N×3×H×W`` (gradients flow to ``x``)."""
        self.check_inputs(x, m)
        xc, mc = x.to(self.dtype), m.to(self.dtype)
        return composite(xc, mc, self.net(xc, mc)).to(x.dtype)

    def to_loss_space(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def mask_to_loss_space(self, m: torch.Tensor) -> torch.Tensor:
        return m

    @torch.no_grad()
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
        """The same composited inpainting without gradient; prompt, steps, guidance and seed are unused."""
        return self.surrogate(x, m)


def load_reference(
    weights: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> ReferenceInpainter:
    """Load the reference inpainter.

    Args:
        weights: a safetensors file (local path or any fsspec URI); ``None`` loads the packaged weights.
        device: where to run (default CUDA when available, else CPU).
        dtype: ``torch.float32`` (also for ``None``) or ``torch.float64``.

    Raises:
        ValueError: naming the file when it is missing, not safetensors (truncated, garbage bytes) or does not
            match the architecture (wrong tensor names or shapes); or for an unsupported dtype.
    """
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"reference inpainter computes in float32 or float64, got {dtype}")
    path = fetch_to_cache(str(weights if weights is not None else PACKAGED_WEIGHTS))
    if not path.is_file():
        raise ValueError(f"reference weights {str(path)!r} are not a file")
    net = load_weights(path)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    return ReferenceInpainter(net, fingerprint(path), device, dtype)
