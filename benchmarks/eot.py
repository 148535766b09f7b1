"""Cost per optimiser step of expectation over transformation (EOT), side by side with the plain optimiser.

Runs ``rtb.methods.rtb.run`` on the same batch (bundled sample images resized to ``--size``, cycled to
``--images``) without EOT, with the full ``--eot`` set, and with each of its kinds alone, interleaved over
``--repeats`` rounds so that load from other processes hits every variant alike; reports the median CPU
seconds per step of this process (``time.process_time``: on a shared machine wall time mostly measures the
other processes; with ``--threads 1`` CPU time is the wall time a quiet machine would show), the median wall
seconds beside it, and the ratio of CPU times to the plain optimiser::

    python benchmarks/eot.py [--model reference] [--images 8] [--size 256] [--steps 10] [--repeats 3]
                             [--eot jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0] [--threads T]

An EOT step adds, per sample, the transformation of ``x + δ`` (and its backward) and of ``x``, plus one
no-grad forward of the N clean transformed images for the ring's reference edit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.optimizer import generator_for, load_inputs  # noqa: E402
from rtb import ProtectConfig, load_inpainter  # noqa: E402
from rtb.methods import rtb  # noqa: E402
from rtb.transforms import format_transforms, parse_eot  # noqa: E402


def seconds(inpainter, x, m, config: ProtectConfig) -> tuple[float, float]:
    """(CPU, wall) seconds of one run of the optimiser (fresh per-image generators: every run is the same work)."""
    generators = [generator_for(x[i], config.seed) for i in range(x.shape[0])]
    cpu, wall = time.process_time(), time.perf_counter()
    rtb.run(inpainter, x, m, config, generators)
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reference")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eot", default="jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads [default: torch's]")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. Model, inputs and the variants: no EOT, the whole set, each kind alone.
    inpainter = load_inpainter(args.model)
    x, m = load_inputs(args.images, args.size)
    dtype = torch.float64 if inpainter.dtype == torch.float64 else torch.float32  # as rtb.protect does
    x, m = x.to(inpainter.device, dtype), m.to(inpainter.device, dtype)
    eot = parse_eot(args.eot)
    variants = {"off": ()}
    variants[format_transforms(eot)] = eot
    if len(eot) > 1:
        variants.update({str(t): (t,) for t in eot if t.kind != "none"})

    # 2. Warm up once (TorchScript specialisation, allocator), then interleave the variants.
    for transforms in variants.values():
        seconds(inpainter, x, m, ProtectConfig(steps=1, eot=transforms))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_ in range(args.repeats):
        for name, transforms in variants.items():
            cpu, wall = seconds(inpainter, x, m, ProtectConfig(steps=args.steps, eot=transforms))
            times[name].append((cpu / args.steps, wall / args.steps))
            print(f"round {round_ + 1}: eot {name}: {cpu / args.steps:.3f} CPU s/step, {wall / args.steps:.3f} wall s/step",
                  flush=True)

    # 3. Report.
    base = statistics.median(cpu for cpu, _ in times["off"])
    print(f"model {args.model}, {args.images} images of {args.size}x{args.size}, batch {args.images}, "
          f"{args.steps} steps, median of {args.repeats}, {torch.get_num_threads()} threads, device {inpainter.device}")
    for name, values in times.items():
        cpu = statistics.median(c for c, _ in values)
        wall = statistics.median(w for _, w in values)
        print(f"eot {name:40s} {cpu:7.3f} CPU s/step ({cpu / args.images * 1000:7.1f} ms/image)  x{cpu / base:.2f}  "
              f"[wall {wall:.3f} s/step]")


if __name__ == "__main__":
    main()
