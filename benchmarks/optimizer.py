"""Batched RTB optimizer vs a faithful per-image loop as the authors run it, side by side in one run.

The per-image loop: batch 1, the three masked passes as three separate forward/backward passes, and the
clean ring edit F(x, R) recomputed every step. The batched optimizer (rtb.methods.rtb.run): B images at
once, one forward of the 3B masked inputs per step, F(x, R) computed once. Same model, inputs, steps, size
and per-image initial δ, so the final losses must agree (±10%).

    python benchmarks/optimizer.py [--model reference] [--images 8] [--size 256] [--steps 20] [--batch-size 8]

Prints both rates, the final losses, and as the last line ``speedup: X.XX``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rtb import ProtectConfig, load_inpainter
from rtb.images import mask_array, to_tensor
from rtb.methods import rtb
from rtb.targets import make_targets

SAMPLES = Path(__file__).resolve().parents[1] / "rtb" / "samples" / "catalog"


def load_inputs(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` sample images and masks resized to ``size×size`` (cycling through the bundled catalog)."""
    pairs = sorted(p for p in SAMPLES.glob("*.png") if not p.stem.endswith("_mask"))
    if not pairs:
        sys.exit(f"no sample images under {SAMPLES}")
    xs, ms = [], []
    for i in range(count):
        path = pairs[i % len(pairs)]
        image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
        if i >= len(pairs):  # vary repeated images so no two inputs are identical
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        mask = Image.open(path.with_name(f"{path.stem}_mask.png")).convert("L").resize((size, size), Image.NEAREST)
        if i >= len(pairs):
            mask = mask.transpose(Image.FLIP_LEFT_RIGHT)
        xs.append(to_tensor(image).float())
        ms.append(torch.from_numpy(mask_array(mask).astype(np.float32))[None])
    return torch.stack(xs), torch.stack(ms)


def generator_for(x: torch.Tensor, seed: int) -> torch.Generator:
    digest = hashlib.sha256(str(seed).encode() + (x * 255).round().to(torch.uint8).numpy().tobytes())
    return torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little") >> 1)


def per_image_loop(inpainter, x, m, config: ProtectConfig) -> list[float]:
    """The authors' loop, one image at a time. Returns each image's final total loss."""
    eps, steps = config.eps, config.steps
    finals = []
    for i in range(x.shape[0]):
        xi, mi = x[i : i + 1], m[i : i + 1]
        generator = generator_for(xi[0], config.seed)
        holes = rtb.trigger_masks(mi, config)
        target = make_targets(xi, config.target)
        delta = (torch.rand(xi.shape[1:], generator=generator)[None] * config.init_high).clamp(-eps, eps)
        delta = ((xi + delta).clamp(0, 1) - xi).requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=config.lr, betas=config.betas, eps=rtb.ADAM_EPS)
        for _ in range(steps):
            optimizer.zero_grad()
            with torch.no_grad():
                clean_ring = inpainter.surrogate(xi, holes[2])  # recomputed every step
            implant = rtb.masked_mse(inpainter.surrogate(xi + delta, holes[0]), target, holes[0])
            implant.sum().backward()
            expanded = rtb.masked_mse(inpainter.surrogate(xi + delta, holes[1]), target, holes[1])
            expanded.sum().backward()
            hide = rtb.masked_mse(inpainter.surrogate(xi + delta, holes[2]), clean_ring, holes[2])
            (config.hide_weight * hide).sum().backward()
            optimizer.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
                delta.copy_((xi + delta).clamp(0, 1) - xi)
        with torch.no_grad():
            losses = {
                "implant": rtb.masked_mse(inpainter.surrogate(xi + delta, holes[0]), target, holes[0]),
                "expanded": rtb.masked_mse(inpainter.surrogate(xi + delta, holes[1]), target, holes[1]),
                "hide": rtb.masked_mse(inpainter.surrogate(xi + delta, holes[2]), clean_ring, holes[2]),
            }
        finals.append(float(rtb.total_loss(losses, config)[0]))
    return finals


def batched(inpainter, x, m, config: ProtectConfig) -> list[float]:
    """The batched optimizer, ``config.batch_size`` images at a time. Returns each image's final total loss."""
    finals = []
    for start in range(0, x.shape[0], config.batch_size):
        xb, mb = x[start : start + config.batch_size], m[start : start + config.batch_size]
        generators = [generator_for(xi, config.seed) for xi in xb]
        output = rtb.run(inpainter, xb, mb, config, generators)
        finals.extend(float(v) for v in rtb.total_loss(output.losses, config))
    return finals


def pass_seconds(inpainter, x, m, batch: int, repeats: int = 2) -> float:
    """Seconds per image of one surrogate forward+backward at ``batch`` (inputs cycled to fill it)."""
    index = torch.arange(batch) % x.shape[0]
    xb, mb = x[index], m[index]
    delta = torch.zeros_like(xb, requires_grad=True)
    timings = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        inpainter.surrogate(xb + delta, mb).square().mean().backward()
        if inpainter.device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return min(timings[1:]) / batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="reference", help="reference | path/URI of a model")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. Model and inputs.
    inpainter = load_inpainter(args.model)
    config = ProtectConfig(eps=0.025, steps=args.steps, batch_size=args.batch_size)
    x, m = load_inputs(args.images, args.size)
    x, m = x.to(inpainter.device), m.to(inpainter.device)
    device = str(inpainter.device)
    print(f"model {inpainter.name} on {device} ({inpainter.dtype}), {args.images} images {args.size}², "
          f"{args.steps} steps, batch {args.batch_size}, {torch.get_num_threads()} threads")

    # 2. Warm up both paths once (allocator, kernels), then time each.
    batched(inpainter, x[:1], m[:1], ProtectConfig(eps=0.025, steps=1, batch_size=1))
    per_image_loop(inpainter, x[:1], m[:1], ProtectConfig(eps=0.025, steps=1))

    def timed(fn):
        if inpainter.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        finals = fn(inpainter, x, m, config)
        if inpainter.device.type == "cuda":
            torch.cuda.synchronize()
        return finals, time.perf_counter() - start

    loop_losses, loop_seconds = timed(per_image_loop)
    batch_losses, batch_seconds = timed(batched)

    # 3. How the hardware scales with batch: one forward+backward per image at batch 1 and at 3·B.
    scaling = {size: pass_seconds(inpainter, x, m, size) for size in (1, 3 * min(args.batch_size, args.images))}

    # 4. Report.
    loop_rate, batch_rate = args.images / loop_seconds, args.images / batch_seconds
    agreement = float(np.mean(batch_losses) / np.mean(loop_losses))
    print(f"per-image loop : {loop_rate:8.3f} images/s  ({loop_seconds:.1f} s)  mean final loss {np.mean(loop_losses):.5f}")
    print(f"batched        : {batch_rate:8.3f} images/s  ({batch_seconds:.1f} s)  mean final loss {np.mean(batch_losses):.5f}")
    print("forward+backward per image: " + ", ".join(f"batch {k}: {v * 1000:.0f} ms" for k, v in scaling.items())
          + " (batching can only win what this saves, plus the recomputed clean ring edit)")
    print(f"final-loss ratio batched/loop: {agreement:.3f} (must be within 0.90–1.10)")
    print(f"speedup: {batch_rate / loop_rate:.2f}")


if __name__ == "__main__":
    main()
