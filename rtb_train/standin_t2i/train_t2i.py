"""Stage 3: the stand-in's UNet and CLIP text encoder, trained jointly on the frozen autoencoder's latents.

SD's objective: ε-prediction MSE at a uniform timestep of the DDPM schedule, latents drawn from the encoder's
posterior and scaled by the VAE's scaling factor, 10 % of captions dropped to "" for classifier-free guidance.
AdamW with warm-up and cosine decay; an exponential moving average of both networks (diffusers' ``EMAModel``) is
what gets evaluated and shipped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rtb_train.standin_t2i.checkpoint import CpuClock, load_checkpoint, log, save_checkpoint
from rtb_train.standin_t2i.data import captions_for


@dataclass(frozen=True)
class T2iTrainConfig:
    # Seed of the batch, noise, timestep and caption draws.
    seed: int = 0
    # Optimiser steps.
    steps: int = 12000
    # Pictures per step.
    batch: int = 32
    # Peak AdamW learning rate of both networks.
    lr: float = 4e-4
    # Warm-up steps.
    warmup: int = 300
    # Share of captions replaced by "" (the unconditional branch of classifier-free guidance).
    caption_drop: float = 0.1
    # Share of captions that name the object's colour and pattern before its class word (0: class word only).
    describe: float = 0.0
    # EMA decay of the shipped weights.
    ema_decay: float = 0.999
    # Seconds between checkpoints.
    checkpoint_seconds: float = 180.0
    # Steps between log lines; the held-out loss is computed every 10× this.
    log_every: int = 100


def encode_text(text_encoder, tokenizer, texts: list[str]) -> torch.Tensor:
    """CLIP last hidden states of ``texts``, padded to the tokenizer's max length: N×L×D."""
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def diffusion_loss(unet, text_encoder, tokenizer, scheduler, latents, texts, timesteps, noise) -> torch.Tensor:
    """Mean ε-prediction MSE of ``unet`` on ``latents`` (scaled) noised to ``timesteps`` with ``noise``."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, encode_text(text_encoder, tokenizer, texts)).sample
    return torch.nn.functional.mse_loss(prediction, noise)


def train_t2i(folder: str | Path, components: dict, latents: tuple, data: dict, heldout: dict,
              config: T2iTrainConfig) -> dict:
    """Train ``components["unet"]`` and ``["text_encoder"]`` in place, resuming from ``folder``; returns the
    components with the EMA weights copied in.

    ``latents`` = (means, stds) of the training set's posteriors (unscaled, N×4×8×8); ``data`` the training set
    (labels for the captions); ``heldout`` = ``(latents, texts, timesteps, noise)`` of the fixed held-out batch.
    """
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    # 1. Optimiser, schedule, EMA, generators; resume
    folder = Path(folder)
    unet, text_encoder = components["unet"], components["text_encoder"]
    tokenizer, scheduler = components["tokenizer"], components["scheduler"]
    scale = components["vae"].config.scaling_factor
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=1e-2)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup, config.steps)
    ema = {name: EMAModel(components[name].parameters(), decay=config.ema_decay) for name in ("unet", "text_encoder")}
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    step, clock = 0, CpuClock()
    state = load_checkpoint(folder)
    if state is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        for name in ema:
            ema[name].load_state_dict(state["ema"][name])
        generator.set_state(state["generator"])
        rng.bit_generator.state = state["rng"]
        step, clock = state["step"], CpuClock(state["cpu_seconds"])
    means, stds = latents
    saved_at = time.monotonic()
    # 2. Training loop
    while step < config.steps:
        index = torch.randint(len(means), (config.batch,), generator=generator)
        x = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scale
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (config.batch,), generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        texts = captions_for(data, index.numpy(), rng, drop=config.caption_drop, describe=config.describe)
        loss = diffusion_loss(unet, text_encoder, tokenizer, scheduler, x, texts, timesteps, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        for name in ema:
            ema[name].step(components[name].parameters())
        step += 1
        if step % config.log_every == 0 or step == config.steps:
            record = {"stage": "t2i", "step": step, "loss": round(loss.item(), 5), "cpu_s": round(clock.seconds(), 1)}
            if step % (10 * config.log_every) == 0 or step == config.steps:
                record["heldout_loss"] = round(heldout_loss(components, ema, heldout, scale), 5)
            log(folder, record)
        if time.monotonic() - saved_at > config.checkpoint_seconds or step == config.steps:
            save_checkpoint(folder, {
                "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "ema": {name: ema[name].state_dict() for name in ema}, "generator": generator.get_state(),
                "rng": rng.bit_generator.state, "step": step, "cpu_seconds": clock.seconds(),
                "config": asdict(config)})
            saved_at = time.monotonic()
    # 3. Ship the EMA weights
    for name in ema:
        ema[name].copy_to(components[name].parameters())
    return components


@torch.no_grad()
def heldout_loss(components: dict, ema: dict | None, heldout: tuple, scale: float) -> float:
    """ε-MSE on the fixed held-out batch, with the EMA weights when ``ema`` is given (restored after)."""
    latents, texts, timesteps, noise = heldout
    names = ("unet", "text_encoder")
    if ema is not None:
        for name in names:
            ema[name].store(components[name].parameters())
            ema[name].copy_to(components[name].parameters())
    try:
        losses = [
            float(diffusion_loss(components["unet"], components["text_encoder"], components["tokenizer"],
                                 components["scheduler"], latents[i:i + 128] * scale, texts[i:i + 128],
                                 timesteps[i:i + 128], noise[i:i + 128])) * len(texts[i:i + 128])
            for i in range(0, len(texts), 128)
        ]
    finally:
        if ema is not None:
            for name in names:
                ema[name].restore(components[name].parameters())
    return sum(losses) / len(texts)
