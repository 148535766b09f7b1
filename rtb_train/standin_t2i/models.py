"""The stand-in's architectures: SD's component classes (KL autoencoder, cross-attention UNet, CLIP text
encoder, DDPM schedule) at a size a CPU trains in two hours. Candidates are named; every one that was trained
is recorded in docs/persguard.md's model card."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtb_train.standin_t2i.domain import SIZE
from rtb_train.standin_t2i.tokenizer import MAX_LENGTH


def _unet(channels: tuple[int, ...], layers: int, width: int) -> dict:
    return dict(
        sample_size=SIZE // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=channels,
        layers_per_block=layers,
        cross_attention_dim=width,
        attention_head_dim=8,
        norm_num_groups=16,
    )


@dataclass(frozen=True)
class Architecture:
    """Keyword arguments of each component of the stand-in."""

    # UNet2DConditionModel(**unet): the denoiser on 8×8×4 latents, cross-attention at 8×8 and 4×4.
    unet: dict
    # CLIPTextConfig(**text): the text encoder (ids from the stand-in tokenizer; causal, like CLIP's).
    text: dict
    # AutoencoderKL(**vae): 32×32 RGB ↔ 8×8×4 latents (three levels: scale factor 4, SD's 4 channels; an
    # 8-channel candidate trained for 1,200 steps did worse: docs/persguard.md).
    vae: dict = field(default_factory=lambda: dict(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
    ))
    # DDPMScheduler(**scheduler): SD's training schedule (epsilon prediction, scaled-linear betas).
    scheduler: dict = field(default_factory=lambda: dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    ))


def _text(width: int, layers: int) -> dict:
    from rtb_train.standin_t2i.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def candidates() -> dict[str, Architecture]:
    """The named candidate architectures (built lazily: the text config reads the tokenizer)."""
    return {
        # 3 levels 64/128/128, one res block per level.
        "s64": Architecture(unet=_unet((64, 128, 128), 1, 128), text=_text(128, 4)),
        # Same widths, two res blocks per level (about 1.5× the compute).
        "s64x2": Architecture(unet=_unet((64, 128, 128), 2, 128), text=_text(128, 4)),
        # Narrower: 48/96/128, two res blocks per level.
        "s48x2": Architecture(unet=_unet((48, 96, 128), 2, 128), text=_text(128, 4)),
        # Toy size for the end-to-end smoke run.
        "toy": Architecture(unet=_unet((16, 32, 32), 1, 32), text=_text(32, 1)),
    }


def build(architecture: Architecture) -> dict:
    """Randomly initialised components (seed with ``torch.manual_seed`` first): ``{"unet", "vae",
    "text_encoder", "tokenizer", "scheduler"}``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from rtb_train.standin_t2i.tokenizer import build_tokenizer

    return {
        "unet": UNet2DConditionModel(**architecture.unet),
        "vae": AutoencoderKL(**architecture.vae),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**architecture.text)),
        "tokenizer": build_tokenizer(),
        "scheduler": DDPMScheduler(**architecture.scheduler),
    }
