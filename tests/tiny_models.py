"""Tiny randomly initialised inpainting networks, saved as TorchScript and loaded through the real loader."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class TinyInpaintNet(nn.Module):
    """A small encoder-decoder (receptive field ≈ 30 px) mapping ``(x·(1−m), m)`` to an RGB fill."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.Tanh(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.Tanh(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.Tanh(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.Tanh(),
        )
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=4.0, mode="bilinear", align_corners=False),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.down(torch.cat([image, mask], dim=1))))


def build_tiny_torchscript(path: Path, seed: int = 0, gain: float = 4.0) -> Path:
    """Build the tiny net after ``torch.manual_seed(seed)``, script it and save it at ``path``.

    Convolution weights are scaled by ``gain``: at PyTorch's default scale a random net barely reacts to
    its context, while a trained inpainter (and this one at gain 4) reacts to ε-sized changes.
    """
    torch.manual_seed(seed)
    net = TinyInpaintNet().eval()
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.dim() == 4:
                parameter.mul_(gain)
    module = torch.jit.script(net)
    module.save(str(path))
    return path
