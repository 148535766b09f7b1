"""The reference inpainter network: a push-pull prior refined by a small convolutional U-Net.

One forward pass, no attention, no normalisation layers (so a sample's output never depends on the rest of
its batch). The network sees the known pixels, the hole mask and a cheap differentiable *push-pull* fill of
the hole (a masked image pyramid averaged down and bilinearly pulled back up), and predicts a residual over
that fill. The prior carries the low frequencies across holes of any size; the U-Net adds edges and texture.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn


@dataclass(frozen=True)
class ReferenceConfig:
    # Channels of the U-Net at 1/2, 1/4, 1/8 and 1/16 of the input resolution (the first level works on a
    # 2x2 pixel-unshuffled input, so no convolution runs at full resolution).
    widths: tuple[int, int, int, int] = (16, 32, 80, 128)
    # Dilations of the 3x3 convolutions in the residual blocks at the bottleneck (widens the receptive field).
    bottleneck_dilations: tuple[int, ...] = (1, 2, 4)
    # Slope of the LeakyReLU activations.
    negative_slope: float = 0.1
    # Feed the push-pull fill as an input and predict a residual over it (the shipped model). False: the
    # network sees only the known pixels and the mask and predicts the fill itself (a LaMa-like plain
    # inpainter; the steerability experiment of docs/efficacy.md).
    prior: bool = True

    @property
    def size_multiple(self) -> int:
        """Working height and width must be multiples of this (unshuffle 2 x three stride-2 convs)."""
        return 16

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ReferenceConfig":
        return cls(
            widths=tuple(int(w) for w in data["widths"]),
            bottleneck_dilations=tuple(int(d) for d in data["bottleneck_dilations"]),
            negative_slope=float(data["negative_slope"]),
            prior=bool(data.get("prior", True)),
        )


# Left out of torch.compile graphs: inductor's CPU code generation fails (an AssertionError in the C++
# vectoriser) on the backward of the ceil-mode pooling pyramid in torch 2.13; eager costs little here.
@torch.compiler.disable
def push_pull_fill(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Fill holes by a masked pyramid: average known pixels down, pull the coarse means back up.

    Args:
        x: images ``N×C×H×W`` (any range; hole pixels are ignored).
        m: holes ``N×1×H×W`` in [0, 1], 1 = unknown.

    Returns:
        ``N×C×H×W``: equal to ``x`` where ``m == 0``; inside holes a smooth interpolation of the surrounding
        known pixels. Differentiable in ``x``; each sample depends only on itself.
    """
    known = 1.0 - m
    values = [x * known]  # per level: average of x over known pixels (unknown counted as 0)
    weights = [known]  # per level: fraction of known pixels
    while values[-1].shape[-2] > 1 or values[-1].shape[-1] > 1:
        # The same pooling on numerator and denominator, so the ceil-mode edge divisor cancels out.
        values.append(F.avg_pool2d(values[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    fill = values[-1] / weights[-1].clamp_min(1e-6)
    for value, weight in zip(reversed(values[:-1]), reversed(weights[:-1])):
        up = F.interpolate(fill, size=value.shape[-2:], mode="bilinear", align_corners=False)
        fill = value + (1.0 - weight) * up
    return fill


def _conv(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, padding_mode="zeros")


class _ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, slope: float):
        super().__init__()
        self.conv1 = _conv(channels, channels, dilation=dilation)
        self.conv2 = _conv(channels, channels)
        self.act = nn.LeakyReLU(slope)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(self.act(self.conv1(h)))


class ReferenceNet(nn.Module):
    """Predicts the hole content of ``x`` given holes ``m``.

    ``forward(x, m)`` takes images ``N×3×H×W`` in [0, 1] and holes ``N×1×H×W`` (1 = fill), ``H`` and ``W``
    multiples of 16, and returns the raw (uncomposited, unclamped) prediction ``N×3×H×W``. Pixels under the
    hole are never read: the network only sees ``x·(1−m)``.
    """

    def __init__(self, config: ReferenceConfig = ReferenceConfig()):
        super().__init__()
        self.config = config
        c0, c1, c2, c3 = config.widths
        slope = config.negative_slope
        self.act = nn.LeakyReLU(slope)
        # Encoder: known image (3) + mask (1) [+ push-pull prior (3)], 2x2 unshuffled -> 28 (16) channels.
        self.stem = _conv((7 if config.prior else 4) * 4, c0)
        self.enc0 = _conv(c0, c0)
        self.down1 = _conv(c0, c1, stride=2)
        self.enc1 = _conv(c1, c1)
        self.down2 = _conv(c1, c2, stride=2)
        self.enc2 = _conv(c2, c2)
        self.down3 = _conv(c2, c3, stride=2)
        self.bottleneck = nn.ModuleList(_ResBlock(c3, d, slope) for d in config.bottleneck_dilations)
        # Decoder: bilinear upsampling, 1x1 projection, add the skip, one 3x3 conv per level.
        self.proj2 = nn.Conv2d(c3, c2, 1)
        self.dec2 = _conv(c2, c2)
        self.proj1 = nn.Conv2d(c2, c1, 1)
        self.dec1 = _conv(c1, c1)
        self.proj0 = nn.Conv2d(c1, c0, 1)
        self.dec0 = _conv(c0, c0)
        # Head: a residual over the prior, 2x2 pixel-shuffled back to full resolution.
        self.head = _conv(c0, 3 * 4)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # 1. Inputs: the known pixels, the mask and (by default) the push-pull prior.
        known = x * (1.0 - m)
        if self.config.prior:
            prior = push_pull_fill(known, m)
            h = F.pixel_unshuffle(torch.cat([known, m, prior], dim=1), 2)
        else:
            prior = torch.zeros_like(known)
            h = F.pixel_unshuffle(torch.cat([known, m], dim=1), 2)
        # 2. Encoder.
        s0 = self.act(self.enc0(self.act(self.stem(h))))
        s1 = self.act(self.enc1(self.act(self.down1(s0))))
        s2 = self.act(self.enc2(self.act(self.down2(s1))))
        h = self.act(self.down3(s2))
        # 3. Dilated residual bottleneck.
        for block in self.bottleneck:
            h = self.act(block(h))
        # 4. Decoder with additive skips.
        h = self.act(self.dec2(self.act(self._up(self.proj2, h, s2) + s2)))
        h = self.act(self.dec1(self.act(self._up(self.proj1, h, s1) + s1)))
        h = self.act(self.dec0(self.act(self._up(self.proj0, h, s0) + s0)))
        # 5. Residual over the prior (or the fill itself without one) at full resolution.
        return prior + F.pixel_shuffle(self.head(h), 2)

    @staticmethod
    def _up(proj: nn.Conv2d, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return proj(F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False))


def composite(x: torch.Tensor, m: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """``x`` outside the hole, the prediction clamped to [0, 1] inside it (``N×3×H×W``)."""
    return x * (1.0 - m) + prediction.clamp(0.0, 1.0) * m


def save_weights(net: ReferenceNet, path: str | Path, record: dict | None = None) -> None:
    """Write ``net``'s float32 weights to a safetensors file, the architecture config in its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": "rtb-reference", "config": json.dumps(net.config.to_dict())}
    if record is not None:
        metadata["record"] = json.dumps(record)
    save_file(tensors, str(path), metadata=metadata)


def load_weights(path: str | Path) -> ReferenceNet:
    """Build a :class:`ReferenceNet` from a safetensors file written by :func:`save_weights`.

    Raises ``ValueError`` naming ``path`` when the file is not readable safetensors (truncated, garbage
    bytes), lacks or adds tensors, has a tensor of the wrong shape, or holds non-finite values.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types and OSError for bad bytes
        raise ValueError(f"reference weights {str(path)!r} are not a readable safetensors file: {error}") from error
    try:
        config = ReferenceConfig()
        if "config" in metadata:
            config = ReferenceConfig.from_dict(json.loads(metadata["config"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"reference weights {str(path)!r} carry an invalid config: {error}") from error
    net = ReferenceNet(config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"reference weights {str(path)!r} do not match the architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"reference weights {str(path)!r}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ValueError(f"reference weights {str(path)!r}: tensor {key!r} is not finite floating point")
    net.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return net.eval()
