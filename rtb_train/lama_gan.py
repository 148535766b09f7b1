"""Train the LaMa-style GAN candidate (``reference-gan``): FFC generator, PatchGAN, R1, feature matching.

    python -m rtb_train.lama_gan --seed 0 --steps N --output FILE.safetensors \\
        [--device cuda] [--batch B] [--workers W] [--checkpoint-dir DIR] [--init-from CHECKPOINT] \\
        [--optimizer-state float32|none] [--max-minutes M]

Data are made by ``--workers`` processes; batch ``k`` is drawn only from ``(seed, k)``, so the data do not
depend on the number of workers and a resumed run sees exactly the batches it would have seen. On CUDA the
networks run under bfloat16 autocast (the spectral branch in float32).

Checkpoints (:mod:`rtb_train.checkpoint`: separate safetensors files for generator, discriminator, EMA and,
with ``--optimizer-state float32``, Adam's state, plus ``state.json`` with the cumulative record) go to
``--checkpoint-dir``/``step-NNNNNNNN/`` every ``--checkpoint-every`` steps and when the run ends or stops; the
newest two are kept. A rerun of the same command resumes from the newest one there; when there is none, from
``--init-from`` (a checkpoint folder such as the committed ``rtb_train/checkpoints/reference-gan``), and
otherwise from the seed. The EMA generator is written to ``--output`` with the training record in its metadata
and in ``<output>.json``. Needs only torch, numpy, pillow and safetensors (plus scikit-image for the training
photos, or ``--photos`` with a file made by ``--export-photos`` on a machine that has it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from rtb.reference.lama import LamaConfig, save_lama_weights
from rtb_train.checkpoint import (
    OPTIMIZER_STATES,
    checkpoint_state,
    is_checkpoint,
    load_checkpoint,
    save_checkpoint,
    weights_record,
)
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
from rtb_train.gan import (
    DiscriminatorConfig,
    GanTrainConfig,
    GanTrainer,
    apply_colour_jitter,
    lr_schedule_summary,
)
from rtb_train.reference import HELDOUT_MASK_SEED, heldout_psnr

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_PREFIX = "step-"
# The number of steps of a ``--steps auto`` run until its probe has fixed the real number (no decay before it).
AUTO_STEPS = 10**9
# Steps of a ``--steps auto`` session before its probe starts timing (kernel selection, allocator warm-up).
PROBE_WARMUP_STEPS = 20
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


def step_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint folders ``step-NNNNNNNN`` in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [path for path in directory.glob(f"{CHECKPOINT_PREFIX}*") if path.is_dir() and path.name[5:].isdigit()]
    return sorted(path for path in found if is_checkpoint(path))


def save_step_checkpoint(directory: Path, trainer: GanTrainer, data: GanDataConfig, record: dict,
                         optimizer_state: str, keep: int = 2) -> Path:
    """Write ``directory/step-NNNNNNNN`` (atomically) and keep the newest ``keep`` checkpoints."""
    path = save_checkpoint(directory / f"{CHECKPOINT_PREFIX}{trainer.step_index:08d}", trainer, data, record,
                           optimizer_state)
    for old in step_checkpoints(directory)[:-keep]:
        shutil.rmtree(old)
    return path


def device_description(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch threads"


def repository_commit() -> str | None:
    """The commit this code was checked out at (None where there is no git repository, as on the device)."""
    try:
        result = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


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
    parser.add_argument("--init-from", type=Path, default=None,
                        help="a checkpoint folder to resume from when --checkpoint-dir holds none (e.g. the "
                             "committed rtb_train/checkpoints/reference-gan); a missing one means: from the seed")
    parser.add_argument("--optimizer-state", choices=OPTIMIZER_STATES, default="float32",
                        help="Adam's state in the checkpoints: float32 (exact resume) or none (29.8 MB instead of "
                             "70.6 MB at the default config; the resume re-warms the learning rates)")
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
    for field in ("warmup", "r1_every", "rewarm_steps"):
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


# ---------------------------------------------------------------------------------------------------------
# One run of the trainer: configuration, data, trainer, training loop, results


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one invocation."""

    # The generator's architecture.
    model: LamaConfig
    # The discriminator's architecture.
    disc: DiscriminatorConfig
    # The recipe (``steps`` is AUTO_STEPS until a ``--steps auto`` probe fixes it).
    train: GanTrainConfig
    # The training data.
    data: GanDataConfig
    # The training device.
    device: torch.device
    # Data worker processes (0: the batches are made in the training process).
    workers: int


@dataclass(frozen=True)
class TrainingData:
    """Everything the training loop and its progress lines read."""

    # The training photos (uint8 ``H×W×3``) and where they came from, with a digest of their pixels.
    photos: list
    photos_source: str
    # The procedural pool (uint8 ``count×side×side×3``).
    pool: np.ndarray
    # Held-out images (float32 ``H×W×3``), their fixed masks, and a description of the set.
    heldout: list
    heldout_masks: list
    heldout_source: str


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Step 1: the configurations from the command line, the device and the number of data workers."""
    auto_steps = args.steps == "auto"
    if auto_steps and args.time_budget_minutes is None:
        raise SystemExit("--steps auto needs --time-budget-minutes")
    if not auto_steps and not args.steps.isdigit():
        raise SystemExit(f"--steps must be a positive integer or 'auto', got {args.steps!r}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    workers = args.workers
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) - 1) if device.type == "cuda" else 0
    model = LamaConfig(stem_width=args.stem_width, down_widths=tuple(int(w) for w in args.down_widths.split(",")),
                       blocks=args.blocks, global_ratio=args.global_ratio)
    disc = DiscriminatorConfig(widths=tuple(int(w) for w in args.d_widths.split(",")), spectral_norm=args.spectral_norm)
    train = GanTrainConfig(
        seed=args.seed, steps=AUTO_STEPS if auto_steps else int(args.steps), batch=args.batch, crop=args.crop,
        lr_g=args.lr_g, lr_d=args.lr_d, beta1=args.beta1, beta2=args.beta2, warmup=args.warmup,
        decay_fraction=args.decay_fraction, l1_weight=args.l1_weight, adv_weight=args.adv_weight,
        fm_weight=args.fm_weight, r1_gamma=args.r1_gamma, r1_every=args.r1_every, ema_decay=args.ema_decay,
        rewarm_steps=args.rewarm_steps, bf16=not args.no_bf16,
    )
    data = GanDataConfig(crop=args.crop, pool_count=args.pool_count,
                         pool_side=args.pool_side or round(1.25 * args.crop))
    if args.crop % model.size_multiple or args.heldout_size % model.size_multiple:
        raise SystemExit(f"--crop and --heldout-size must be multiples of {model.size_multiple}")
    return RunConfig(model, disc, train, data, device, workers)


def configure_torch(args: argparse.Namespace, device: torch.device) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def prepare_data(args: argparse.Namespace, run: RunConfig, start: float) -> TrainingData:
    """Step 2: training photos, the procedural pool (rendered in parallel), held-out images for progress lines."""
    photos = load_training_photos(args.photos)
    digest = hashlib.sha256()
    for photo in photos:
        digest.update(np.ascontiguousarray(photo).tobytes())
    photos_source = f"{args.photos or 'scikit-image'} (sha256 {digest.hexdigest()[:16]})"
    pool, how = load_or_render_pool(run.train.seed, run.data, max(run.workers, 1), args.checkpoint_dir)
    pool_seconds = time.time() - start
    heldout, masks, heldout_source = heldout_set(args.heldout_size, args.heldout_procedural)
    print(f"data ready in {time.time() - start:.0f}s (pool of {len(pool)} at {run.data.pool_side}px {how} in "
          f"{pool_seconds:.0f}s; {len(photos)} photos from {photos_source}; progress on the {heldout_source})",
          flush=True)
    return TrainingData(photos, photos_source, pool, heldout, masks, heldout_source)


def prepare_trainer(args: argparse.Namespace, run: RunConfig) -> tuple[GanTrainer, dict]:
    """Step 3: networks and optimisers, resumed from the newest checkpoint (or ``--init-from``) if there is one.

    Returns the trainer and the record of the earlier sessions (empty when starting from the seed).
    """
    trainer = GanTrainer(run.model, run.disc, run.train, run.device)
    g_params = sum(p.numel() for p in trainer.generator.parameters())
    d_params = sum(p.numel() for p in trainer.discriminator.parameters())
    print(f"device {device_description(run.device, torch.get_num_threads())}; generator {g_params:,} parameters, "
          f"discriminator {d_params:,}; batch {run.train.batch} of {run.train.crop}px; {run.workers} data workers",
          flush=True)
    found = step_checkpoints(args.checkpoint_dir) if args.checkpoint_dir is not None else []
    source = found[-1] if found else None
    if source is None and args.init_from is not None:
        if is_checkpoint(args.init_from):
            source = args.init_from
        else:
            print(f"no checkpoint in {args.init_from}: starting from the seed", flush=True)
    previous: dict = {}
    if source is not None:
        state = load_checkpoint(source, trainer, run.data)
        saved_train = GanTrainConfig.from_dict(state["train"])
        if run.train.steps == AUTO_STEPS:
            trainer.config = replace(trainer.config, steps=saved_train.steps)
        if saved_train != trainer.config:
            changed = {k: (v, getattr(trainer.config, k)) for k, v in saved_train.to_dict().items()
                       if getattr(trainer.config, k) != v}
            print(f"warning: resuming with changed training settings (checkpoint, now): {changed}", flush=True)
        previous = state["record"]
        rewarm = f"; Adam restarts, re-warm-up over {trainer.config.rewarm_steps} steps" if \
            state["optimizer_state"] == "none" else ""
        print(f"resumed from {source} at step {trainer.step_index} ({previous.get('train_minutes', 0):.1f} min of "
              f"training so far{rewarm})", flush=True)
    if trainer.config.steps != AUTO_STEPS:
        print(f"schedule: {lr_schedule_summary(trainer.config)}", flush=True)
    return trainer, previous


class SessionRecord:
    """The training record: the sessions before this one (from the checkpoint) and this one, as it goes."""

    def __init__(self, previous: dict, entry: dict, start: float, first_step: int, discriminator_parameters: int):
        self.previous_sessions = list(previous.get("sessions", []))
        self.heldout: list = list(previous.get("heldout", []))
        self.entry, self.start, self.first_step = entry, start, first_step
        self.discriminator_parameters = discriminator_parameters
        self.train_start = time.time()

    def train_seconds(self) -> float:
        """Training seconds of all sessions so far, this one included."""
        return sum(s["train_seconds"] for s in self.previous_sessions) + time.time() - self.train_start

    def current(self, step: int, heldout_source: str) -> dict:
        session = {**self.entry, "steps": [self.first_step, step],
                   "setup_seconds": round(self.train_start - self.start, 1),
                   "train_seconds": round(time.time() - self.train_start, 1)}
        return {"sessions": self.previous_sessions + [session], "heldout": self.heldout,
                "heldout_source": heldout_source, "discriminator_parameters": self.discriminator_parameters}


class Progress:
    """Mean losses, throughput and data wait over the steps since the last progress line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.window_start, self.wait = time.time(), 0.0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def line(self, step: int, total_steps: int, batch: int, train_seconds: float) -> str:
        elapsed = time.time() - self.window_start
        steps_in_window = max(self.counts.get("l1", 1), 1)
        losses = " ".join(f"{k} {float(self.sums[k]) / self.counts[k]:.4f}" for k in LOSS_ORDER if k in self.sums)
        shown_total = "auto" if total_steps == AUTO_STEPS else total_steps
        return (f"step {step}/{shown_total} | {losses} | {steps_in_window * batch / elapsed:.0f} img/s, "
                f"data wait {100 * self.wait / elapsed:.0f}% | {train_seconds / 60:.1f} min")


class AutoSteps:
    """``--steps auto``: times this session's steps ``PROBE_WARMUP_STEPS`` … ``+probe_steps``, then fixes the total
    so that training fits the budget (only the last ``decay_fraction`` of the schedule depends on the total, and
    it has not started yet)."""

    def __init__(self, probe_steps: int, budget_minutes: float, first_step: int):
        self.probe_steps, self.budget_minutes, self.first_step = probe_steps, budget_minutes, first_step
        self.probe_start: tuple[int, float] | None = None

    def after_step(self, trainer: GanTrainer, session: SessionRecord) -> None:
        if trainer.config.steps != AUTO_STEPS:
            return
        step = trainer.step_index
        if step - self.first_step == PROBE_WARMUP_STEPS:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            self.probe_start = (step, time.time())
        elif self.probe_start is not None and step - self.probe_start[0] >= self.probe_steps:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            rate = (step - self.probe_start[0]) / (time.time() - self.probe_start[1])
            left = 60 * self.budget_minutes - session.train_seconds()
            trainer.config = replace(trainer.config, steps=max(step + max(int(rate * left), 0), step + 1))
            print(f"steps auto: {rate:.2f} steps/s ({rate * trainer.config.batch:.0f} img/s) over {self.probe_steps} "
                  f"steps → {trainer.config.steps} steps in {self.budget_minutes} min of training; "
                  f"schedule: {lr_schedule_summary(trainer.config)}", flush=True)


def make_loader(run: RunConfig, data: TrainingData, start_batch: int) -> torch.utils.data.DataLoader:
    """Batches from `start_batch` on, made by `run.workers` processes (in this one when 0)."""
    workers = run.workers
    return torch.utils.data.DataLoader(
        BatchStream(run.train.seed, start_batch, run.train.batch, data.photos, data.pool, run.data),
        batch_size=None, num_workers=workers, pin_memory=run.device.type == "cuda",
        worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def train(args: argparse.Namespace, run: RunConfig, data: TrainingData, trainer: GanTrainer,
          session: SessionRecord) -> bool:
    """Step 4: train until the configured steps, or until ``--max-minutes``; returns whether it stopped early.

    Progress lines every ``--log-every`` steps (held-out PSNR every ``--eval-every``), checkpoints every
    ``--checkpoint-every`` steps; both also at the last step.
    """
    if trainer.step_index >= trainer.config.steps:
        return False
    batches = iter(make_loader(run, data, trainer.step_index))
    progress = Progress()
    auto = AutoSteps(args.probe_steps, args.time_budget_minutes, trainer.step_index) \
        if trainer.config.steps == AUTO_STEPS else None
    while trainer.step_index < trainer.config.steps:
        fetch = time.time()
        images, holes, jitter = next(batches)
        progress.wait += time.time() - fetch
        progress.add(trainer.step(*to_device_batch(images, holes, jitter, run.device)))
        if auto is not None:
            auto.after_step(trainer, session)
        step = trainer.step_index
        done = step == trainer.config.steps
        over_time = args.max_minutes is not None and time.time() - session.start > 60 * args.max_minutes
        if step % args.log_every == 0 or done or over_time:
            line = progress.line(step, trainer.config.steps, run.train.batch, session.train_seconds())
            if step % args.eval_every == 0 or done or over_time:
                psnr = heldout_psnr(trainer.ema, data.heldout, data.heldout_masks, run.device)
                session.heldout.append([step, round(psnr, 3)])
                line += f" | held-out hole PSNR {psnr:.2f} dB"
            print(line, flush=True)
            progress.reset()
        if args.checkpoint_dir is not None and (step % args.checkpoint_every == 0 or done or over_time):
            save_step_checkpoint(args.checkpoint_dir, trainer, run.data, session.current(step, data.heldout_source),
                                 args.optimizer_state)
        if over_time and not done:
            print(f"stopping after {args.max_minutes} min at step {step}; rerun the command to resume", flush=True)
            return True
    return False


def save_results(args: argparse.Namespace, run: RunConfig, data: TrainingData, trainer: GanTrainer,
                 session: SessionRecord) -> dict:
    """Step 5: the EMA generator to ``--output`` with the training record (metadata and ``<output>.json``)."""
    step = trainer.step_index
    if not session.heldout or session.heldout[-1][0] != step:
        session.heldout.append([step, round(heldout_psnr(trainer.ema, data.heldout, data.heldout_masks,
                                                         run.device), 3)])
    state = checkpoint_state(trainer, run.data, session.current(step, data.heldout_source), args.optimizer_state)
    record = weights_record(state, sum(p.numel() for p in trainer.ema.parameters()))
    save_lama_weights(trainer.ema, args.output, record, dtype=torch.float16 if args.fp16_weights else torch.float32)
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {args.output} at step {step} after {record['wall_seconds'] / 60:.1f} min "
          f"(held-out hole PSNR {record['heldout_hole_psnr_db']:.2f} dB)", flush=True)
    return record


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.export_photos:
        export_training_photos(args.export_photos)
        print(f"wrote the training photos to {args.export_photos}", flush=True)
        return 0
    start = time.time()
    command = command or "python -m rtb_train.lama_gan " + " ".join(sys.argv[1:] if argv is None else argv)

    # 1. Configuration and device.
    run = resolve_config(args)
    configure_torch(args, run.device)

    # 2. Data: training photos, the procedural pool, held-out images for progress lines.
    data = prepare_data(args, run, start)

    # 3. Networks, optimisers, and the newest checkpoint (or --init-from) if there is one.
    trainer, previous = prepare_trainer(args, run)
    entry = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "device": device_description(run.device, torch.get_num_threads()),
        "accelerator": run.device.type,
        "commit": repository_commit(),
        "command": command,
        "torch": torch.__version__,
        "workers": run.workers,
        "batch": run.train.batch,
        "photos": data.photos_source,
    }
    session = SessionRecord(previous, entry, start, trainer.step_index,
                            sum(p.numel() for p in trainer.discriminator.parameters()))

    # 4. Training loop (checkpoints along the way and at the end).
    train(args, run, data, trainer, session)

    # 5. The EMA generator and the training record.
    save_results(args, run, data, trainer, session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
