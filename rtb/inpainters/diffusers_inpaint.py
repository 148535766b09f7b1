"""Stable Diffusion inpainting (diffusers) as an :class:`~rtb.inpainters.base.Inpainter`.

Loads a local ``save_pretrained`` directory of ``StableDiffusionInpaintPipeline`` (SD 1.x / 2.x inpainting,
9-channel UNet) or, best effort, ``StableDiffusionXLInpaintPipeline``. Only safetensors weights are read,
nothing is fetched from a hub, no remote code runs, and the safety checker is not loaded.

What the model sees
    Exactly what the pipeline feeds its UNet: the noisy latent, the hole binarised at 0.5 and resized to
    latent resolution (nearest), and the VAE latent of the *masked image* ``x·(1 − m)`` (hole set to 0 in
    [−1, 1], i.e. gray). The pixels inside the hole therefore never reach the network: the gradient of every
    surrogate with respect to them is exactly zero, and all that a perturbation can act through is the context.
    The VAE posterior is used through its mean (deterministic); the pipeline samples it, but SD's posterior
    standard deviation is tiny.

SDXL (best effort, tested on a tiny random SDXL pipeline only): the pooled embedding and the six
micro-conditioning time ids (original size = crop target = the working size, crop at 0, 0) are passed to
the UNet; in fp16 the VAE is kept in fp32, as SDXL's ``force_upcast`` asks.

Conditioning
    The empty prompt, encoded once at load time and cached. The surrogates run without classifier-free
    guidance (one UNet pass per step instead of two). For SD 1.x/2.x this is no approximation at all: the
    unconditional branch of the pipeline also encodes the empty prompt, so with an empty prompt CFG at any
    scale returns the conditional prediction. (SDXL zeroes its negative embeddings, so there it is one.)

Surrogates (``surrogate=`` at load; all three are also callable by name, see :meth:`DiffusersInpainter.x0`,
:meth:`DiffusersInpainter.unrolled`)
    ``"latent-x0"`` (default, cheapest): one UNet call at a timestep ``t`` drawn per sample uniformly from
        ``TIMESTEP_RANGE`` of the training schedule. The noisy latent is
        ``z_t = √ᾱ_t · z_ctx + √(1 − ᾱ_t) · ε`` where ``z_ctx`` is the masked-image latent (what an attacker's
        sampler knows of the image). The UNet output is turned into the clean-latent prediction ``x̂0``
        (epsilon, v or sample parameterisation, from the scheduler config). Output: ``N×4×H/8×W/8`` latents
        (VAE-scaled), composited as ``w·x̂0 + (1 − w)·z_ctx`` with ``w`` = :meth:`mask_to_loss_space`
        (the fraction of each 8×8 cell inside the hole). :meth:`to_loss_space` maps images to the scaled VAE
        latent mean, so targets are compared in latent space — no VAE decoder in the graph.
    ``"pixel-x0"``: the same ``x̂0``, decoded by the VAE to pixels and composited with ``x``
        (loss space = pixels; ``to_loss_space`` and ``mask_to_loss_space`` are identities).
    ``"unrolled"``: the whole sampler, PhotoGuard style: ``unroll_steps`` (default 4) deterministic DDIM
        steps (η = 0, the scheduler's own timestep spacing) from the noise ``z_T = ε``, each step wrapped in
        ``torch.utils.checkpoint`` so memory grows with one UNet activation set, not ``K``; the final latent
        is decoded and composited in pixels. Most faithful to the real edit and ``K``× the cost.

Randomness: :meth:`DiffusersInpainter.sample_noise` draws ``{"timestep": LongTensor[N], "noise": N×4×h×w}``,
sample ``i`` only from ``generators[i]`` (``"unrolled"`` ignores ``timestep``).

Speed options (``load_diffusers(..., channels_last=, compile=, gradient_checkpointing=, attention=)``)
    They change how fast and in how much memory the surrogates run, never what they compute (beyond float
    rounding), so they enter neither a config hash nor the fingerprint. ``channels_last`` keeps the UNet, the
    VAE and their inputs in the channels-last layout; ``compile`` runs the surrogates' UNet and VAE-encoder calls
    through :func:`rtb.inpainters.speed.compile_with_fallback` (eager when compiling fails; the VAE decoder
    stays eager: compiled, its input gradient came out all zero on torch 2.13's CPU inductor);
    ``gradient_checkpointing`` checkpoints the UNet's and the VAE's blocks (recomputed in the backward pass:
    less memory, more compute; it matters most for ``"unrolled"``); ``attention`` is ``"sdpa"`` (diffusers'
    default ``AttnProcessor2_0``, ``F.scaled_dot_product_attention``) or ``"classic"`` (``AttnProcessor``,
    explicit softmax(QKᵀ)V). The real edit (:meth:`DiffusersInpainter.edit`) runs the pipeline's own modules,
    so it sees the layout, checkpointing and attention choice but not the compiled calls. Whatever ``dtype``
    the network computes in, inputs and outputs keep the caller's dtype: the optimizers keep δ, Adam's state
    and the projection in float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from rtb.inpainters.speed import channels_last as to_channels_last
from rtb.inpainters.speed import compile_with_fallback
from rtb import storage
from rtb.storage import fingerprint as weights_fingerprint

SURROGATES = ("latent-x0", "pixel-x0", "unrolled")
# Fractions of the training schedule (num_train_timesteps) between which x0 surrogates draw t.
TIMESTEP_RANGE = (0.02, 0.98)
# Pipeline classes this backend loads (the class name recorded in model_index.json).
PIPELINES = ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline")
# Real-edit defaults of the diffusers pipelines.
EDIT_STEPS = 50
EDIT_GUIDANCE = 7.5
# Attention implementations of the `attention` option: diffusers' AttnProcessor2_0 (SDPA) or AttnProcessor.
ATTENTION = ("sdpa", "classic")


def check_speed_options(channels_last, compile, gradient_checkpointing, attention) -> None:
    """Raise ``ValueError`` naming the bad value when a speed option is not a bool / a known attention."""
    for key, value in (
        ("channels_last", channels_last), ("compile", compile), ("gradient_checkpointing", gradient_checkpointing)
    ):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be True or False, got {value!r}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION)}; got {attention!r}")


class _UNetOutput(nn.Module):
    """The UNet's output tensor: a module that returns a tensor, as ``compile_with_fallback`` needs."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None) -> torch.Tensor:
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )[0]


class _VaeMean(nn.Module):
    """Images in [−1, 1] ``N×3×H×W`` → the VAE posterior mean ``N×4×H/8×W/8`` (unscaled)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mean


class _VaeDecode(nn.Module):
    """Unscaled latents ``N×4×h×w`` → images in about [−1, 1] ``N×3×8h×8w``."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


# Components whose weights are loaded (the safety checker and image encoder are not).
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _check_safetensors(path: Path) -> None:
    """Raise ``ValueError`` when a loaded component's folder holds pickled ``.bin`` weights but no safetensors."""
    for folder in (path / name for name in WEIGHT_COMPONENTS):
        if not folder.is_dir():
            continue
        names = [f.name for f in folder.iterdir() if f.is_file()]
        has_bin = any(n.endswith(".bin") for n in names)
        has_safe = any(n.endswith(".safetensors") for n in names)
        if has_bin and not has_safe:
            raise ValueError(
                f"model component {str(folder)!r} has only pickled .bin weights; rtb loads safetensors only "
                "(re-save the pipeline with save_pretrained(..., safe_serialization=True))"
            )


class DiffusersInpainter:
    """A loaded SD-inpainting pipeline with differentiable surrogates. Build it with :func:`load_diffusers`.

    Attributes follow :class:`~rtb.inpainters.base.Inpainter`; in addition ``surrogate_mode`` (one of
    ``SURROGATES``), ``unroll_steps``, ``pipe`` (the diffusers pipeline, frozen, eval mode) and the speed
    options ``channels_last``, ``compile``, ``gradient_checkpointing`` and ``attention`` (module docstring).
    """

    has_vae = True

    def __init__(
        self,
        pipe,
        *,
        name: str,
        fingerprint: str,
        surrogate: str = "latent-x0",
        unroll_steps: int = 4,
        channels_last: bool = False,
        compile: bool = False,
        gradient_checkpointing: bool = False,
        attention: str = "sdpa",
    ) -> None:
        from diffusers import DDIMScheduler

        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {surrogate!r}")
        if not (isinstance(unroll_steps, int) and unroll_steps >= 1):
            raise ValueError(f"unroll_steps must be a positive integer, got {unroll_steps!r}")
        check_speed_options(channels_last, compile, gradient_checkpointing, attention)
        self.pipe = pipe
        self.name = name
        self.fingerprint = fingerprint
        self.surrogate_mode = surrogate
        self.unroll_steps = unroll_steps
        self.device = pipe.unet.device
        self.dtype = pipe.unet.dtype
        self.is_xl = type(pipe).__name__ == "StableDiffusionXLInpaintPipeline"
        # SDXL's VAE overflows in fp16 (its config says force_upcast): keep it in fp32 for the surrogates.
        self.vae_fp32 = self.is_xl and self.dtype == torch.float16 and bool(pipe.vae.config.force_upcast)
        if self.vae_fp32:
            pipe.vae.to(torch.float32)
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.size_multiple = self.vae_scale
        sample_size = pipe.unet.config.sample_size
        self.native_size = int(sample_size if isinstance(sample_size, int) else sample_size[0]) * self.vae_scale
        self.latent_channels = pipe.vae.config.latent_channels
        self.scaling_factor = float(pipe.vae.config.scaling_factor)
        # A DDIM view of the model's noise schedule: ᾱ_t for the x0 formulas and the unrolled sampler.
        self._ddim = DDIMScheduler.from_config(pipe.scheduler.config)
        self.num_train_timesteps = int(self._ddim.config.num_train_timesteps)
        self.prediction_type = self._ddim.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r} in {name!r}")
        self._alphas = self._ddim.alphas_cumprod.to(self.device, torch.float32)
        self._final_alpha = float(self._ddim.final_alpha_cumprod)
        self._encode_empty_prompt()
        self._set_speed_options(channels_last, compile, gradient_checkpointing, attention)

    def _set_speed_options(self, channels_last: bool, compile: bool, gradient_checkpointing: bool,
                           attention: str) -> None:
        """Apply the speed options (module docstring) and build the surrogates' UNet / VAE calls."""
        from diffusers.models.attention_processor import AttnProcessor

        self.channels_last, self.compile = channels_last, compile
        self.gradient_checkpointing, self.attention = gradient_checkpointing, attention
        networks = (self.pipe.unet, self.pipe.vae)
        for network in networks:
            if attention == "classic":
                network.set_attn_processor(AttnProcessor())
            if channels_last:
                network.to(memory_format=torch.channels_last)
            if gradient_checkpointing:
                network.enable_gradient_checkpointing()
        calls = {"unet": _UNetOutput(self.pipe.unet), "vae-encoder": _VaeMean(self.pipe.vae),
                 "vae-decoder": _VaeDecode(self.pipe.vae)}
        if compile:
            # Not the VAE decoder: compiled (inductor, torch 2.13, CPU) its up blocks returned an all-zero
            # input gradient while the forward matched, which would silently stop the pixel surrogates.
            for key in ("unet", "vae-encoder"):
                calls[key] = compile_with_fallback(calls[key], name=f"{self.name} {key}")
        self._unet, self._vae_mean, self._vae_decode = calls["unet"], calls["vae-encoder"], calls["vae-decoder"]
        # Input signatures of the unrolled sampler's compiled UNet call already probed (see `unrolled`).
        self._warm_unrolled: set[tuple] = set()

    def _layout(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` in the networks' memory layout (channels-last when that option is on)."""
        if not self.channels_last:
            return tensor
        return to_channels_last(tensor)

    # ---------------------------------------------------------------- conditioning

    @torch.no_grad()
    def _encode_empty_prompt(self) -> None:
        """Cache the empty-prompt embeddings (and SDXL's pooled embedding) used by every surrogate call."""
        pipe = self.pipe
        if self.is_xl:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt="", device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            self._pooled = pooled.to(self.dtype)
        else:
            embeds, _ = pipe.encode_prompt(
                "", self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            self._pooled = None
        self._prompt_embeds = embeds.to(self.dtype)

    def _unet_kwargs(self, n: int, height: int, width: int) -> dict:
        """Cross-attention (and SDXL micro-conditioning) inputs for a batch of ``n`` images of H×W."""
        kwargs = {"encoder_hidden_states": self._prompt_embeds.expand(n, -1, -1)}
        if self.is_xl:
            if self.pipe.config.requires_aesthetics_score:
                ids = [height, width, 0, 0, 6.0]
            else:
                ids = [height, width, 0, 0, height, width]
            time_ids = torch.tensor([ids], device=self.device, dtype=self.dtype).expand(n, -1)
            kwargs["added_cond_kwargs"] = {"text_embeds": self._pooled.expand(n, -1), "time_ids": time_ids}
        return kwargs

    # ---------------------------------------------------------------- checks and VAE

    def check_inputs(self, x: torch.Tensor, m: torch.Tensor | None = None) -> None:
        """Raise ``ValueError`` naming the bad shape when ``x`` (N×3×H×W) or ``m`` (N×1×H×W) do not fit."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be an N×3×H×W tensor, got shape {tuple(getattr(x, 'shape', ()))!r}")
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"image size {height}×{width} is not a multiple of {self.size_multiple} for {self.name!r}"
            )
        if m is not None:
            if not isinstance(m, torch.Tensor) or tuple(m.shape) != (x.shape[0], 1, height, width):
                raise ValueError(
                    f"m must have shape {(x.shape[0], 1, height, width)!r} to match x, "
                    f"got {tuple(getattr(m, 'shape', ()))!r}"
                )

    def _vae_dtype(self) -> torch.dtype:
        return next(self.pipe.vae.parameters()).dtype

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean of images, scaled as the UNet sees it (differentiable).

        Args:
            x: ``N×3×H×W`` in [0, 1].
        Returns:
            ``N×4×H/8×W/8`` latents (``scaling_factor · mean``), in ``x``'s dtype.
        """
        self.check_inputs(x)
        return self._encode(2 * x - 1).to(x.dtype)

    def _encode(self, x_signed: torch.Tensor) -> torch.Tensor:
        """Scaled VAE mean of images in [−1, 1]; returns the compute dtype."""
        mean = self._vae_mean(self._layout(x_signed.to(self._vae_dtype())))
        return (mean * self.scaling_factor).to(self.dtype)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images in [0, 1] (float32)."""
        image = self._vae_decode(self._layout(latents.to(self._vae_dtype()) / self.scaling_factor))
        return ((image.float() + 1) / 2).clamp(0, 1)

    def _context(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's conditioning: (hole at latent size, nearest; masked-image latents).

        As in ``StableDiffusionInpaintPipeline``: the mask is binarised at 0.5, the masked image is the
        [−1, 1] image with the hole zeroed.
        """
        hole = (m >= 0.5).to(x.dtype)
        masked = (2 * x - 1) * (1 - hole)
        size = (x.shape[-2] // self.vae_scale, x.shape[-1] // self.vae_scale)
        mask_latent = F.interpolate(hole, size=size).to(self.dtype)
        return mask_latent, self._encode(masked)

    # ---------------------------------------------------------------- randomness

    def sample_noise(self, generators: list[torch.Generator], height: int, width: int) -> dict[str, torch.Tensor]:
        """Per-sample surrogate randomness; sample ``i`` is drawn only from ``generators[i]``.

        Returns:
            ``{"timestep": LongTensor[N], "noise": float32 N×4×height/8×width/8}`` on :attr:`device`.
        """
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"noise size {height}×{width} is not a multiple of {self.size_multiple}")
        if len(generators) == 0:
            raise ValueError("sample_noise needs one generator per sample, got an empty list")
        low = int(TIMESTEP_RANGE[0] * self.num_train_timesteps)
        high = int(TIMESTEP_RANGE[1] * self.num_train_timesteps)
        shape = (self.latent_channels, height // self.vae_scale, width // self.vae_scale)
        timesteps, noises = [], []
        for generator in generators:
            timesteps.append(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))
            noises.append(torch.randn(shape, generator=generator, device=generator.device))
        return {
            "timestep": torch.cat(timesteps).to(self.device),
            "noise": torch.stack(noises).to(self.device),
        }

    def _noise_for(self, x: torch.Tensor, noise: dict | None) -> dict[str, torch.Tensor]:
        if noise is None:
            generators = [torch.Generator().manual_seed(0) for _ in range(x.shape[0])]
            noise = self.sample_noise(generators, x.shape[-2], x.shape[-1])
        expected = (x.shape[0], self.latent_channels, x.shape[-2] // self.vae_scale, x.shape[-1] // self.vae_scale)
        if tuple(noise["noise"].shape) != expected or tuple(noise["timestep"].shape) != (x.shape[0],):
            raise ValueError(
                f"noise does not match the batch: noise {tuple(noise['noise'].shape)!r} "
                f"(expected {expected!r}), timestep {tuple(noise['timestep'].shape)!r}"
            )
        return noise

    # ---------------------------------------------------------------- denoiser

    def _predict(
        self, z_t: torch.Tensor, t: torch.Tensor, mask_latent: torch.Tensor, masked_latent: torch.Tensor, kwargs: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One UNet call → (x̂0, ε̂), both in the compute dtype. ``t``: LongTensor[N]."""
        model_input = self._layout(torch.cat([z_t, mask_latent, masked_latent], dim=1).to(self.dtype))
        out = self._unet(model_input, t, **kwargs).float()
        alpha = self._alphas[t].view(-1, 1, 1, 1)
        z = z_t.float()
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (z - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        elif self.prediction_type == "v_prediction":
            x0 = alpha.sqrt() * z - (1 - alpha).sqrt() * out
            eps = alpha.sqrt() * out + (1 - alpha).sqrt() * z
        else:
            x0 = out
            eps = (z - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        return x0.to(self.dtype), eps.to(self.dtype)

    def x0(self, x: torch.Tensor, m: torch.Tensor, noise: dict | None = None, *, decode: bool = False):
        """One-step clean-latent prediction (the ``"latent-x0"`` / ``"pixel-x0"`` surrogates).

        Args:
            x: ``N×3×H×W`` in [0, 1]; m: ``N×1×H×W`` holes; noise: from :meth:`sample_noise`.
            decode: False → composited latents ``N×4×H/8×W/8``; True → composited pixels ``N×3×H×W``.
        Returns:
            A tensor in ``x``'s dtype.
        """
        # 1. Check inputs and get this batch's randomness
        self.check_inputs(x, m)
        noise = self._noise_for(x, noise)
        # 2. Conditioning exactly as the pipeline builds it
        mask_latent, masked_latent = self._context(x, m)
        # 3. Noise the context latent to the drawn timestep
        t = noise["timestep"].to(self.device, torch.long)
        alpha = self._alphas[t].view(-1, 1, 1, 1)
        z_t = alpha.sqrt() * masked_latent.float() + (1 - alpha).sqrt() * noise["noise"].float()
        # 4. Predict x0 and composite
        x0, _ = self._predict(z_t, t, mask_latent, masked_latent, self._unet_kwargs(*x.shape[:1], *x.shape[-2:]))
        if decode:
            return (m * self._decode(x0) + (1 - m) * x.float()).to(x.dtype)
        weight = self.mask_to_loss_space(m).float()
        return (weight * x0.float() + (1 - weight) * masked_latent.float()).to(x.dtype)

    def unrolled(
        self, x: torch.Tensor, m: torch.Tensor, noise: dict | None = None, *, steps: int | None = None
    ) -> torch.Tensor:
        """The ``"unrolled"`` surrogate: a differentiable K-step DDIM edit, decoded and composited.

        Args:
            x: ``N×3×H×W`` in [0, 1]; m: ``N×1×H×W`` holes; noise: from :meth:`sample_noise` (its ``noise``
                is the starting latent z_T); steps: K, default :attr:`unroll_steps`.
        Returns:
            ``N×3×H×W`` in [0, 1], equal to ``x`` outside the hole, in ``x``'s dtype.
        """
        # 1. Check inputs
        self.check_inputs(x, m)
        steps = self.unroll_steps if steps is None else steps
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"unrolled steps must be a positive integer, got {steps!r}")
        noise = self._noise_for(x, noise)
        # 2. Conditioning and the DDIM timestep grid
        mask_latent, masked_latent = self._context(x, m)
        kwargs = self._unet_kwargs(x.shape[0], *x.shape[-2:])
        self._ddim.set_timesteps(steps)
        timesteps = [int(t) for t in self._ddim.timesteps]
        stride = self.num_train_timesteps // steps

        # 3. Denoising loop, one checkpointed segment per step (recomputed in the backward pass)
        def ddim_step(z, masked, t, alpha_prev):
            t_batch = torch.full((z.shape[0],), t, device=self.device, dtype=torch.long)
            x0, eps = self._predict(z, t_batch, mask_latent, masked, kwargs)
            return (alpha_prev**0.5 * x0.float() + (1 - alpha_prev) ** 0.5 * eps.float()).to(self.dtype)

        z = (noise["noise"] * self._ddim.init_noise_sigma).to(self.dtype)
        warm_key = (tuple(z.shape), masked_latent.dtype, masked_latent.requires_grad)
        if self.compile and torch.is_grad_enabled() and warm_key not in self._warm_unrolled:
            # compile_with_fallback probes each new input signature with a forward and a backward. Inside a
            # checkpointed segment that probe would be saved but not recomputed (checkpoint then refuses
            # the backward), so the first step of each signature runs once here, outside any checkpoint.
            ddim_step(z, masked_latent, timesteps[0], self._final_alpha)
            self._warm_unrolled.add(warm_key)
        for t in timesteps:
            previous = t - stride
            alpha_prev = float(self._alphas[previous]) if previous >= 0 else self._final_alpha
            if torch.is_grad_enabled():
                z = checkpoint(ddim_step, z, masked_latent, t, alpha_prev, use_reentrant=False)
            else:
                z = ddim_step(z, masked_latent, t, alpha_prev)
        # 4. Decode and composite
        return (m * self._decode(z) + (1 - m) * x.float()).to(x.dtype)

    # ---------------------------------------------------------------- Inpainter protocol

    def surrogate(self, x: torch.Tensor, m: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
        """The surrogate chosen at load (see the module docstring); ``noise`` from :meth:`sample_noise`.

        ``noise=None`` draws from generators seeded 0 (for quick checks; optimizers pass their own).
        """
        if self.surrogate_mode == "latent-x0":
            return self.x0(x, m, noise)
        if self.surrogate_mode == "pixel-x0":
            return self.x0(x, m, noise, decode=True)
        return self.unrolled(x, m, noise)

    def to_loss_space(self, images: torch.Tensor) -> torch.Tensor:
        """Latent modes: the scaled VAE latent mean ``N×4×H/8×W/8``; pixel modes: the images unchanged."""
        if self.surrogate_mode == "latent-x0":
            return self.encode_latents(images)
        return images

    def mask_to_loss_space(self, m: torch.Tensor) -> torch.Tensor:
        """Latent modes: the fraction of each latent cell inside the hole (``N×1×H/8×W/8``); else ``m``."""
        if self.surrogate_mode == "latent-x0":
            return F.avg_pool2d(m, self.vae_scale)
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
        """The real diffusers pipeline, as an attacker runs it, composited so that outside the hole it is ``x``.

        Every image gets its own generator seeded with ``seed``, so an image edits the same alone or in a batch.
        Defaults: 50 steps, guidance 7.5 (the pipeline's own).
        Returns:
            ``N×3×H×W`` in [0, 1], ``x``'s dtype.
        """
        # 1. Check inputs
        self.check_inputs(x, m)
        if steps is not None and not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        # 2. Run the pipeline
        n, _, height, width = x.shape
        generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for _ in range(n)]
        result = self.pipe(
            prompt=[prompt] * n,
            image=x.float().clamp(0, 1),
            mask_image=m.float(),
            height=height,
            width=width,
            num_inference_steps=steps or EDIT_STEPS,
            guidance_scale=EDIT_GUIDANCE if guidance is None else guidance,
            generator=generators,
            output_type="pt",
        ).images
        # 3. The SDXL pipeline moves its VAE between dtypes while it runs; put back the fp32 one kept at load.
        if self.vae_fp32:
            self.pipe.vae.to(torch.float32)
        # 4. Composite
        result = result.to(x.device, torch.float32)
        return (m * result + (1 - m) * x.float()).to(x.dtype)


def load_diffusers(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    surrogate: str = "latent-x0",
    unroll_steps: int = 4,
    name: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
    gradient_checkpointing: bool = False,
    attention: str = "sdpa",
) -> DiffusersInpainter:
    """Load a local SD-inpainting pipeline directory (``save_pretrained`` layout, safetensors only).

    Args:
        path: directory holding ``model_index.json`` (fetch remote URIs with ``rtb.storage.fetch_to_cache``).
        device: default ``cuda`` when available, else ``cpu``.
        dtype: default ``float16`` on CUDA, ``float32`` on CPU; ``bfloat16`` is accepted.
        surrogate: one of ``SURROGATES`` (see the module docstring).
        unroll_steps: K of the ``"unrolled"`` surrogate.
        name: display name; default ``"diffusers:<path>"``.
        channels_last: keep the UNet, the VAE and their inputs channels-last.
        compile: run the surrogates' UNet and VAE-encoder calls through ``torch.compile`` (eager where it fails).
        gradient_checkpointing: checkpoint the UNet's and the VAE's blocks (less memory, more compute).
        attention: ``"sdpa"`` (diffusers' default ``AttnProcessor2_0``) or ``"classic"`` (``AttnProcessor``).
    Raises:
        ValueError naming the path or value: missing directory/index, unknown pipeline class, pickled-only
        weights, a UNet that is not a 9-channel inpainting UNet, a bad option.
    """
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    # 1. Check inputs
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{str(path)!r} is not a diffusers pipeline directory (no model_index.json)")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {surrogate!r}")
    check_speed_options(channels_last, compile, gradient_checkpointing, attention)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    class_name = json.loads(index.read_text()).get("_class_name")
    if class_name not in PIPELINES:
        raise ValueError(f"{str(path)!r} holds a {class_name!r}; expected one of {', '.join(PIPELINES)}")
    _check_safetensors(path)

    # 2. Load offline, from safetensors only, without the safety checker
    # Newer diffusers renamed torch_dtype to dtype (the old name still works, with a warning).
    from diffusers.utils import deprecation_utils

    dtype_key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    options = {"local_files_only": True, "use_safetensors": True, dtype_key: dtype}
    with storage.offline_hub():
        if class_name == "StableDiffusionXLInpaintPipeline":
            pipe = StableDiffusionXLInpaintPipeline.from_pretrained(path, **options)
        else:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                path, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **options
            )
    if pipe.unet.config.in_channels != 9:
        raise ValueError(
            f"{str(path)!r} has a UNet with {pipe.unet.config.in_channels} input channels; "
            "an inpainting UNet has 9 (latents, mask, masked-image latents)"
        )

    # 3. Freeze, move, quiet
    pipe.to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.eval()
            module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return DiffusersInpainter(
        pipe,
        name=name or f"diffusers:{path}",
        fingerprint=weights_fingerprint(path),
        surrogate=surrogate,
        unroll_steps=unroll_steps,
        channels_last=channels_last,
        compile=compile,
        gradient_checkpointing=gradient_checkpointing,
        attention=attention,
    )
