"""A tiny random Stable Diffusion inpainting pipeline, saved like a real one, for CPU tests.

Everything is built locally (no model hub): a 9-channel UNet, a 4-level VAE (scale factor 8, like SD), a
2-layer CLIP text encoder and a byte-level CLIP tokenizer (the vocabulary of benchmarks/build_sd15_inpaint.py).
Images of 32×32 give 4×4 latents, so one surrogate call takes milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.build_sd15_inpaint import byte_vocab

# Side of the images the tiny model is meant for (unet sample_size 4 × vae scale factor 8).
TINY_SIZE = 32


def _tiny_vae():
    """A 4-level VAE (scale factor 8, like SD's) with 8–16 channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=TINY_SIZE,
    )


def _tiny_text_config(**extra):
    """A 2-layer, 32-wide CLIP text encoder config over :func:`byte_vocab` (``extra`` adds fields)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=513,
        vocab_size=600,
        max_position_embeddings=77,
        **extra,
    )


def tiny_batch(n: int = 2, seed: int = 0):
    """``n`` random images of ``TINY_SIZE``² and a shared square hole in the middle: ``(x, m)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, TINY_SIZE, TINY_SIZE, generator=generator)
    m = torch.zeros(n, 1, TINY_SIZE, TINY_SIZE)
    m[..., 8:24, 8:24] = 1
    return x, m


def tiny_generators(seeds):
    """One CPU generator per seed."""
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def build_tiny_inpaint_pipeline(path: str | Path, scheduler: str = "ddim"):
    """Build, save (safetensors) and return the directory of a tiny random SD-inpainting pipeline.

    Args:
        path: directory to write; created if missing.
        scheduler: "ddim" or "pndm" (the scheduler the saved pipeline uses for real edits).
    Returns:
        ``Path(path)``, holding ``model_index.json`` and the component folders.
    """
    from diffusers import (
        DDIMScheduler,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=TINY_SIZE // 8,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = _tiny_vae()
    text_config = _tiny_text_config()
    text_encoder = CLIPTextModel(text_config)
    tokenizer = CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)
    schedule = dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False
    )
    if scheduler == "ddim":
        noise_scheduler = DDIMScheduler(clip_sample=False, **schedule)
    elif scheduler == "pndm":
        noise_scheduler = PNDMScheduler(skip_prk_steps=True, **schedule)
    else:
        raise ValueError(f"scheduler must be 'ddim' or 'pndm', got {scheduler!r}")
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=noise_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sdxl_inpaint_pipeline(path: str | Path):
    """Build, save and return the directory of a tiny random SDXL-inpainting pipeline (two text encoders).

    Same scale as :func:`build_tiny_inpaint_pipeline` (32×32 images, 4×4 latents); the UNet takes SDXL's
    micro-conditioning (pooled text embedding + 6 time ids).
    """
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=TINY_SIZE // 8,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + the pooled 32-d text embedding
        cross_attention_dim=64,  # the two 32-d text encoders, concatenated
        norm_num_groups=8,
    )
    vae = _tiny_vae()
    text_config = _tiny_text_config(hidden_act="gelu", projection_dim=32)
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77),
        tokenizer_2=CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
