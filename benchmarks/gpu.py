"""GPU speed of the protection methods on SD-inpainting scale models (issue 12 §1); runs on a CPU too.

For RTB with each diffusion surrogate of the diffusers backend (``latent-x0``, ``pixel-x0``, ``unrolled``) and
for the PhotoGuard encoder baseline — or RTB alone for the bundled editors (``reference``, ``reference-gan``) —
at each ``--sizes`` side and each ``--batches`` batch (ascending, stopping at the first out-of-memory):
seconds per image, images/s, peak GPU memory per image, and model FLOPs utilisation. Then the batched
optimizer against the authors' per-image loop (``benchmarks/optimizer.py``'s ``per_image_loop``: batch 1,
three separate passes, the clean ring edit recomputed each step, on the plain network: fp32, classic
attention, NCHW, eager), printed last as ``speedup: X.XX``.

    python benchmarks/gpu.py --model DIR|reference[,reference-gan] [--sizes 512] [--batches 1,2,4,8]
        [--steps 10] [--methods all|rtb:latent-x0,...,photoguard-encoder] [--dtype fp32|fp16|bf16]
        [--attention sdpa|classic] [--channels-last] [--compile] [--checkpointing] [--levers [--skip compile]]
        [--peak-tflops T] [--unroll-steps 4] [--loop-images N] [--threads T]

Definitions (every figure is measured on the same inputs: the bundled samples resized to the side):
- one protection of B images with S = ``--steps`` steps takes T(S) seconds (the method's constants — the
  clean ring edits of the surrogate draws, the targets — and its final losses included); s/image = T(S)/B,
  images/s = B/T(S). The step time is (T(S) − T(0))/S; ``s/image@default`` extrapolates to the method's
  published step count (RTB 20, PhotoGuard 1000): (T(0) + steps·step)/B.
- peak memory: ``torch.cuda.max_memory_allocated`` during T(S); per image = (peak − allocated before) / B.
- MFU: FLOPs of one optimiser step (``torch.utils.flop_counter.FlopCounterMode``: FLOPs of a 1-step run minus
  a 0-step run, at batch 1, times B) / step time / the device's dense bf16 peak (H100 SXM 989, H100 PCIe 756,
  H100 NVL 835, H200 989 TFLOP/s; ``--peak-tflops`` overrides). Against the bf16 peak whatever ``--dtype``.
  The ``unrolled`` count includes its checkpointed forward, recomputed in the backward pass; in ``--levers`` the
  FLOPs of the first rung are used for every rung (so ``+checkpointing``'s recomputation is not counted as
  useful work).
- ``--levers``: the cumulative ladder baseline (fp32, classic attention) → +bf16 → +SDPA → +channels-last →
  +compile (→ +checkpointing for ``unrolled``), one row per rung with its ratio to the previous rung; the
  speedup then compares the best rung with the loop. CUDA graphs are not tried.
- δ, Adam's state and the projection stay float32 at every ``--dtype`` (the backend casts only the network's
  inputs and outputs); each row checks that the returned δ is float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.metadata
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a namespace package under the repository root
    sys.path.insert(0, str(REPO))

from benchmarks.optimizer import batched, generator_for, load_inputs, per_image_loop, timed  # noqa: E402
from rtb import ProtectConfig, load_inpainter  # noqa: E402
from rtb.methods import photoguard_encoder, rtb  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SURROGATES = ("latent-x0", "pixel-x0", "unrolled")
# Dense bf16 peak FLOP/s by a substring of torch.cuda.get_device_name (first match wins).
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12))
# The methods' published step counts, for the extrapolated s/image.
DEFAULT_STEPS = {"rtb": rtb.DEFAULT_STEPS, "photoguard-encoder": photoguard_encoder.DEFAULT_STEPS}
# RTB's ε (the paper's); PhotoGuard uses its own default.
RTB_EPS = 0.025
GIB = 2**30


@dataclass(frozen=True)
class Levers:
    """The speed options of one measured configuration."""

    # Compute dtype of the network: "fp32", "fp16" or "bf16" (diffusers only; the reference computes in fp32).
    dtype: str = "fp32"
    # Attention of the diffusers networks: "sdpa" (AttnProcessor2_0) or "classic" (AttnProcessor).
    attention: str = "sdpa"
    # Channels-last networks and inputs.
    channels_last: bool = False
    # torch.compile with the eager fallback (rtb.inpainters.speed.compile_with_fallback).
    compile: bool = False
    # Gradient checkpointing of the UNet's and VAE's blocks (diffusers only).
    checkpointing: bool = False

    def options(self, is_diffusers: bool) -> dict:
        """``load_inpainter`` keyword arguments; raises ``ValueError`` naming a lever the backend lacks."""
        if is_diffusers:
            return {"dtype": DTYPES[self.dtype], "attention": self.attention, "channels_last": self.channels_last,
                    "compile": self.compile, "gradient_checkpointing": self.checkpointing}
        if self.dtype != "fp32" or self.checkpointing:
            raise ValueError(f"the reference backend computes in fp32 without checkpointing; got {self}")
        return {"channels_last": self.channels_last, "compile": self.compile}

    def describe(self, is_diffusers: bool) -> str:
        parts = [self.dtype]
        if is_diffusers:
            parts.append(self.attention)
        parts += ["channels-last" if self.channels_last else "NCHW", "compile" if self.compile else "eager"]
        if self.checkpointing:
            parts.append("checkpointing")
        return ", ".join(parts)


# The authors' loop runs the plain network.
PLAIN = Levers(dtype="fp32", attention="classic")
# The cumulative ladder of --levers: (rung name, the lever it adds to the previous rungs, applies to the
# diffusers backend, to the reference backend, to the unrolled surrogate only). The first rung is PLAIN.
LADDER = (
    ("baseline fp32", {}, True, True, False),
    ("+bf16", {"dtype": "bf16"}, True, False, False),
    ("+SDPA", {"attention": "sdpa"}, True, False, False),
    ("+channels-last", {"channels_last": True}, True, True, False),
    ("+compile", {"compile": True}, True, True, False),
    ("+checkpointing", {"checkpointing": True}, True, False, True),
)


def ladder(is_diffusers: bool, surrogate: str | None, skip: set[str]) -> list[tuple[str, Levers]]:
    """The rungs of ``--levers`` that apply, each with the levers of every rung up to it (skipped ones left out)."""
    rungs, levers = [], PLAIN
    for name, change, diffusers_ok, reference_ok, unrolled_only in LADDER:
        if name in skip or not (diffusers_ok if is_diffusers else reference_ok):
            continue
        if unrolled_only and surrogate != "unrolled":
            continue
        levers = dataclasses.replace(levers, **change)
        rungs.append((name, levers))
    return rungs


@dataclass(frozen=True)
class Case:
    """One thing measured: a method, and for RTB on a diffusers model the surrogate."""

    # "rtb" or "photoguard-encoder".
    method: str
    # The diffusers surrogate (None for the reference backend and for PhotoGuard, which uses the VAE only).
    surrogate: str | None

    @property
    def name(self) -> str:
        return f"{self.method} {self.surrogate}" if self.surrogate else self.method


@dataclass(frozen=True)
class Row:
    """One batch size of one case."""

    batch: int
    # Seconds of one protection of the batch with `steps` steps, T(S).
    seconds: float
    # Seconds of the method's constants and final losses, T(0).
    overhead: float
    # Optimiser steps of the timed protection.
    steps: int
    # Peak allocated GPU memory during T(S) and its share per image above what was allocated before (None on CPU).
    peak_bytes: int | None
    per_image_bytes: float | None
    # Mean final loss of the batch.
    loss: float

    @property
    def step_seconds(self) -> float:
        return max(self.seconds - self.overhead, 1e-9) / self.steps

    @property
    def rate(self) -> float:
        return self.batch / self.seconds


def package_versions() -> str:
    """Installed versions of the packages the diffusers backend runs on ("missing" where one is not installed)."""
    parts = []
    for name in ("diffusers", "transformers", "huggingface_hub"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} missing")
    return ", ".join(parts)


def parse_list(text: str, kind=int) -> list:
    values = [kind(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return values


def protect_batch(inpainter, case: Case, x, m, steps: int):
    """One protection of ``x`` (``B×3×H×W``) with ``steps`` steps; returns the ``MethodOutput``."""
    generators = [generator_for(xi, 0) for xi in x]  # on the images' device, seeded from their content
    if case.method == "rtb":
        return rtb.run(inpainter, x, m, ProtectConfig(eps=RTB_EPS, steps=steps), generators)
    return photoguard_encoder.run(inpainter, x, m, ProtectConfig(steps=steps), generators)


def step_flops(inpainter, case: Case, x, m) -> float:
    """FLOPs of one optimiser step for one image: a 1-step protection minus a 0-step one, counted.

    A 1-step protection first runs uncounted, so that compilation probes (a forward and a backward of each
    new input signature) are not counted.
    """
    protect_batch(inpainter, case, x[:1], m[:1], 1)
    counts = []
    for steps in (0, 1):
        with FlopCounterMode(display=False) as counter:
            protect_batch(inpainter, case, x[:1], m[:1], steps)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def measure(inpainter, case: Case, x, m, batch: int, steps: int) -> Row:
    """Warm up at ``batch`` (one step: kernels, allocator, compilation), then time T(0) and T(S)."""
    xb, mb = x[:batch], m[:batch]
    device = inpainter.device
    protect_batch(inpainter, case, xb, mb, 1)
    before = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    _, overhead = timed(device, lambda: protect_batch(inpainter, case, xb, mb, 0))
    output, seconds = timed(device, lambda: protect_batch(inpainter, case, xb, mb, steps))
    if output.delta.dtype != torch.float32:
        raise AssertionError(f"δ came back as {output.delta.dtype}, not float32")
    peak = per_image = None
    if before is not None:
        peak = torch.cuda.max_memory_allocated(device)
        per_image = (peak - before) / batch
    if case.method == "rtb":
        loss = float(rtb.total_loss(output.losses, ProtectConfig(eps=RTB_EPS)).float().mean())
    else:
        loss = float(output.losses["encoder"].float().mean())
    return Row(batch, seconds, overhead, steps, peak, per_image, loss)


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def sweep(inpainter, case: Case, x, m, batches: list[int], steps: int) -> tuple[list[Row], int | None]:
    """``measure`` at each batch, ascending, stopping at the first out-of-memory; (rows, the OOM batch)."""
    rows = []
    for batch in sorted(batches):
        try:
            rows.append(measure(inpainter, case, x, m, batch, steps))
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error):
                raise
            del error
            gc.collect()
            if inpainter.device.type == "cuda":
                torch.cuda.empty_cache()
            return rows, batch
    return rows, None


def device_peak(device: torch.device, override_tflops: float | None) -> float | None:
    """The dense bf16 peak FLOP/s of ``device`` (None when unknown, and on a CPU without an override)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def describe_row(row: Row, case: Case, flops: float | None, peak: float | None) -> str:
    default_steps = DEFAULT_STEPS[case.method]
    extrapolated = (row.overhead + default_steps * row.step_seconds) / row.batch
    memory = "n/a" if row.peak_bytes is None else f"{row.peak_bytes / GIB:.2f} GiB ({row.per_image_bytes / GIB:.2f}/image)"
    if flops is None or peak is None:
        mfu = "n/a"
    else:
        mfu = f"{100 * flops * row.batch / row.step_seconds / peak:.1f}%"
    tflop = "n/a" if flops is None else f"{flops * row.batch / 1e12:.3g}"
    return (f"batch {row.batch:>3}: {row.seconds / row.batch:8.3f} s/image ({row.steps} step{'s' if row.steps > 1 else ''}), "
            f"{row.rate:8.3f} images/s, step {row.step_seconds * 1000:8.1f} ms, "
            f"{extrapolated:8.2f} s/image@{default_steps}, peak {memory}, TFLOP/step {tflop}, MFU {mfu}, "
            f"loss {row.loss:.5f}")


def compile_failure(inpainter) -> str | None:
    """Why ``compile`` fell back to eager in any of the inpainter's compiled calls (None when it did not)."""
    calls = [getattr(inpainter, key, None) for key in ("_unet", "_vae_mean", "forward")]
    failures = [getattr(call, "failure", None) for call in calls]
    return next((failure for failure in failures if failure), None)


def cases_for(is_diffusers: bool, methods: str) -> list[Case]:
    """The cases ``--methods`` names (``all``: every surrogate and PhotoGuard; the reference has RTB only)."""
    available = ([Case("rtb", s) for s in SURROGATES] + [Case("photoguard-encoder", None)] if is_diffusers
                 else [Case("rtb", None)])
    if methods == "all":
        return available
    by_name = {case.name.replace(" ", ":"): case for case in available}
    chosen = []
    for name in methods.split(","):
        if name not in by_name:
            raise ValueError(f"method {name!r} is not one of {', '.join(by_name)} for this model")
        chosen.append(by_name[name])
    return chosen


def load(model: str, is_diffusers: bool, case: Case, levers: Levers, unroll_steps: int):
    options = levers.options(is_diffusers)
    if is_diffusers:
        options |= {"surrogate": case.surrogate or "latent-x0", "unroll_steps": unroll_steps}
    return load_inpainter(model, **options)


def summary(case: Case, size: int, rows: list[Row], oom: int | None, flops, peak) -> tuple[str, Row | None]:
    """One line per case and size: batch 1 and the best batch; returns (line, best row)."""
    if not rows:
        return f"{case.name:<22} {size}²: out of memory at batch {oom}", None
    best = max(rows, key=lambda row: row.rate)
    first = rows[0]
    stop = f", out of memory at batch {oom}" if oom else ""
    memory = "n/a" if best.per_image_bytes is None else f"{best.per_image_bytes / GIB:.2f} GiB/image"
    mfu = "n/a" if flops is None or peak is None else f"{100 * flops * best.batch / best.step_seconds / peak:.1f}%"
    return (f"{case.name:<22} {size}²: batch {first.batch}: {first.seconds / first.batch:.3f} s/image, "
            f"{first.rate:.3f} images/s; best batch {best.batch}: {best.rate:.3f} images/s, "
            f"{best.seconds / best.batch:.3f} s/image, {memory}, MFU {mfu}{stop}"), best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="reference", help="diffusers DIR | reference | reference-gan, comma-separated")
    parser.add_argument("--sizes", type=parse_list, default=[512])
    parser.add_argument("--batches", type=parse_list, default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps of each timed protection")
    parser.add_argument("--methods", default="all", help="all | comma list of rtb:latent-x0, rtb:pixel-x0, "
                        "rtb:unrolled, photoguard-encoder (diffusers) or rtb (reference)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--attention", choices=("sdpa", "classic"), default="sdpa")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (UNet and VAE blocks)")
    parser.add_argument("--levers", action="store_true", help="measure the cumulative ladder of levers instead")
    parser.add_argument("--skip", default="", help="with --levers: rungs to leave out, e.g. +compile")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    parser.add_argument("--unroll-steps", type=int, default=4)
    parser.add_argument("--speedup-surrogate", choices=("latent-x0", "pixel-x0", "unrolled"), default="latent-x0",
                        help="the RTB case of a diffusers model compared with the authors' loop (default: the "
                             "backend's default surrogate)")
    parser.add_argument("--loop-images", type=int, default=None,
                        help="images of the loop-vs-batched comparison (default: the best batch)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = skip - {rung[0] for rung in LADDER}
    if unknown:
        parser.error(f"--skip names no rung: {sorted(unknown)!r}")

    # 1. The configurations to measure.
    chosen = Levers(args.dtype, args.attention, args.channels_last, args.compile, args.checkpointing)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = device_peak(device, args.peak_tflops)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device_name} ({torch.get_num_threads()} threads), torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}), {package_versions()}, bf16 peak {'n/a' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}; {args.steps} optimiser step(s) per timed "
          f"protection, batches {args.batches}, sizes {args.sizes}; TF32 matmul "
          f"{torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}; "
          "CUDA graphs: not tried")
    x_all, m_all = load_inputs(max(args.batches), max(args.sizes))
    speedup_target = None  # (model, is_diffusers, case, size, inpainter, best row)
    unloadable = set()  # models whose loader raised (printed once, then skipped)

    # 2. Each model, size and case: sweep the batches (the chosen levers, or each rung of the ladder).
    for model in args.model.split(","):
        is_diffusers = (Path(model) / "model_index.json").is_file()
        try:
            cases = cases_for(is_diffusers, args.methods)
        except ValueError as error:
            parser.error(str(error))
        for size in args.sizes:
            if model in unloadable:
                break
            x = torch.nn.functional.interpolate(x_all, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False).clamp(0, 1).to(device)
            m = (torch.nn.functional.interpolate(m_all, size=(size, size), mode="nearest") > 0.5).float().to(device)
            for case in cases:
                if args.levers:
                    rungs = ladder(is_diffusers, case.surrogate, skip)
                else:
                    rungs = [("the chosen levers", chosen)]
                previous = flops = baseline_loss = None
                for rung, levers in rungs:
                    try:
                        inpainter = load(model, is_diffusers, case, levers, args.unroll_steps)
                    except ValueError as error:
                        print(f"{model}: {error}")
                        unloadable.add(model)
                        break
                    if flops is None or not args.levers:
                        flops = step_flops(inpainter, case, x, m)
                    print(f"== {inpainter.name} | {case.name} | {size}² | {rung} ({levers.describe(is_diffusers)})")
                    rows, oom = sweep(inpainter, case, x, m, args.batches, args.steps)
                    for row in rows:
                        print("  " + describe_row(row, case, flops, peak))
                    line, best = summary(case, size, rows, oom, flops, peak)
                    failure = compile_failure(inpainter)
                    if args.levers and best is not None:
                        baseline_loss = baseline_loss or best.loss
                        ratio = f"×{best.rate / previous:.2f} on the previous rung" if previous else "first rung"
                        line += f"; {ratio}; loss ratio to the first rung {best.loss / baseline_loss:.3f}"
                        previous = best.rate
                    print(("rung " + rung + ": " if args.levers else "") + line
                          + (f"; compile fell back to eager: {failure}" if failure else ""))
                    eligible = case.method == "rtb" and case.surrogate in (None, args.speedup_surrogate)
                    if best is not None and eligible and (speedup_target is None or (
                            speedup_target[:4] == (model, is_diffusers, case, size)
                            and best.rate > speedup_target[5].rate)):
                        speedup_target = (model, is_diffusers, case, size, inpainter, best)
                    del inpainter
                    gc.collect()

    # 3. The batched optimizer (the best configuration of the first model's RTB case) against the authors'
    #    per-image loop, with the same per-image surrogate draws; on a diffusers model the case is
    #    --speedup-surrogate.
    if speedup_target is None:
        print(f"no RTB run of the first model (rtb {args.speedup_surrogate} for a diffusers model): no speedup")
        return
    model, is_diffusers, case, size, fast, best = speedup_target
    images = args.loop_images or best.batch
    x, m = load_inputs(images, size)
    x, m = x.to(fast.device), m.to(fast.device)
    plain = load(model, is_diffusers, case, PLAIN, args.unroll_steps)
    config = ProtectConfig(eps=RTB_EPS, steps=args.steps, batch_size=best.batch)
    try:
        per_image_loop(plain, x[:1], m[:1], dataclasses.replace(config, steps=1))
        loop_losses, loop_seconds = timed(plain.device, lambda: per_image_loop(plain, x, m, config))
        batch_losses, batch_seconds = timed(fast.device, lambda: batched(fast, x, m, config))
    except RuntimeError as error:  # out of memory
        print(f"the loop-vs-batched comparison (benchmarks/optimizer.py) failed on {x.device}: "
              f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        print("speedup: n/a")
        return
    loop_rate, batch_rate = images / loop_seconds, images / batch_seconds
    agreement = float(np.mean(batch_losses) / np.mean(loop_losses))
    equal = math.isfinite(agreement) and 0.9 <= agreement <= 1.1
    print(f"authors' per-image loop ({case.name}, {size}², {PLAIN.describe(is_diffusers)}, batch 1): "
          f"{loop_rate:.3f} images/s ({loop_seconds:.1f} s), mean final loss {np.mean(loop_losses):.5f}")
    print(f"batched ({fast.name}, batch {best.batch}, {images} images): {batch_rate:.3f} images/s "
          f"({batch_seconds:.1f} s), mean final loss {np.mean(batch_losses):.5f}")
    print(f"equal final losses (±10%): {'yes' if equal else 'NO'} (ratio batched/loop {agreement:.3f})")
    print(f"speedup: {batch_rate / loop_rate:.2f}")


if __name__ == "__main__":
    main()
