"""Stage 2: the recogniser the measures use (:class:`rtb.personalization.recogniser.Recogniser`).

Trained on the rendered training set with the labels the renderer knows (class or empty, scene, body colour,
pattern, pattern colour), under light blur, noise and colour jitter so that it reads decoded generations as
well as renders. Its accuracy is reported on held-out renders and on their autoencoder reconstructions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rtb.personalization.recogniser import Recogniser, RecogniserConfig
from rtb_train.standin_t2i.checkpoint import CpuClock, load_checkpoint, log, save_checkpoint
from rtb_train.standin_t2i.data import LABELS


@dataclass(frozen=True)
class RecogniserTrainConfig:
    # Seed of the initialisation, batch draws and augmentations.
    seed: int = 0
    # Optimiser steps.
    steps: int = 3000
    # Pictures per step.
    batch: int = 64
    # Peak AdamW learning rate (cosine decay).
    lr: float = 2e-3
    # Largest Gaussian blur sigma (pixels) of the augmentation.
    max_blur: float = 0.8
    # Largest additive noise standard deviation (0–1 scale).
    max_noise: float = 0.04
    # Seconds between checkpoints.
    checkpoint_seconds: float = 180.0
    # Steps between log lines.
    log_every: int = 200


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×3 → float N×3×H×W in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def augment(x: torch.Tensor, config: RecogniserTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random blur, per-channel gain and additive noise (what decoding and sampling do to a picture)."""
    from kornia.filters import gaussian_blur2d

    n = len(x)
    sigma = torch.rand(n, generator=generator) * config.max_blur + 1e-3
    blurred = torch.stack([gaussian_blur2d(x[i:i + 1], (5, 5), (float(s), float(s)))[0] for i, s in enumerate(sigma)])
    gain = 1 + 0.08 * (torch.rand(n, 3, 1, 1, generator=generator) - 0.5)
    noise = torch.randn(x.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * config.max_noise
    return (blurred * gain + noise).clamp(0, 1)


def train_recogniser(folder: str | Path, train: dict, config: RecogniserTrainConfig) -> Recogniser:
    """Train a recogniser on ``train`` (a :func:`rtb_train.standin_t2i.data.render_set` set), resuming from
    ``folder``'s checkpoint; returns it in eval mode."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    folder = Path(folder)
    torch.manual_seed(config.seed)
    model = Recogniser(RecogniserConfig(heads={name: list(labels) for name, labels in LABELS.items()}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-2)
    schedule = get_cosine_schedule_with_warmup(optimizer, 100, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    step, clock = 0, CpuClock()
    state = load_checkpoint(folder)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        step, clock = state["step"], CpuClock(state["cpu_seconds"])
    labels = {name: torch.from_numpy(train[name]) for name in LABELS}
    saved_at = time.monotonic()
    model.train()
    while step < config.steps:
        index = torch.randint(len(train["images"]), (config.batch,), generator=generator)
        x = augment(to_unit(train["images"][index.numpy()]), config, generator)
        logits = model(x)
        loss = sum(torch.nn.functional.cross_entropy(logits[name], labels[name][index], ignore_index=-1)
                   for name in LABELS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        if step % config.log_every == 0 or step == config.steps:
            log(folder, {"stage": "recogniser", "step": step, "loss": round(loss.item(), 4),
                         "cpu_s": round(clock.seconds(), 1)})
        if time.monotonic() - saved_at > config.checkpoint_seconds or step == config.steps:
            save_checkpoint(folder, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                     "step": step, "cpu_seconds": clock.seconds(), "config": asdict(config)})
            saved_at = time.monotonic()
    return model.eval()


@torch.no_grad()
def accuracy(model: Recogniser, images: torch.Tensor, data: dict) -> dict[str, float]:
    """Per-head accuracy of ``model`` on ``images`` (N×3×32×32 in [0, 1]) against ``data``'s labels (rows whose
    label is −1 are left out)."""
    logits = {name: torch.cat([model(images[i:i + 256])[name] for i in range(0, len(images), 256)])
              for name in LABELS}
    result = {}
    for name in LABELS:
        truth = torch.from_numpy(data[name][: len(images)])
        keep = truth >= 0
        result[name] = round(float((logits[name].argmax(1)[keep] == truth[keep]).float().mean()), 4)
    return result
