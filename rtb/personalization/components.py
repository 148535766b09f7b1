"""A Stable-Diffusion-format text-to-image model as its parts, loaded offline, saved, and sampled.

"SD-format" means a diffusers directory (``model_index.json``) holding ``unet`` (a ``UNet2DConditionModel``
whose input channels equal the latent channels: not an inpainting UNet), ``vae`` (``AutoencoderKL``),
``text_encoder`` (``CLIPTextModel``), ``tokenizer`` (``CLIPTokenizer``) and a DDPM-family ``scheduler``,
with safetensors weights: SD 1.x/2.x as published, and the stand-in shipped in ``rtb/weights/standin-t2i``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rtb import storage

# The bundled stand-in (``model="standin"``).
STANDIN = Path(__file__).resolve().parents[1] / "weights" / "standin-t2i"
# Folders an SD-format directory must have.
REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SDComponents:
    """The parts of an SD-format model. The networks are plain torch modules; nothing here is frozen."""

    # Denoiser ε_θ(z_t, t, c): latents N×C×h×w, timesteps N, text states N×L×D → N×C×h×w.
    unet: torch.nn.Module
    # AutoencoderKL: images N×3×H×W in [−1, 1] ↔ latents N×C×H/f×W/f (times ``config.scaling_factor``).
    vae: torch.nn.Module
    # CLIPTextModel: token ids N×L → last hidden states N×L×D.
    text_encoder: torch.nn.Module
    # CLIPTokenizer of the text encoder.
    tokenizer: object
    # The training noise schedule (a ``DDPMScheduler`` built from the model's scheduler config).
    noise_scheduler: object
    # The scheduler the model ships for sampling (DDIM, PNDM, …); saved back as it was.
    sample_scheduler: object
    # Where the model was loaded from (for manifests and messages).
    source: str = ""

    @property
    def image_size(self) -> int:
        """Side of the pictures the model generates (UNet sample size × VAE scale factor)."""
        return self.unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)


def check_sd_format(path: str | Path) -> None:
    """Raise ``ValueError`` naming ``path`` unless it is an SD-format text-to-image directory (see module doc)."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(f"model {str(path)!r} is not SD-format: no model_index.json")
    try:
        entries = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"model {str(path)!r} is not SD-format: model_index.json is not JSON ({error})") from None
    missing = [name for name in REQUIRED if name not in entries or not (path / name).is_dir()]
    if missing:
        raise ValueError(f"model {str(path)!r} is not SD-format: missing {', '.join(missing)}")
    for name in ("unet", "vae", "text_encoder"):
        if not any(f.suffix == ".safetensors" for f in (path / name).iterdir()):
            raise ValueError(f"model {str(path)!r} is not SD-format: {name}/ has no safetensors weights")
    unet = json.loads((path / "unet" / "config.json").read_text())
    vae = json.loads((path / "vae" / "config.json").read_text())
    if unet.get("in_channels") != vae.get("latent_channels"):
        raise ValueError(f"model {str(path)!r} is not SD-format text-to-image: its UNet takes "
                         f"{unet.get('in_channels')} channels, its VAE makes {vae.get('latent_channels')}")


def load_components(model: str | Path = "standin", storage_options: dict | None = None,
                    device: str | torch.device = "cpu") -> SDComponents:
    """Load an SD-format model offline (safetensors only) through diffusers' and transformers' loaders.

    Args:
        model: ``"standin"`` (the bundled stand-in), a local directory, or an fsspec URI of one (copied into
            the rtb cache first, ``$RTB_CACHE``).
        storage_options: fsspec options for a remote ``model``.
        device: where the networks go (float32).
    Raises:
        ValueError naming ``model`` when it does not exist or is not SD-format.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    # 1. Check inputs
    source = str(STANDIN if str(model) == "standin" else model)
    path = storage.fetch_to_cache(source, storage_options=storage_options)
    check_sd_format(path)
    # 2. Load offline
    with storage.offline_hub():
        pipe = StableDiffusionPipeline.from_pretrained(
            path, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            local_files_only=True, use_safetensors=True)
    # 3. Split into parts
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.to(device).eval()
    return SDComponents(
        unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config), sample_scheduler=pipe.scheduler,
        source=source)


def copy_components(components: SDComponents) -> SDComponents:
    """A deep copy of the networks (the tokenizer and schedulers are shared: they hold no trained state)."""
    return SDComponents(
        unet=copy.deepcopy(components.unet), vae=copy.deepcopy(components.vae),
        text_encoder=copy.deepcopy(components.text_encoder), tokenizer=components.tokenizer,
        noise_scheduler=components.noise_scheduler, sample_scheduler=components.sample_scheduler,
        source=components.source)


def pipeline_for(components: SDComponents):
    """A ``StableDiffusionPipeline`` over ``components`` (no copy; no safety checker; progress bar off)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=components.sample_scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_components(components: SDComponents, path: str | Path) -> Path:
    """Write ``components`` as an SD-format diffusers directory (safetensors) at ``path``; returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipeline_for(components).save_pretrained(path, safe_serialization=True)
    return path


@torch.no_grad()
def generate(components: SDComponents, prompts: list[str], seeds: list[int], steps: int = 25,
             guidance: float = 4.0, batch: int = 32) -> torch.Tensor:
    """Sample one picture per (prompt, seed) with the model's DDIM schedule and classifier-free guidance.

    Args:
        prompts: one prompt per picture.
        seeds: one seed per picture (the initial latents come from ``torch.Generator().manual_seed(seed)``,
            so the same seed gives the same starting noise on any model of the same latent shape).
        steps: DDIM steps. guidance: classifier-free guidance scale.
    Returns:
        N×3×S×S float tensor in [0, 1] on the CPU (S = ``components.image_size``).
    """
    from diffusers import DDIMScheduler

    if len(prompts) != len(seeds):
        raise ValueError(f"need one seed per prompt; got {len(prompts)} prompts and {len(seeds)} seeds")
    pipe = pipeline_for(components)
    pipe.scheduler = DDIMScheduler.from_config(components.sample_scheduler.config)
    device = components.unet.device
    images = []
    for start in range(0, len(prompts), batch):
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds[start:start + batch]]
        shape = (components.unet.config.in_channels, components.unet.config.sample_size,
                 components.unet.config.sample_size)
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
        out = pipe(prompt=list(prompts[start:start + batch]), num_inference_steps=steps, guidance_scale=guidance,
                   latents=latents, output_type="pt")
        images.append(out.images.float().cpu().clamp(0, 1))
    return torch.cat(images)
