"""Train the LaMa-style GAN candidate (``reference-gan``): FFC generator, PatchGAN, R1, feature matching.

    python -m rtb_train.lama_gan --seed 0 --steps N --output FILE.safetensors \\
        [--device cuda] [--batch B] [--workers W] [--checkpoint-dir DIR]

Data are made by ``--workers``
processes; batch ``k`` is drawn only from ``(seed, k)``, so the data do not depend on the number of workers and
a resumed run sees exactly the batches it would have seen. On CUDA the networks run under bfloat16 autocast
(the spectral branch in float32). Every ``--checkpoint-every`` steps generator, discriminator, EMA, both
optimisers, the step and the RNG states go to ``--checkpoint-dir``, and a rerun of the same command resumes
from the newest checkpoint there. The EMA generator is written to ``--output`` with the training record in its
metadata and in ``<output>.json``. Needs only torch, numpy, pillow and safetensors (plus scikit-image for the
training photos, or ``--photos`` with a file made by ``--export-photos`` on a machine that has it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from rtb.reference.lama import LamaConfig, save_lama_weights
from rtb_train.data import (
    HELDOUT_PROCEDURAL_SEED,
    GanDataConfig,
    export_training_photos,
    gan_batch,
    heldout_images,
    load_training_photos,
    pool_image,
    procedural_image,
    random_mask,
)
from rtb_train.gan import DiscriminatorConfig, GanTrainConfig, GanTrainer, apply_colour_jitter, lr_schedule_summary
from rtb_train.reference import HELDOUT_MASK_SEED, heldout_psnr

CHECKPOINT_PREFIX = "step-"
# The number of steps of a ``--steps auto`` run until its probe has fixed the real number (no decay before it).
AUTO_STEPS = 10**9
# Order of the losses in the progress lines.
LOSS_ORDER = ("d_loss", "d_adv", "r1", "g_loss", "l1", "g_adv", "fm")


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches ``start, start+1, ...``; worker ``w`` of ``W`` makes batches ``start+w+k·W``.

    The DataLoader takes batches from its workers in turn, so the order is the same as without workers.
    """

    def __init__(self, seed: int, start: int, batch: int, photos: list, pool: np.ndarray, config: GanDataConfig):
        super().__init__()
        self.seed, self.start, self.batch = seed, start, batch
        self.photos, self.pool, self.config = photos, pool, config

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = self.start + worker
        while True:
            images, holes, jitter = gan_batch(self.seed, index, self.batch, self.photos, self.pool, self.config)
            yield torch.from_numpy(images), torch.from_numpy(holes), torch.from_numpy(jitter)
            index += workers


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def to_device_batch(images: torch.Tensor, holes: torch.Tensor, jitter: torch.Tensor,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``N×S×S×3`` crops, uint8 holes and jitter parameters → float images ``N×3×S×S`` and holes."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    x = apply_colour_jitter(x, jitter.to(device, non_blocking=True))
    m = holes.to(device, non_blocking=True)[:, None].float()
    return x.contiguous(memory_format=torch.channels_last), m.contiguous(memory_format=torch.channels_last)


def render_pool(seed: int, count: int, side: int, processes: int) -> np.ndarray:
    """The procedural pool (``count×side×side×3`` uint8) rendered by ``processes`` processes (same for any number)."""
    jobs = [(seed, i, side) for i in range(count)]
    if processes <= 1 or count < 2:
        return np.stack([pool_image(*job) for job in jobs])
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(processes) as workers:
        return np.stack(workers.starmap(pool_image, jobs, chunksize=max(1, count // (8 * processes))))


def heldout_set(size: int, procedural: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Held-out images and fixed masks for progress lines (the masks of :mod:`rtb_train.reference`)."""
    try:
        images = [image for _, image in heldout_images(size, procedural)]
        source = f"held-out set ({len(images)} images)"
    except Exception as error:  # noqa: BLE001 - no scikit-image (or its photos): the procedural part only
        rng = np.random.default_rng(HELDOUT_PROCEDURAL_SEED)
        images = [procedural_image(rng, size) for _ in range(procedural)]
        source = f"procedural held-out images only ({len(images)}; held-out photos unavailable: {error!r})"
    mask_rng = np.random.default_rng(HELDOUT_MASK_SEED)
    masks = [random_mask(mask_rng, size, 0.05, 0.25) for _ in images]
    return images, masks, source


def checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    return sorted(directory.glob(f"{CHECKPOINT_PREFIX}*.pt")) if directory.is_dir() else []


def save_checkpoint(directory: Path, trainer: GanTrainer, extra: dict, keep: int = 2) -> Path:
    """Write a checkpoint atomically (temporary file, then rename); keep the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = trainer.state_dict()
    state["rng_torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    state["extra"] = json.dumps(extra)
    path = directory / f"{CHECKPOINT_PREFIX}{trainer.step_index:08d}.pt"
    partial = path.with_suffix(".pt.partial")
    torch.save(state, partial)
    os.replace(partial, path)
    for old in checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def load_newest_checkpoint(directory: Path, trainer: GanTrainer, data: GanDataConfig,
                           adopt_steps: bool = False) -> dict | None:
    """Resume ``trainer`` from the newest checkpoint in ``directory``; returns its extra record or None.

    ``adopt_steps`` (``--steps auto``): take the total number of steps from the checkpoint.
    """
    found = checkpoints(directory)
    if not found:
        return None
    state = torch.load(found[-1], map_location=trainer.device, weights_only=True)
    extra = json.loads(state["extra"])
    saved_train = GanTrainConfig.from_dict(state["train_config"])
    if adopt_steps:
        trainer.config = replace(trainer.config, steps=saved_train.steps)
    if saved_train.seed != trainer.config.seed or extra.get("data") != asdict(data):
        raise ValueError(f"checkpoint {str(found[-1])!r} was written by a run with another seed or data; "
                         "use another --checkpoint-dir")
    if saved_train != trainer.config:
        changed = {k: (v, getattr(trainer.config, k)) for k, v in asdict(saved_train).items()
                   if getattr(trainer.config, k) != v}
        print(f"warning: resuming with changed training settings (checkpoint, now): {changed}", flush=True)
    trainer.load_state_dict(state)
    torch.set_rng_state(state["rng_torch"].cpu())
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    return extra


def device_description(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch threads"


def build_parser() -> argparse.ArgumentParser:
    model, disc, train, data = LamaConfig(), DiscriminatorConfig(), GanTrainConfig(), GanDataConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=train.seed)
    parser.add_argument("--steps", default=str(train.steps),
                        help="optimiser steps, or 'auto': after --probe-steps timed steps, as many as fit in "
                             "--time-budget-minutes of training (the total is recorded; rerunning with it explicitly "
                             "is the same run)")
    parser.add_argument("--time-budget-minutes", type=float, default=None,
                        help="with --steps auto: minutes of training (all sessions together, setup not counted)")
    parser.add_argument("--probe-steps", type=int, default=200, help="with --steps auto: steps timed")
    parser.add_argument("--output", type=Path, default=Path("rtb/weights/reference-gan.safetensors"))
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=train.batch)
    parser.add_argument("--crop", type=int, default=data.crop, help="side of the training crops")
    parser.add_argument("--workers", type=int, default=None,
                        help="data worker processes (default: CPU cores − 1 on CUDA, 0 on CPU: made in-process)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoints; resumes from the newest")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=1000, help="steps between held-out PSNR lines")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (checkpoint + weights) after this many minutes of this session, setup included; "
                             "rerun the same command to resume")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--photos", default=None, help=".npz of the training photos (instead of scikit-image)")
    parser.add_argument("--export-photos", default=None, metavar="NPZ",
                        help="write the training photos to NPZ and exit (for a machine without scikit-image)")
    parser.add_argument("--pool-count", type=int, default=data.pool_count)
    parser.add_argument("--pool-side", type=int, default=None, help="default: 1.25 × crop")
    parser.add_argument("--heldout-size", type=int, default=256)
    parser.add_argument("--heldout-procedural", type=int, default=8)
    parser.add_argument("--fp16-weights", action="store_true", help="store the output weights as float16")
    group = parser.add_argument_group("recipe (GanTrainConfig)")
    for field in ("lr_g", "lr_d", "beta1", "beta2", "decay_fraction", "l1_weight", "adv_weight", "fm_weight",
                  "r1_gamma", "ema_decay"):
        group.add_argument("--" + field.replace("_", "-"), type=float, default=getattr(train, field))
    for field in ("warmup", "r1_every"):
        group.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(train, field))
    group.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too")
    group = parser.add_argument_group("architecture (LamaConfig, DiscriminatorConfig)")
    group.add_argument("--stem-width", type=int, default=model.stem_width)
    group.add_argument("--down-widths", default=",".join(map(str, model.down_widths)))
    group.add_argument("--blocks", type=int, default=model.blocks)
    group.add_argument("--global-ratio", type=float, default=model.global_ratio)
    group.add_argument("--d-widths", default=",".join(map(str, disc.widths)))
    group.add_argument("--spectral-norm", action="store_true")
    return parser


def load_or_render_pool(seed: int, data: GanDataConfig, processes: int,
                        cache_dir: Path | None) -> tuple[np.ndarray, str]:
    """The procedural pool, from ``cache_dir`` when an earlier session of the run left it there."""
    cache = cache_dir / f"pool-seed{seed}-{data.pool_count}x{data.pool_side}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        return np.load(cache), "cached"
    pool = render_pool(seed, data.pool_count, data.pool_side, processes)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial")
        with open(partial, "wb") as handle:
            np.save(handle, pool)
        os.replace(partial, cache)
    return pool, "rendered"


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.export_photos:
        export_training_photos(args.export_photos)
        print(f"wrote the training photos to {args.export_photos}", flush=True)
        return 0
    start = time.time()
    command = command or "python -m rtb_train.lama_gan " + " ".join(sys.argv[1:] if argv is None else argv)
    auto_steps = args.steps == "auto"
    if auto_steps and args.time_budget_minutes is None:
        raise SystemExit("--steps auto needs --time-budget-minutes")
    if not auto_steps and not args.steps.isdigit():
        raise SystemExit(f"--steps must be a positive integer or 'auto', got {args.steps!r}")

    # 1. Configuration and device.
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    workers = args.workers
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) - 1) if device.type == "cuda" else 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = LamaConfig(stem_width=args.stem_width, down_widths=tuple(int(w) for w in args.down_widths.split(",")),
                       blocks=args.blocks, global_ratio=args.global_ratio)
    disc = DiscriminatorConfig(widths=tuple(int(w) for w in args.d_widths.split(",")), spectral_norm=args.spectral_norm)
    train = GanTrainConfig(
        seed=args.seed, steps=AUTO_STEPS if auto_steps else int(args.steps), batch=args.batch, crop=args.crop,
        lr_g=args.lr_g, lr_d=args.lr_d, beta1=args.beta1, beta2=args.beta2, warmup=args.warmup,
        decay_fraction=args.decay_fraction, l1_weight=args.l1_weight, adv_weight=args.adv_weight,
        fm_weight=args.fm_weight, r1_gamma=args.r1_gamma, r1_every=args.r1_every, ema_decay=args.ema_decay,
        bf16=not args.no_bf16,
    )
    data = GanDataConfig(crop=args.crop, pool_count=args.pool_count,
                         pool_side=args.pool_side or int(round(1.25 * args.crop)))
    if args.crop % model.size_multiple or args.heldout_size % model.size_multiple:
        raise SystemExit(f"--crop and --heldout-size must be multiples of {model.size_multiple}")

    # 2. Data: training photos, the procedural pool (rendered in parallel), held-out images for progress lines.
    photos = load_training_photos(args.photos)
    pool, how = load_or_render_pool(train.seed, data, max(workers, 1), args.checkpoint_dir)
    pool_seconds = time.time() - start
    heldout, heldout_masks, heldout_source = heldout_set(args.heldout_size, args.heldout_procedural)
    print(f"data ready in {time.time() - start:.0f}s (pool of {len(pool)} at {data.pool_side}px {how} in "
          f"{pool_seconds:.0f}s; {len(photos)} photos; progress on the {heldout_source})", flush=True)

    # 3. Networks, optimisers, and the newest checkpoint if there is one.
    trainer = GanTrainer(model, disc, train, device)
    g_params = sum(p.numel() for p in trainer.generator.parameters())
    d_params = sum(p.numel() for p in trainer.discriminator.parameters())
    print(f"device {device_description(device, torch.get_num_threads())}; generator {g_params:,} parameters, "
          f"discriminator {d_params:,}; batch {train.batch} of {train.crop}px; {workers} data workers", flush=True)
    previous = {"train_seconds": 0.0, "sessions": [], "heldout": []}
    if args.checkpoint_dir is not None:
        resumed = load_newest_checkpoint(args.checkpoint_dir, trainer, data, adopt_steps=auto_steps)
        if resumed is not None:
            previous = resumed
            print(f"resumed from step {trainer.step_index} ({previous['train_seconds'] / 60:.1f} min of training "
                  "so far)", flush=True)
    if trainer.config.steps != AUTO_STEPS:
        print(f"schedule: {lr_schedule_summary(trainer.config)}", flush=True)

    # 4. Training loop.
    setup_seconds = time.time() - start
    session_start = time.time()
    first_step = trainer.step_index
    heldout_log: list = previous["heldout"]

    def extra() -> dict:
        """The record a checkpoint carries: data config, training time and sessions so far, held-out progress."""
        now = time.time() - session_start
        return {
            "data": asdict(data),
            "train_seconds": previous["train_seconds"] + now,
            "sessions": previous["sessions"] + [{"device": device_description(device, torch.get_num_threads()),
                                                 "workers": workers, "steps": [first_step, trainer.step_index],
                                                 "setup_seconds": round(setup_seconds, 1),
                                                 "train_seconds": round(now, 1)}],
            "heldout": heldout_log,
        }

    stopped_early = False
    if trainer.step_index < trainer.config.steps:
        loader = torch.utils.data.DataLoader(
            BatchStream(train.seed, trainer.step_index, train.batch, photos, pool, data),
            batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
            worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        window_start, wait = time.time(), 0.0
        probe_start: tuple[int, float] | None = None
        batches = iter(loader)
        while trainer.step_index < trainer.config.steps:
            fetch = time.time()
            images, holes, jitter = next(batches)
            wait += time.time() - fetch
            x, m = to_device_batch(images, holes, jitter, device)
            for key, value in trainer.step(x, m).items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            step = trainer.step_index
            # --steps auto: time steps 20..probe of this session, then fix the total so training fits the budget
            # (only the last decay_fraction of the schedule depends on the total, and it has not started yet).
            if trainer.config.steps == AUTO_STEPS:
                if step - first_step == 20:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    probe_start = (step, time.time())
                elif probe_start is not None and step - probe_start[0] >= args.probe_steps:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    rate = (step - probe_start[0]) / (time.time() - probe_start[1])
                    left = 60 * args.time_budget_minutes - (previous["train_seconds"] + time.time() - session_start)
                    total = step + max(int(rate * left), 0)
                    trainer.config = replace(trainer.config, steps=max(total, step + 1))
                    print(f"steps auto: {rate:.2f} steps/s ({rate * train.batch:.0f} img/s) over {args.probe_steps} "
                          f"steps → {trainer.config.steps} steps in {args.time_budget_minutes} min of training; "
                          f"schedule: {lr_schedule_summary(trainer.config)}", flush=True)
            total_steps = trainer.config.steps
            done = step == total_steps
            over_time = args.max_minutes is not None and time.time() - start > 60 * args.max_minutes
            if step % args.log_every == 0 or done or over_time:
                elapsed = time.time() - window_start
                steps_in_window = max(counts.get("l1", 1), 1)
                losses = " ".join(f"{k} {float(sums[k]) / counts[k]:.4f}" for k in LOSS_ORDER if k in sums)
                shown_total = "auto" if total_steps == AUTO_STEPS else total_steps
                line = (f"step {step}/{shown_total} | {losses} | {steps_in_window * train.batch / elapsed:.0f} img/s, "
                        f"data wait {100 * wait / elapsed:.0f}% | "
                        f"{(previous['train_seconds'] + time.time() - session_start) / 60:.1f} min")
                if step % args.eval_every == 0 or done or over_time:
                    psnr = heldout_psnr(trainer.ema, heldout, heldout_masks, device)
                    heldout_log.append([step, round(psnr, 3)])
                    line += f" | held-out hole PSNR {psnr:.2f} dB"
                print(line, flush=True)
                sums, counts, window_start, wait = {}, {}, time.time(), 0.0
            if args.checkpoint_dir is not None and (step % args.checkpoint_every == 0 or done or over_time):
                save_checkpoint(args.checkpoint_dir, trainer, extra())
            if over_time and not done:
                stopped_early = True
                print(f"stopping after {args.max_minutes} min at step {step}; rerun the command to resume", flush=True)
                break
        del batches, loader

    # 5. The EMA generator and the training record.
    record = extra()
    sessions = record["sessions"]
    record.update(
        model=model.to_dict(),
        discriminator=disc.to_dict(),
        train=trainer.config.to_dict(),
        arch="lama-gan",
        steps_done=trainer.step_index,
        complete=not stopped_early and trainer.step_index == trainer.config.steps,
        train_seconds=round(record["train_seconds"], 1),
        wall_seconds=round(sum(s["setup_seconds"] + s["train_seconds"] for s in sessions), 1),
        heldout_hole_psnr_db=round(heldout_psnr(trainer.ema, heldout, heldout_masks, device), 3),
        heldout_source=heldout_source,
        command=command,
        device=sessions[-1]["device"],
        torch=torch.__version__,
        generator_parameters=g_params,
        discriminator_parameters=d_params,
    )
    save_lama_weights(trainer.ema, args.output, record, dtype=torch.float16 if args.fp16_weights else torch.float32)
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {args.output} at step {trainer.step_index} after {record['wall_seconds'] / 60:.1f} min "
          f"(held-out hole PSNR {record['heldout_hole_psnr_db']:.2f} dB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
