"""TorchScript inpainters: LaMa-style JIT files called as ``model(image, mask)``.

The file takes images ``N×3×H×W`` in [0, 1] and holes ``N×1×H×W`` (1 = fill) and returns the inpainting
in [0, 1]. We feed ``x·(1−m)`` (the hole blanked, as LaMa does itself) and composite the output.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rtb.storage import fingerprint as weights_fingerprint


class TorchScriptInpainter:
    """A single-forward inpainter loaded from a TorchScript file; deterministic, differentiable."""

    has_vae = False

    def __init__(self, module: torch.jit.ScriptModule, *, name: str, fingerprint: str, size_multiple: int,
                 native_size: int | None, device: torch.device, dtype: torch.dtype):
        self.module = module
        self.name = name
        self.fingerprint = fingerprint
        self.size_multiple = size_multiple
        self.native_size = native_size
        self.device = device
        self.dtype = dtype

    def sample_noise(self, generators, height, width):
        return None

    def surrogate(self, x: torch.Tensor, m: torch.Tensor, noise=None) -> torch.Tensor:
        keep = 1.0 - m
        out = self.module((x * keep).to(self.dtype), m.to(self.dtype)).to(x.dtype)
        return x * keep + out * m

    def to_loss_space(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def mask_to_loss_space(self, m: torch.Tensor) -> torch.Tensor:
        return m

    @torch.no_grad()
    def edit(self, x, m, *, prompt="", steps=None, guidance=None, seed=0) -> torch.Tensor:
        return self.surrogate(x, m)


def load_torchscript(path: Path, *, device=None, dtype: torch.dtype | None = None, size_multiple: int = 8,
                     native_size: int | None = None, name: str | None = None) -> TorchScriptInpainter:
    """Load a TorchScript inpainter from a local file; ``ValueError`` naming the file when it is not one."""
    # 1. Place it.
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float32
    # 2. Load (TorchScript archives carry code, but only TorchScript code: no arbitrary pickled objects).
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as error:
        raise ValueError(f"{str(path)!r} is not a loadable TorchScript inpainter: {error}") from None
    module = module.to(dtype).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return TorchScriptInpainter(
        module,
        name=name or f"torchscript:{Path(path).name}",
        fingerprint=weights_fingerprint(path),
        size_multiple=size_multiple,
        native_size=native_size,
        device=device,
        dtype=dtype,
    )
