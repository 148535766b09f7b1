"""Stage 1: the stand-in's KL autoencoder (32×32 RGB ↔ 8×8×4), trained alone on the rendered set.

L1 reconstruction plus SD's small KL weight (1e-6); no perceptual or adversarial term (the domain is flat
colours and edges, which L1 keeps sharp). The latent scaling factor is set afterwards, as SD's was, to one over
the standard deviation of the training latents.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rtb_train.standin_t2i.checkpoint import CpuClock, load_checkpoint, log, save_checkpoint


@dataclass(frozen=True)
class VaeTrainConfig:
    # Seed of the initialisation and of the batch draws.
    seed: int = 0
    # Optimiser steps.
    steps: int = 2500
    # Pictures per step.
    batch: int = 16
    # Peak AdamW learning rate (linear warm-up, cosine decay).
    lr: float = 1e-3
    # Warm-up steps.
    warmup: int = 100
    # Weight of the KL term (SD's value).
    kl_weight: float = 1e-6
    # Seconds between checkpoints.
    checkpoint_seconds: float = 180.0
    # Steps between log lines.
    log_every: int = 100


def to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [−1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(folder: str | Path, vae, train: dict, heldout: dict, config: VaeTrainConfig):
    """Train ``vae`` (an ``AutoencoderKL``) in place, resuming from ``folder``'s checkpoint; returns it with
    ``scaling_factor`` set. ``train``/``heldout`` are :func:`rtb_train.standin_t2i.data.render_set` sets."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    folder = Path(folder)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    state = load_checkpoint(folder)
    step, clock = 0, CpuClock()
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        step, clock = state["step"], CpuClock(state["cpu_seconds"])
    saved_at = time.monotonic()
    images = train["images"]
    while step < config.steps:
        index = torch.randint(len(images), (config.batch,), generator=generator).numpy()
        x = to_model(images[index])
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        l1 = (reconstruction - x).abs().mean()
        loss = l1 + config.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        if step % config.log_every == 0 or step == config.steps:
            log(folder, {"stage": "vae", "step": step, "l1": round(l1.item(), 5),
                         "cpu_s": round(clock.seconds(), 1)})
        if time.monotonic() - saved_at > config.checkpoint_seconds or step == config.steps:
            save_checkpoint(folder, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(),
                                     "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                     "step": step, "cpu_seconds": clock.seconds(), "config": asdict(config)})
            saved_at = time.monotonic()
    vae.eval()
    latents = encode_means(vae, train["images"][:4096])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    psnr = heldout_psnr(vae, heldout["images"][:512])
    log(folder, {"stage": "vae", "done": True, "scaling_factor": vae.config.scaling_factor,
                 "heldout_psnr": round(psnr, 2), "cpu_s": round(clock.seconds(), 1)})
    return vae


@torch.no_grad()
def encode_means(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means (unscaled) of ``images`` (uint8 N×32×32×3): N×4×8×8."""
    return torch.cat([vae.encode(to_model(images[i:i + batch])).latent_dist.mean
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def encode_posteriors(vae, images: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations (unscaled) of ``images``: two N×4×8×8 tensors."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        posterior = vae.encode(to_model(images[i:i + batch])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def heldout_psnr(vae, images: np.ndarray) -> float:
    """Mean PSNR (dB, 8-bit scale) of the mean-latent reconstructions of ``images``."""
    x = to_model(images)
    reconstruction = vae.decode(encode_means(vae, images)).sample.clamp(-1, 1)
    mse = ((reconstruction - x) / 2).square().mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
