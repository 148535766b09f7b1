"""Train the reference inpainter (``model="reference"``) on CPU from data that needs no download.

    python -m rtb_train.reference --seed 0 --output rtb/weights/reference.safetensors

The LaMa-style GAN candidate (``reference-gan``, GPU) has its own trainer: ``python -m rtb_train.lama_gan``.

Deterministic: a fixed number of steps, one numpy generator for all data draws, ``torch.manual_seed`` for the
initialisation and a fixed thread count. The resolved configuration and the training record are written next to
the weights (``<output>.json``) and into the safetensors metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rtb.metrics import masked_psnr
from rtb.reference.model import ReferenceConfig, ReferenceNet, composite, save_weights
from rtb_train.data import DataConfig, TrainingStream, heldout_images, random_mask

# Seed of the fixed held-out masks of the progress lines (shared with rtb_train.lama_gan).
HELDOUT_MASK_SEED = 12345


@dataclass(frozen=True)
class TrainConfig:
    # Seed of the initialisation and of every data draw.
    seed: int = 0
    # Optimiser steps (fixed, so a rerun is the same run; ~15 minutes on an idle core, ~30 on a shared one).
    steps: int = 5000
    # Images per step.
    batch: int = 12
    # Peak AdamW learning rate (linear warm-up, then cosine decay to 1% of it; 2e-3 diverged).
    lr: float = 1e-3
    # Gradient norm clip (guards against the loss spikes seen without it).
    clip: float = 1.0
    # Warm-up steps.
    warmup: int = 200
    # Weight of the hole MSE term added to the hole L1 loss (10: the MSE term dominates, as PSNR is the metric;
    # with 1 the network barely improved on its prior).
    mse_weight: float = 10.0
    # CPU threads torch may use (fixed: the thread count can change floating-point reduction order). One: on a
    # 2-core machine shared with other jobs, two OpenMP threads ran 3-5x slower than one (they wait on each other).
    threads: int = 1
    # Steps between progress lines (and held-out evaluations every 5x this).
    log_every: int = 100


def hole_losses(prediction: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L1 and mean squared error over hole pixels (``N×3×H×W`` tensors, holes ``N×1×H×W``)."""
    count = (m.sum() * prediction.shape[1]).clamp_min(1.0)
    diff = (prediction - target) * m
    return diff.abs().sum() / count, diff.square().sum() / count


@torch.no_grad()
def heldout_psnr(net: torch.nn.Module, images: list[np.ndarray], masks: list[np.ndarray],
                 device: torch.device | str = "cpu", chunk: int = 8) -> float:
    """Mean hole PSNR (dB, :func:`rtb.metrics.masked_psnr`) of ``net`` (float32) over held-out images with their
    fixed masks; ``images`` are ``H×W×3`` float32 arrays in [0, 1], ``masks`` ``H×W`` with 1 = hole."""
    values = []
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.stack(images[start : start + chunk]).transpose(0, 3, 1, 2)).to(device)
        m = torch.from_numpy(np.stack(masks[start : start + chunk]))[:, None].to(device)
        values += masked_psnr(composite(x, m, net(x, m).float()), x, m).tolist()
    return float(np.mean(values))


def heldout_set(size: int, procedural: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The held-out images of the progress lines and their fixed masks."""
    images = [image for _, image in heldout_images(size, procedural)]
    mask_rng = np.random.default_rng(HELDOUT_MASK_SEED)
    return images, [random_mask(mask_rng, size, 0.05, 0.25) for _ in images]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--output", type=Path, default=Path("rtb/weights/reference.safetensors"))
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch", type=int, default=TrainConfig.batch)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--mse-weight", type=float, default=TrainConfig.mse_weight)
    parser.add_argument("--procedural-count", type=int, default=DataConfig.procedural_count)
    parser.add_argument("--log-every", type=int, default=TrainConfig.log_every)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="CPU threads (part of the recipe)")
    parser.add_argument("--no-prior", action="store_true",
                        help="train the plain variant: no push-pull prior input, the fill predicted directly")
    parser.add_argument("--heldout-size", type=int, default=256, help="side of the held-out images (progress only)")
    parser.add_argument("--heldout-procedural", type=int, default=8, help="procedural held-out images (progress only)")
    return parser


def lr_at(train: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    if step < train.warmup:
        return train.lr * (step + 1) / train.warmup
    progress = (step - train.warmup) / max(train.steps - train.warmup, 1)
    return train.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_network(net: ReferenceNet, train: TrainConfig, stream: TrainingStream, heldout, start: float) -> None:
    """The training loop: AdamW with the schedule of :func:`lr_at`, gradient clipping, progress lines."""
    optimiser = torch.optim.AdamW(net.parameters(), lr=train.lr, betas=(0.9, 0.99), weight_decay=0.0)
    running = []
    for step in range(train.steps):
        images, masks = stream.next_batch(train.batch)
        x = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)
        m = torch.from_numpy(masks).contiguous(memory_format=torch.channels_last)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(train, step)
        l1, mse = hole_losses(net(x, m), x, m)
        loss = l1 + train.mse_weight * mse
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), train.clip)
        optimiser.step()
        running.append(loss.item())
        if (step + 1) % train.log_every == 0 or step + 1 == train.steps:
            line = f"step {step + 1}/{train.steps} loss {np.mean(running):.4f} lr {lr_at(train, step):.2e} {time.time() - start:.0f}s"
            if (step + 1) % (5 * train.log_every) == 0 or step + 1 == train.steps:
                net.eval()
                line += f" | held-out hole PSNR {heldout_psnr(net, *heldout):.2f} dB"
                net.train()
            print(line, flush=True)
            running = []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    # 1. Resolve the configuration; make torch deterministic.
    train = TrainConfig(seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr, mse_weight=args.mse_weight,
                        threads=args.threads, log_every=args.log_every)
    data = DataConfig(procedural_count=args.procedural_count)
    model_config = ReferenceConfig(prior=not args.no_prior)
    torch.set_num_threads(train.threads)
    # torch.use_deterministic_algorithms(True) is left off: on CPU it makes a step ~8x slower (pooling and
    # bilinear-upsampling backward fall back to serial kernels), and with a fixed thread count the CPU kernels
    # used here already give the same numbers run to run.
    torch.manual_seed(train.seed)
    start = time.time()

    # 2. Data: the training stream (pre-renders the procedural pool) and the held-out set with fixed masks.
    stream = TrainingStream(train.seed, data)
    heldout = heldout_set(args.heldout_size, args.heldout_procedural)
    print(f"data ready in {time.time() - start:.0f}s", flush=True)

    # 3. Model, then the training loop.
    net = ReferenceNet(model_config).to(memory_format=torch.channels_last)
    print(f"parameters: {sum(p.numel() for p in net.parameters()):,}", flush=True)
    train_network(net, train, stream, heldout, start)

    # 4. Save weights and the training record.
    wall = time.time() - start
    record = {
        "model": model_config.to_dict(),
        "data": asdict(data),
        "train": asdict(train),
        "wall_seconds": round(wall, 1),
        "heldout_hole_psnr_db": round(heldout_psnr(net.eval(), *heldout), 3),
        "command": "python -m rtb_train.reference " + " ".join(sys.argv[1:] if argv is None else argv),
        "torch": torch.__version__,
    }
    save_weights(net, args.output, record)
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {args.output} after {wall / 60:.1f} min: {json.dumps(record)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
