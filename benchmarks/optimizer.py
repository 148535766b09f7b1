"""Batched RTB optimizer vs a faithful per-image loop as the authors run it, side by side in one run.

The per-image loop: batch 1, the three masked passes as three separate forward/backward passes, and the
clean ring edit F(x, R) recomputed every step. The batched optimizer (rtb.methods.rtb.run): B images at
once, one forward of the 3B masked inputs per step, F(x, R) computed once. Same model, inputs, steps, size
and per-image initial δ, so the final losses must agree (±10%).

    python benchmarks/optimizer.py [--model reference] [--images 8] [--size 256] [--steps 20] [--batch-size 8]
        [--threads T] [--channels-last auto|on|off] [--compile] [--levers]

The loop runs the plain network (NCHW, eager); the batched side runs with the given speed options, or with
``--levers`` with each CPU lever added in turn (channels-last, torch.compile). Prints the rates,
the final losses, and as the last line ``speedup: X.XX`` (the best batched setting over the loop).
"""

from __future__ import annotations

import argparse
import dataclasses
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
    """The image's own generator, on the image's device (seeded from the seed and the pixels)."""
    digest = hashlib.sha256(str(seed).encode() + (x.detach().cpu() * 255).round().to(torch.uint8).numpy().tobytes())
    return torch.Generator(device=x.device).manual_seed(int.from_bytes(digest.digest()[:8], "little") >> 1)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU has nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    """``(fn(), seconds)``, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def per_image_loop(inpainter, x, m, config: ProtectConfig) -> list[float]:
    """The authors' loop, one image at a time. Returns each image's final total loss.

    A stochastic (diffusion) surrogate gets the same per-image draws as the batched optimizer (drawn first from
    the image's generator, cycled over the steps, the first one for the final losses), so the two can agree.
    """
    eps, steps = config.eps, config.steps
    finals = []
    for i in range(x.shape[0]):
        xi, mi = x[i : i + 1], m[i : i + 1]
        generator = generator_for(xi[0], config.seed)
        holes = rtb.trigger_masks(mi, config)
        weights = [inpainter.mask_to_loss_space(hole) for hole in holes]
        with torch.no_grad():
            target = inpainter.to_loss_space(make_targets(xi, config.target))
        draws = []
        for _ in range(config.surrogate_draws):
            draws.append(inpainter.sample_noise([generator], xi.shape[-2], xi.shape[-1]))
            if draws[-1] is None:
                break
        delta = (torch.rand(xi.shape[1:], generator=generator, device=xi.device)[None] * config.init_high).clamp(-eps, eps)
        delta = ((xi + delta).clamp(0, 1) - xi).requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=config.lr, betas=config.betas, eps=rtb.ADAM_EPS)
        for step in range(steps):
            noise = draws[step % len(draws)]
            optimizer.zero_grad()
            with torch.no_grad():
                clean_ring = inpainter.surrogate(xi, holes[2], noise)  # recomputed every step
            implant = rtb.masked_mse(inpainter.surrogate(xi + delta, holes[0], noise), target, weights[0])
            implant.sum().backward()
            expanded = rtb.masked_mse(inpainter.surrogate(xi + delta, holes[1], noise), target, weights[1])
            expanded.sum().backward()
            hide = rtb.masked_mse(inpainter.surrogate(xi + delta, holes[2], noise), clean_ring, weights[2])
            (config.hide_weight * hide).sum().backward()
            optimizer.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
                delta.copy_((xi + delta).clamp(0, 1) - xi)
        with torch.no_grad():
            noise = draws[0]
            clean_ring = inpainter.surrogate(xi, holes[2], noise)
            losses = {
                "implant": rtb.masked_mse(inpainter.surrogate(xi + delta, holes[0], noise), target, weights[0]),
                "expanded": rtb.masked_mse(inpainter.surrogate(xi + delta, holes[1], noise), target, weights[1]),
                "hide": rtb.masked_mse(inpainter.surrogate(xi + delta, holes[2], noise), clean_ring, weights[2]),
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
        synchronize(inpainter.device)
        timings.append(time.perf_counter() - start)
    return min(timings[1:]) / batch


# The CPU levers of the batched optimizer, cumulative, in the order --levers measures them. (Thread groups,
# the batch split over Python threads with one torch thread each, measured ×0.97–1.02 and were removed.)
LADDER = (
    ("batched, NCHW, eager", {"channels_last": False}),
    ("+ channels-last", {"channels_last": True}),
    ("+ torch.compile", {"channels_last": True, "compile": True}),
)


def load_for(model: str, options: dict):
    """The inpainter with speed ``options``; options a backend does not take are dropped (and named)."""
    try:
        return load_inpainter(model, **options)
    except TypeError:
        if options:
            print(f"  ({model} takes no speed options {sorted(options)}; loaded without them)")
        return load_inpainter(model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="reference", help="reference | path/URI of a model")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                        help="layout of the batched side (auto: the backend's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the batched side's network")
    parser.add_argument("--levers", action="store_true",
                        help="measure the CPU levers one by one, cumulatively, instead of one batched setting")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. Models and inputs. The authors' loop runs the plain network: NCHW layout, eager.
    loop_inpainter = load_for(args.model, {"channels_last": False})
    x, m = load_inputs(args.images, args.size)
    x, m = x.to(loop_inpainter.device), m.to(loop_inpainter.device)
    config = ProtectConfig(eps=0.025, steps=args.steps, batch_size=args.batch_size)
    threads = torch.get_num_threads()
    print(f"model {loop_inpainter.name} on {loop_inpainter.device} ({loop_inpainter.dtype}), {args.images} images "
          f"{args.size}², {args.steps} steps, batch {args.batch_size}, {threads} threads, torch {torch.__version__}")
    if args.levers:
        rungs = list(LADDER)
    else:
        options = {} if args.channels_last == "auto" else {"channels_last": args.channels_last == "on"}
        if args.compile:
            options["compile"] = True
        rungs = [(f"batched {options or ''}".strip(), options)]

    # 2. The authors' loop: warm up once (allocator, kernels), then time it.
    per_image_loop(loop_inpainter, x[:1], m[:1], ProtectConfig(eps=0.025, steps=1))
    loop_losses, loop_seconds = timed(loop_inpainter.device, lambda: per_image_loop(loop_inpainter, x, m, config))
    loop_rate = args.images / loop_seconds
    print(f"per-image loop (authors'): {loop_rate:8.3f} images/s  ({loop_seconds:.1f} s)  "
          f"mean final loss {np.mean(loop_losses):.5f}")

    # 3. Each batched setting: load, warm up at the full batch (compilation happens here), time.
    previous, rates = None, []
    for name, options in rungs:
        inpainter = load_for(args.model, options)
        warm = time.perf_counter()
        batched(inpainter, x[: args.batch_size], m[: args.batch_size], dataclasses.replace(config, steps=1))
        warm = time.perf_counter() - warm
        losses, seconds = timed(inpainter.device, lambda: batched(inpainter, x, m, config))
        rate = args.images / seconds
        agreement = float(np.mean(losses) / np.mean(loop_losses))
        step = f", ×{rate / previous:.2f} on the previous" if previous else ""
        failure = getattr(getattr(inpainter, "forward", None), "failure", None)
        print(f"{name:<24}: {rate:8.3f} images/s  ({seconds:.1f} s, warm-up {warm:.1f} s)  ×{rate / loop_rate:.2f} "
              f"on the loop{step}; final-loss ratio to the loop {agreement:.3f} (must be 0.90–1.10)"
              + (f"; compile fell back to eager: {failure}" if failure else ""))
        previous = rate
        rates.append((rate, name))

    # 4. How the hardware scales with batch: one forward+backward per image at batch 1 and at 3·B (last setting).
    scaling = {size: pass_seconds(inpainter, x, m, size) for size in (1, 3 * min(args.batch_size, args.images))}
    print("forward+backward per image: " + ", ".join(f"batch {k}: {v * 1000:.0f} ms" for k, v in scaling.items())
          + " (batching can only win what this saves, plus the recomputed clean ring edit)")
    best_rate, best_name = max(rates)
    print(f"speedup: {best_rate / loop_rate:.2f}" + (f" ({best_name.strip()})" if args.levers else ""))


if __name__ == "__main__":
    main()
