"""The reference inpainter backends: the in-repo networks of :mod:`rtb.reference`.

Two architectures behind one loader, told apart by the ``format`` key of the safetensors metadata:

- ``"rtb-reference"`` (or no format key): the MSE-trained push-pull U-Net, ``model="reference"``;
- ``"rtb-lama"``: the LaMa-style FFC generator trained with adversarial losses, ``model="reference-gan"``.

Both are single-forward inpainters: deterministic, differentiable in the image, computing in pixels, so their
loss space is the image itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from rtb.reference.lama import FORMAT as LAMA_FORMAT
from rtb.reference.lama import LamaGenerator, load_lama_weights
from rtb.inpainters.speed import channels_last as to_channels_last
from rtb.inpainters.speed import compile_with_fallback
from rtb.reference.model import ReferenceNet, composite, load_weights
from rtb.storage import fetch_to_cache, fingerprint

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# The weights shipped inside the package (trained by ``python -m rtb_train.reference``).
PACKAGED_WEIGHTS = WEIGHTS_DIR / "reference.safetensors"
# The GAN-trained LaMa-style candidate (``python -m rtb_train.lama_gan``, on a GPU).
PACKAGED_GAN_WEIGHTS = WEIGHTS_DIR / "reference-gan.safetensors"
REFERENCE_FORMAT = "rtb-reference"
GAN_TRAINING_HINT = (
    "train them on a GPU with `python -m rtb_train.lama_gan --seed 0 --device cuda "
    "--output rtb/weights/reference-gan.safetensors --checkpoint-dir out/reference-gan-ckpt` "
    "(see docs/reference-model.md, 'The LaMa-style GAN candidate')"
)


def weights_format(path: str | Path) -> str:
    """The architecture of a safetensors weights file: ``"rtb-reference"`` or ``"rtb-lama"``.

    Raises ``ValueError`` naming ``path`` when it is not readable safetensors or names another architecture.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types and OSError for bad bytes
        raise ValueError(f"reference weights {str(path)!r} are not a readable safetensors file: {error}") from error
    found = metadata.get("format", REFERENCE_FORMAT)
    if found not in (REFERENCE_FORMAT, LAMA_FORMAT):
        raise ValueError(f"weights {str(path)!r} are of an unknown architecture {found!r} "
                         f"(expected {REFERENCE_FORMAT!r} or {LAMA_FORMAT!r})")
    return found


def load_network(path: str | Path) -> nn.Module:
    """The network of a local safetensors file, of either architecture, float32, in eval mode."""
    if weights_format(path) == LAMA_FORMAT:
        return load_lama_weights(path)
    return load_weights(path)


class ReferenceInpainter:
    """Satisfies :class:`rtb.inpainters.base.Inpainter` with a :class:`ReferenceNet` or a :class:`LamaGenerator`.

    ``surrogate(x, m)`` and ``edit(x, m)`` take images ``N×3×H×W`` in [0, 1] and holes ``N×1×H×W``
    (1 = fill), ``H`` and ``W`` multiples of ``size_multiple`` (16 for ``reference``, 8 for the default
    ``reference-gan``), and return ``x·(1−m) + net(x·(1−m), m)·m`` with the prediction clamped to [0, 1], in the
    dtype of ``x``. Name ``"reference"`` or ``"reference-gan"`` after the architecture.

    Speed options (results equal up to float rounding): ``channels_last`` stores the weights and feeds the
    inputs in the channels-last layout (``None``: on CPU, where it measured faster, see docs/benchmarks.md);
    ``compile`` runs the network through ``torch.compile`` with an eager fallback
    (:func:`rtb.inpainters.speed.compile_with_fallback`).
    """

    name = "reference"
    size_multiple = 16
    native_size = 256
    has_vae = False

    def __init__(self, net: ReferenceNet | LamaGenerator, fingerprint: str, device: torch.device, dtype: torch.dtype,
                 *, channels_last: bool | None = None, compile: bool = False):
        for option, value in (("channels_last", channels_last), ("compile", compile)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{option} must be True or False, got {value!r}")
        self.channels_last = device.type == "cpu" if channels_last is None else channels_last
        self.net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.fingerprint = fingerprint
        self.device = device
        self.dtype = dtype
        self.size_multiple = net.config.size_multiple
        self.name = "reference-gan" if isinstance(net, LamaGenerator) else "reference"
        # What runs the network: the module itself, or its compiled form with an eager fallback.
        self.forward = compile_with_fallback(self.net, name=self.name) if compile else self.net

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
        if self.channels_last:
            xc, mc = to_channels_last(xc), to_channels_last(mc)
        return composite(xc, mc, self.forward(xc, mc)).to(x.dtype).contiguous()

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
    channels_last: bool | None = None,
    compile: bool = False,
) -> ReferenceInpainter:
    """Load a reference inpainter of either architecture (read from the file's metadata).

    Args:
        weights: a safetensors file (local path or any fsspec URI); ``None`` loads the packaged ``reference``.
        device: where to run (default CUDA when available, else CPU).
        dtype: ``torch.float32`` (also for ``None``) or ``torch.float64``; float16-stored weights are widened.
        channels_last: channels-last weights and inputs (``None``: on CPU); speed only.
        compile: run the network through ``torch.compile``, eager where compiling fails; speed only.

    Raises:
        ValueError: naming the file when it is missing, not safetensors (truncated, garbage bytes), names an
            unknown architecture, or does not match its architecture (config, tensor names or shapes); or for
            an unsupported dtype.
    """
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"reference inpainter computes in float32 or float64, got {dtype}")
    path = fetch_to_cache(str(weights if weights is not None else PACKAGED_WEIGHTS))
    if not path.is_file():
        raise ValueError(f"reference weights {str(path)!r} are not a file")
    net = load_network(path)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    return ReferenceInpainter(net, fingerprint(path), device, dtype, channels_last=channels_last, compile=compile)


def load_reference_gan(
    weights: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = torch.float32,
    **speed_options,
) -> ReferenceInpainter:
    """Load the LaMa-style GAN inpainter (``model="reference-gan"``): the packaged weights by default.

    Raises:
        ValueError: when the packaged weights are not there (they are trained on a GPU; the message says how),
            when the file is not of the LaMa-style architecture, and for every error of :func:`load_reference`.
    """
    if weights is None:
        if not PACKAGED_GAN_WEIGHTS.is_file():
            raise ValueError(f"reference-gan weights {str(PACKAGED_GAN_WEIGHTS)!r} are missing (not trained yet): "
                             + GAN_TRAINING_HINT)
        weights = PACKAGED_GAN_WEIGHTS
    inpainter = load_reference(weights, device=device, dtype=dtype, **speed_options)
    if inpainter.name != "reference-gan":
        raise ValueError(f"weights {str(weights)!r} are not of the LaMa-style (reference-gan) architecture")
    return inpainter
