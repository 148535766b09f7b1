"""Build a Stable Diffusion 1.5 inpainting pipeline with RANDOM weights and save it as a diffusers directory.

Timing needs the architecture, not trained weights, and no model hub can be reached: the full size is the
published SD 1.5 inpainting architecture (9-channel UNet 320/640/1280/1280, the KL-f8 VAE, the CLIP ViT-L/14
text encoder, the SD 1.5 PNDM schedule); ``tiny`` keeps SD's block structure (four UNet and VAE levels,
cross-attention in the first three) at a few channels, for CPU tests. The tokenizer is a byte-level CLIP
vocabulary written here (514 tokens; the text encoder's embedding table keeps SD's 49408 rows), so only the
empty prompt the surrogates use is meaningful.

    python benchmarks/build_sd15_inpaint.py OUT_DIR [--size full|tiny] [--seed 0] [--save-dtype auto|fp16|fp32]

Full size: about 1.07 G parameters, 4.3 GB of RAM in fp32 while building, 2.1 GB on disk in fp16 (the
default for full; ``rtb.load_inpainter`` casts to whatever ``dtype`` it is asked for).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/build_sd15_inpaint.py`
    sys.path.insert(0, str(REPO))

from rtb_train.tokenizer import write_byte_tokenizer  # noqa: E402


@dataclass(frozen=True)
class Architecture:
    """The keyword arguments of each component of an SD-inpainting pipeline."""

    # UNet2DConditionModel(**unet): the denoiser (9 input channels: latents, mask, masked-image latents).
    unet: dict
    # AutoencoderKL(**vae): the latent autoencoder (scale factor 2^(levels − 1)).
    vae: dict
    # CLIPTextConfig(**text): the text encoder (token ids must fit the byte vocabulary of `rtb_train.tokenizer.byte_vocab`).
    text: dict
    # PNDMScheduler(**scheduler): the noise schedule the pipeline edits with.
    scheduler: dict
    # Side of the images the UNet's sample_size is meant for (sample_size × VAE scale factor).
    image_size: int


# The SD 1.5 noise schedule (PNDM, as the published inpainting pipeline ships it).
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)
# Special tokens of the byte vocabulary (its last two entries).
BOS_TOKEN, EOS_TOKEN = 512, 513

FULL = Architecture(
    unet=dict(
        sample_size=64,
        in_channels=9,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
    ),
    vae=dict(
        sample_size=512,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        act_fn="silu",
        scaling_factor=0.18215,
    ),
    text=dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=768,
        bos_token_id=BOS_TOKEN,
        eos_token_id=EOS_TOKEN,
        pad_token_id=EOS_TOKEN,
    ),
    scheduler=SD15_SCHEDULER,
    image_size=512,
)

TINY = dataclasses.replace(
    FULL,
    unet=FULL.unet | dict(sample_size=8, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                          cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8),
    vae=FULL.vae | dict(sample_size=64, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4),
    text=FULL.text | dict(vocab_size=600, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, projection_dim=32),
    image_size=64,
)
ARCHITECTURES = {"full": FULL, "tiny": TINY}


def build_components(architecture: Architecture) -> dict:
    """The pipeline's networks and scheduler, randomly initialised (on the current default device).

    Returns ``{"unet", "vae", "text_encoder", "tokenizer", "scheduler"}``; under ``with torch.device("meta")``
    the networks hold no memory (to count parameters).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # The tokenizer is read from the two files a CLIP tokenizer ships (vocab.json, merges.txt without merges),
    # which every transformers version loads the same way.
    with tempfile.TemporaryDirectory() as folder:
        write_byte_tokenizer(folder)
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=architecture.text["max_position_embeddings"])
    return {
        "unet": UNet2DConditionModel(**architecture.unet),
        "vae": AutoencoderKL(**architecture.vae),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**architecture.text)),
        "tokenizer": tokenizer,
        "scheduler": PNDMScheduler(**architecture.scheduler),
    }


def build(out_dir: str | Path, size: str = "full", seed: int = 0, save_dtype: str = "auto") -> Path:
    """Build a random SD-inpainting pipeline of ``size`` and save it (safetensors) to ``out_dir``.

    Args:
        out_dir: directory to write (created; an existing pipeline there is overwritten).
        size: ``"full"`` (SD 1.5 inpainting) or ``"tiny"``.
        seed: ``torch.manual_seed`` before the weights are drawn (same seed, same weights).
        save_dtype: ``"fp16"``, ``"fp32"`` or ``"auto"`` (fp16 for full, fp32 for tiny).
    Returns:
        ``Path(out_dir)``, holding ``model_index.json`` and the component folders.
    """
    from diffusers import StableDiffusionInpaintPipeline

    # 1. Check inputs
    if size not in ARCHITECTURES:
        raise ValueError(f"size must be one of {', '.join(ARCHITECTURES)}; got {size!r}")
    dtypes = {"fp16": torch.float16, "fp32": torch.float32, "auto": torch.float16 if size == "full" else torch.float32}
    if save_dtype not in dtypes:
        raise ValueError(f"save_dtype must be one of {', '.join(dtypes)}; got {save_dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    # 2. Draw the weights
    torch.manual_seed(seed)
    components = build_components(ARCHITECTURES[size])
    pipe = StableDiffusionInpaintPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    # 3. Save
    pipe.to(dtypes[save_dtype])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def parameter_counts(components: dict) -> dict[str, int]:
    """Parameters of each network of :func:`build_components`' result."""
    return {name: sum(p.numel() for p in components[name].parameters()) for name in ("unet", "vae", "text_encoder")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", choices=sorted(ARCHITECTURES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-dtype", choices=("auto", "fp16", "fp32"), default="auto")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    out_dir = build(args.out_dir, args.size, args.seed, args.save_dtype)
    seconds = time.perf_counter() - start
    with torch.device("meta"):
        counts = parameter_counts(build_components(ARCHITECTURES[args.size]))
    disk = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    print(f"built {args.size} SD-inpainting (random weights, seed {args.seed}) in {seconds:.1f} s: "
          + ", ".join(f"{name} {count:,}" for name, count in counts.items())
          + f" parameters; {disk / 2**20:.1f} MiB on disk at {out_dir}")


if __name__ == "__main__":
    main()
