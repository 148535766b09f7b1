"""A LaMa-style inpainting generator built on fast Fourier convolutions (``model="reference-gan"``).

After the architecture described in Suvorov et al., *Resolution-robust Large Mask Inpainting with Fourier
Convolutions* (WACV 2022); written from that description, not from its code. The generator reads the known
pixels and the hole mask, ``x·(1−m) ⊕ m``, and:

1. a full-resolution stem convolution (7×7, reflect padding) and two or three stride-2 3×3 convolutions bring
   it to 1/4 or 1/8 of the input size, the last one splitting its channels into a *local* part and a *global*
   part (a fraction ``global_ratio``, 0.75 as in LaMa);
2. a stack of residual blocks of **fast Fourier convolutions** (FFC): the local branch is an ordinary 3×3
   convolution; the global branch is a *spectral transform*: a 1×1 convolution halves the channels, a
   *Fourier unit* takes the real 2-D FFT over H, W, stacks real and imaginary parts as channels, applies a 1×1
   convolution + BatchNorm + ReLU in the frequency domain and transforms back, and a 1×1 convolution restores
   the channels. Local and global parts exchange information through 3×3 convolutions (local→global,
   global→local), so every block has an image-wide receptive field;
3. transposed 3×3 convolutions bring it back to full resolution, and a 7×7 convolution with a sigmoid gives the
   fill in [0, 1], which is composited into the known pixels outside the hole (:func:`composite`).

Normalisation is BatchNorm as in LaMa: in training mode it uses batch statistics; at inference (``eval()``)
the running statistics, so the output is deterministic and each sample is independent of its batch.
The spectral branch always runs in float32 (or float64 for float64 inputs), also under bf16/fp16 autocast:
FFTs in reduced precision are not supported for all sizes and lose accuracy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

# The value of the ``format`` key in the safetensors metadata of this architecture's weights.
FORMAT = "rtb-lama"


@dataclass(frozen=True)
class LamaConfig:
    # Channels of the full-resolution stem convolution (and of the last upsampling layer).
    stem_width: int = 16
    # Channels after each stride-2 downsampling convolution (2 or 3 of them: 1/4 or 1/8 resolution). The last
    # entry is the width of the residual FFC blocks; the upsampling path mirrors these widths.
    # The default spends the 6 GFLOP@256² budget mostly at 1/8 resolution, where a parameter costs least:
    # 5.73 GFLOP, 2.33 M parameters (8.9 MB float32), 8 blocks (LaMa-Fourier has 9, at width 512).
    down_widths: tuple[int, ...] = (32, 64, 160)
    # Residual FFC blocks at the bottleneck (each is two FFC layers with a skip connection).
    blocks: int = 8
    # Fraction of the block channels carried by the global (spectral) branch (LaMa: 0.75).
    global_ratio: float = 0.75
    # Kernel size of the stem and of the output convolution (LaMa: 7).
    outer_kernel: int = 7

    def __post_init__(self):
        if len(self.down_widths) not in (2, 3):
            raise ValueError(f"down_widths needs 2 or 3 entries (1/4 or 1/8 resolution), got {self.down_widths}")
        if not 0.0 < self.global_ratio < 1.0:
            raise ValueError(f"global_ratio must lie in (0, 1), got {self.global_ratio}")
        if self.blocks < 1 or self.stem_width < 1 or min(self.down_widths) < 1 or self.outer_kernel % 2 != 1:
            raise ValueError(f"invalid LamaConfig {self}")
        global_channels = self.global_channels
        if global_channels < 2 or global_channels % 2 or self.down_widths[-1] - global_channels < 1:
            raise ValueError(f"global channels {global_channels} of width {self.down_widths[-1]} must be even, ≥ 2, "
                             "and leave at least one local channel")

    @property
    def global_channels(self) -> int:
        """Channels of the global branch in the FFC blocks (rounded to an even number)."""
        return 2 * int(round(self.down_widths[-1] * self.global_ratio / 2))

    @property
    def size_multiple(self) -> int:
        """Working height and width must be multiples of this (one factor 2 per downsampling convolution)."""
        return 2 ** len(self.down_widths)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "LamaConfig":
        unknown = set(data) - {"stem_width", "down_widths", "blocks", "global_ratio", "outer_kernel"}
        if unknown:
            raise ValueError(f"unknown LamaConfig fields {sorted(unknown)}")
        return cls(
            stem_width=int(data["stem_width"]),
            down_widths=tuple(int(w) for w in data["down_widths"]),
            blocks=int(data["blocks"]),
            global_ratio=float(data["global_ratio"]),
            outer_kernel=int(data["outer_kernel"]),
        )


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect", bias=False)


def _spectral_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for reduced-precision inputs, else the input's own dtype (float64 stays float64)."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class FourierUnit(nn.Module):
    """Real FFT over H, W → 1×1 conv + BN + ReLU on stacked real/imaginary channels → inverse FFT."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        dtype = x.dtype
        # Autocast off: the FFT and the frequency-domain convolution run in float32 (or float64).
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(_spectral_dtype(x))
            spectrum = torch.fft.rfft2(x, norm="ortho")  # N×C×H×(W/2+1), complex
            f = torch.cat([spectrum.real, spectrum.imag], dim=1)
            f = self.act(self.bn(self.conv(f.to(self.conv.weight.dtype))))
            real, imag = f.to(x.dtype).chunk(2, dim=1)
            y = torch.fft.irfft2(torch.complex(real.contiguous(), imag.contiguous()), s=(h, w), norm="ortho")
        return y.to(dtype)


class SpectralTransform(nn.Module):
    """The global→global path of an FFC: 1×1 halve, Fourier unit with a skip, 1×1 restore."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True)
        )
        self.fourier = FourierUnit(half)
        self.expand = nn.Conv2d(half, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(x)
        return self.expand(h + self.fourier(h))


class FFC(nn.Module):
    """One fast Fourier convolution layer with BatchNorm and ReLU on each branch.

    ``forward((local, global))`` takes ``N×Cl×H×W`` and ``N×Cg×H×W`` and returns the same shapes:
    ``local' = act(bn(conv_ll(local) + conv_gl(global)))``, ``global' = act(bn(conv_lg(local) + spectral(global)))``.
    """

    def __init__(self, local_channels: int, global_channels: int):
        super().__init__()
        cl, cg = local_channels, global_channels
        self.local_to_local = _conv3(cl, cl)
        self.global_to_local = _conv3(cg, cl)
        self.local_to_global = _conv3(cl, cg)
        self.global_to_global = SpectralTransform(cg)
        self.bn_local = nn.BatchNorm2d(cl)
        self.bn_global = nn.BatchNorm2d(cg)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        xl, xg = x
        yl = self.local_to_local(xl) + self.global_to_local(xg)
        yg = self.local_to_global(xl) + self.global_to_global(xg)
        return self.act(self.bn_local(yl)), self.act(self.bn_global(yg))


class FFCResBlock(nn.Module):
    """Two FFC layers with a residual connection on each branch (LaMa's ``FFCResnetBlock``)."""

    def __init__(self, local_channels: int, global_channels: int):
        super().__init__()
        self.ffc1 = FFC(local_channels, global_channels)
        self.ffc2 = FFC(local_channels, global_channels)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        yl, yg = self.ffc2(self.ffc1(x))
        return x[0] + yl, x[1] + yg


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect", bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _up_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class LamaGenerator(nn.Module):
    """Predicts the hole content of ``x`` given holes ``m``.

    ``forward(x, m)`` takes images ``N×3×H×W`` in [0, 1] and holes ``N×1×H×W`` (1 = fill), ``H`` and ``W``
    multiples of ``config.size_multiple``, and returns the uncomposited prediction ``N×3×H×W`` in [0, 1]
    (sigmoid). Pixels under the hole are never read: the network only sees ``x·(1−m)`` and ``m``. Call
    :func:`composite` to paste it into the known pixels.
    """

    def __init__(self, config: LamaConfig = LamaConfig()):
        super().__init__()
        self.config = config
        widths = (config.stem_width, *config.down_widths)
        self.stem = _conv_bn_relu(4, config.stem_width, config.outer_kernel)
        self.down = nn.ModuleList(_conv_bn_relu(a, b, 3, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.global_channels = config.global_channels
        local = config.down_widths[-1] - self.global_channels
        self.blocks = nn.ModuleList(FFCResBlock(local, self.global_channels) for _ in range(config.blocks))
        self.up = nn.ModuleList(_up_bn_relu(a, b) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Conv2d(config.stem_width, 3, config.outer_kernel, padding=config.outer_kernel // 2,
                              padding_mode="reflect")

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # 1. Known pixels and the mask; stem and downsampling.
        h = self.stem(torch.cat([x * (1.0 - m), m], dim=1))
        for layer in self.down:
            h = layer(h)
        # 2. Split into local and global channels; residual FFC blocks; merge.
        split = h.shape[1] - self.global_channels
        xl, xg = h[:, :split], h[:, split:]
        for block in self.blocks:
            xl, xg = block((xl, xg))
        h = torch.cat([xl, xg], dim=1)
        # 3. Upsampling and the output in [0, 1].
        for layer in self.up:
            h = layer(h)
        return torch.sigmoid(self.head(h))


# ---------------------------------------------------------------------------------------------------------
# Weights


def _is_bn_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def save_lama_weights(net: LamaGenerator, path: str | Path, record: dict | None = None,
                      dtype: torch.dtype = torch.float32) -> None:
    """Write ``net``'s weights (``dtype``: float32 or float16) to safetensors, the config in its metadata.

    BatchNorm's integer batch counters are left out: inference does not use them.
    """
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"weights are stored as float32 or float16, got {dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items() if not _is_bn_counter(k)}
    metadata = {"format": FORMAT, "config": json.dumps(net.config.to_dict())}
    if record is not None:
        metadata["record"] = json.dumps(record)
    save_file(tensors, str(path), metadata=metadata)


def lama_from_tensors(path: str | Path, metadata: dict, tensors: dict[str, torch.Tensor]) -> LamaGenerator:
    """Build a :class:`LamaGenerator` in eval mode, float32, from a safetensors file's metadata and tensors.

    Raises ``ValueError`` naming ``path`` for a missing or invalid config, missing or extra tensors, a tensor of
    the wrong shape, or non-finite / non-floating-point values. float16/bfloat16 tensors are widened to float32.
    """
    name = repr(str(path))
    if metadata.get("format") != FORMAT:
        raise ValueError(f"weights {name} are not of the LaMa-style architecture (format {metadata.get('format')!r})")
    try:
        config = LamaConfig.from_dict(json.loads(metadata["config"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"LaMa-style weights {name} carry an invalid config: {error}") from error
    net = LamaGenerator(config)
    expected = {k: v for k, v in net.state_dict().items() if not _is_bn_counter(k)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(k for k in set(tensors) - set(expected) if not _is_bn_counter(k))
    if missing or unexpected:
        raise ValueError(
            f"LaMa-style weights {name} do not match the architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for key, tensor in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(tensor.shape):
            raise ValueError(
                f"LaMa-style weights {name}: tensor {key!r} has shape {tuple(got.shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
        if not got.is_floating_point() or not torch.isfinite(got).all():
            raise ValueError(f"LaMa-style weights {name}: tensor {key!r} is not finite floating point")
    net.load_state_dict({k: tensors[k].to(torch.float32) for k in expected}, strict=False)
    return net.eval()


def load_lama_weights(path: str | Path) -> LamaGenerator:
    """Build a :class:`LamaGenerator` from a safetensors file written by :func:`save_lama_weights`.

    Raises ``ValueError`` naming ``path`` when the file is not readable safetensors or does not match.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types and OSError for bad bytes
        raise ValueError(f"LaMa-style weights {str(path)!r} are not a readable safetensors file: {error}") from error
    return lama_from_tensors(path, metadata, tensors)
