"""The one prepared device call of a lent GPU session (issue 19), and its preparation and adoption here.

    python3 benchmarks/gpu_session.py run --out DIR [--minutes 8.5] [--benchmark-minutes 3] [--dry-run CHECKPOINT]
    python benchmarks/gpu_session.py prepare          # here, before a lent session: wheels, photos, travel size
    python benchmarks/gpu_session.py adopt FILES_AT   # here, after it: checkpoint, logs, exported weights

``run`` (on the device; the exact command line is in docs/gpu-session.md):

1. trains ``reference-gan`` further (``python -m rtb_train.lama_gan``): it resumes from the committed checkpoint
   ``rtb_train/checkpoints/reference-gan`` (or from the seed where there is none) with the fixed session recipe
   (:data:`FULL`) for the minutes left after the benchmark's share, and puts the newest checkpoint (generator,
   discriminator, EMA, ``state.json``; Adam's state is not kept) under ``DIR/checkpoint/`` and the log in
   ``DIR/train.log``;
2. then, if at least ``MIN_BENCHMARK_MINUTES`` are left, builds the full-size SD-1.5 inpainting architecture
   with random weights and runs ``benchmarks/gpu.py`` on RTB ``latent-x0`` at 512² (its first line: device and
   package versions; bf16 + SDPA, batches 1, 2, 4, 8, then the authors' per-image loop and ``speedup:``) into
   ``DIR/gpu.log``, stopped at the session's deadline;
3. writes ``DIR/session.json`` (the phases, their times and exit codes, the checkpoint's step and sizes) and
   checks ``DIR`` against what the device tool brings back (8 files, 16 MiB each, 64 MiB in all, two folders
   deep, names of letters, digits, '.', '_', '-').

It imports nothing but the standard library itself: each phase is a subprocess, so a failing benchmark (no
wheels, out of memory) never costs the training, and a hung phase is killed at its deadline. ``--dry-run
CHECKPOINT`` runs the same steps on CPU with the tiny profile (:data:`DRY_RUN`: a tiny generator, the tiny SD
build) and ``CHECKPOINT`` in place of the committed checkpoint; ``tests/benchmarks/test_gpu_session.py`` runs
the documented command that way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "gpu-session.md"
# The line in DOCS right before the fenced block that holds the device command.
COMMAND_MARKER = "<!-- device-command -->"
# Where the sessions' checkpoint is committed (rtb_train.checkpoint.COMMITTED; not imported: `run` stays stdlib-only).
COMMITTED = REPO / "rtb_train" / "checkpoints" / "reference-gan"
# The training photos as made here by `prepare` (identical arrays on every machine); carried to the device.
PHOTOS = REPO / "out" / "gpu-session" / "photos.npz"
RESULTS = REPO / "benchmarks" / "results"
# After training: minutes kept for copying the checkpoint and writing the record.
SAVE_MARGIN_MINUTES = 0.5
# The benchmark starts only if at least this many minutes are left after training.
MIN_BENCHMARK_MINUTES = 1.5
# A training process still running this long after its budget (final held-out PSNR and save included) is killed.
TRAIN_GRACE_SECONDS = 90
# What the device tool brings back from $OUT.
MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES, MAX_FOLDERS = 8, 16 * 2**20, 64 * 2**20, 2
RETURN_NAME = re.compile(r"[A-Za-z0-9._-]+")
@dataclass(frozen=True)
class Profile:
    """What a session trains and measures."""

    # Name recorded in session.json.
    name: str
    # Arguments of `python -m rtb_train.lama_gan`: the run's recipe, the same in every session (the checkpoint
    # records it; a change is printed as a warning on resume). Open-ended: constant learning rates after the
    # warm-up (no decay) and a step cap no session reaches, so sessions add steps until the quality bar is met;
    # the EMA generator is what ships.
    train_args: tuple[str, ...]
    # `benchmarks/build_sd15_inpaint.py --size`.
    sd_size: str
    # Arguments of `benchmarks/gpu.py` after `--model DIR`.
    benchmark_args: tuple[str, ...]


FULL = Profile(
    name="full",
    train_args=("--seed", "0", "--device", "cuda", "--batch", "32", "--steps", "1000000", "--decay-fraction", "0",
                "--optimizer-state", "none", "--checkpoint-every", "2000", "--log-every", "200",
                "--eval-every", "2000"),
    sd_size="full",
    benchmark_args=("--sizes", "512", "--batches", "1,2,4,8", "--steps", "10", "--methods", "rtb:latent-x0",
                    "--dtype", "bf16", "--attention", "sdpa"),
)
DRY_RUN = Profile(
    name="dry-run",
    train_args=("--seed", "0", "--device", "cpu", "--batch", "2", "--crop", "32", "--pool-count", "4",
                "--heldout-size", "32", "--heldout-procedural", "1", "--stem-width", "8", "--down-widths", "16,32",
                "--blocks", "1", "--d-widths", "16,32,64", "--threads", "1", "--workers", "2", "--warmup", "2",
                "--r1-every", "2", "--steps", "4", "--decay-fraction", "0", "--optimizer-state", "none",
                "--checkpoint-every", "2", "--log-every", "2", "--eval-every", "2"),
    sd_size="tiny",
    benchmark_args=("--sizes", "64", "--batches", "1,2", "--steps", "1", "--methods", "rtb:latent-x0",
                    "--dtype", "bf16", "--attention", "sdpa", "--threads", "1"),
)


def device_command(docs: Path = DOCS) -> str:
    """The device command of the docs: the one line of the fenced block after ``COMMAND_MARKER``."""
    text = docs.read_text()
    match = re.search(re.escape(COMMAND_MARKER) + r"\s*```[a-z]*\n(.+?)\n```", text, re.DOTALL)
    if match is None or "\n" in match.group(1).strip():
        raise ValueError(f"{str(docs)!r} has no one-line fenced block after {COMMAND_MARKER!r}")
    return match.group(1).strip()


def child_environment() -> dict[str, str]:
    """The environment of the phases: the repository importable (after the carried wheels), no progress bars."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([str(REPO)] if str(REPO) not in paths else []))
    env.update(PYTHONUNBUFFERED="1", TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def run_logged(argv: list[str], log: Path, timeout: float) -> dict:
    """Run ``argv`` from the repository root, its output appended to ``log`` and echoed, killed (with everything it
    started) after ``timeout`` seconds. Returns ``{"argv", "seconds", "returncode", "killed"}``."""
    start = time.time()
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(argv)}\n")
        handle.flush()
        process = subprocess.Popen(argv, cwd=REPO, env=child_environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0)

        def copy_output() -> None:
            for line in process.stdout:
                handle.write(line)
                handle.flush()
                print(line, end="", flush=True)

        reader = threading.Thread(target=copy_output, daemon=True)
        reader.start()
        killed = False
        try:
            process.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            killed = True
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        reader.join(timeout=10)
        if killed:
            handle.write(f"[gpu_session] stopped after {time.time() - start:.0f} s: the session's deadline\n")
    return {"argv": argv, "seconds": round(time.time() - start, 1), "returncode": process.returncode, "killed": killed}


def newest_checkpoint(directory: Path) -> Path | None:
    found = sorted(p for p in directory.glob("step-*") if p.name[5:].isdigit() and (p / "state.json").is_file())
    return found[-1] if found else None


def return_problems(out: Path) -> list[str]:
    """What in ``out`` the device tool would not bring back (empty: everything comes back)."""
    problems = []
    files = sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink())
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, more than {MAX_FILES}")
    total = 0
    for path in files:
        relative = path.relative_to(out)
        size = path.lstat().st_size
        total += size
        if path.is_symlink():
            problems.append(f"{relative} is a link")
        if len(relative.parts) - 1 > MAX_FOLDERS:
            problems.append(f"{relative} is more than {MAX_FOLDERS} folders deep")
        if size > MAX_FILE_BYTES:
            problems.append(f"{relative} has {size} bytes, more than {MAX_FILE_BYTES}")
        bad = [part for part in relative.parts if not RETURN_NAME.fullmatch(part)]
        if bad:
            problems.append(f"{relative} has names outside [A-Za-z0-9._-]: {bad}")
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total} bytes in all, more than {MAX_TOTAL_BYTES}")
    return problems


def train_phase(profile: Profile, committed: Path, work: Path, out: Path, minutes: float) -> dict:
    """Phase 1: resume (or start) training for ``minutes``, then copy the newest checkpoint to ``out/checkpoint``."""
    argv = [sys.executable, "-m", "rtb_train.lama_gan", *profile.train_args, "--max-minutes", f"{minutes:.2f}",
            "--checkpoint-dir", str(work / "checkpoints"), "--init-from", str(committed),
            "--output", str(work / "reference-gan.safetensors")]
    if PHOTOS.is_file():
        argv += ["--photos", str(PHOTOS)]
    phase = run_logged(argv, out / "train.log", 60 * minutes + TRAIN_GRACE_SECONDS)
    newest = newest_checkpoint(work / "checkpoints")
    if newest is None:
        phase["checkpoint"] = None
        return phase
    target = out / "checkpoint"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for path in sorted(newest.iterdir()):
        shutil.copyfile(path, target / path.name)
    state = json.loads((target / "state.json").read_text())
    phase["checkpoint"] = {"step": state["step"], "from": newest.name,
                           "bytes": {p.name: p.stat().st_size for p in sorted(target.iterdir())}}
    return phase


def benchmark_phase(profile: Profile, work: Path, out: Path, deadline: float) -> list[dict]:
    """Phase 2: the SD-1.5 inpainting build (random weights; it imports diffusers, so it fails at once without the
    wheels) and ``benchmarks/gpu.py`` (its first line: device, torch, CUDA, diffusers, transformers,
    huggingface_hub), by ``deadline``."""
    log = out / "gpu.log"
    model, phases = work / f"sd15-{profile.sd_size}", []
    if not (model / "model_index.json").is_file():
        phases.append(run_logged([sys.executable, "benchmarks/build_sd15_inpaint.py", str(model), "--size",
                                  profile.sd_size], log, deadline - time.time()))
        if phases[-1]["returncode"] != 0:
            return phases
    phases.append(run_logged([sys.executable, "benchmarks/gpu.py", "--model", str(model), *profile.benchmark_args],
                             log, deadline - time.time()))
    return phases


def run(args: argparse.Namespace) -> int:
    """The device call: train, then (if time is left) benchmark; everything to ``--out``."""
    start = time.time()
    deadline = start + 60 * args.minutes
    profile = DRY_RUN if args.dry_run is not None else FULL
    committed = args.dry_run if args.dry_run is not None else COMMITTED
    out, work = args.out, Path(tempfile.gettempdir()) / "rtb-gpu-session"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    record = {"profile": profile.name, "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "minutes": args.minutes, "benchmark_minutes": args.benchmark_minutes, "committed": str(committed),
              "work": str(work), "photos": str(PHOTOS) if PHOTOS.is_file() else "scikit-image",
              "profile_args": asdict(profile)}
    print(f"[gpu_session] {profile.name}: {args.minutes} min in all, {args.benchmark_minutes} for the benchmark; "
          f"resuming from {committed}", flush=True)

    # 1. Training first, for the time the benchmark and the final copies leave; then its checkpoint to --out.
    train_minutes = (deadline - time.time()) / 60 - args.benchmark_minutes - SAVE_MARGIN_MINUTES
    if train_minutes <= 0:
        raise SystemExit(f"--minutes {args.minutes} leaves no time to train after --benchmark-minutes "
                         f"{args.benchmark_minutes}")
    record["train"] = train_phase(profile, committed, work, out, train_minutes)
    write_record(out, record)

    # 2. The GPU benchmark, if the budget leaves time for it.
    left = (deadline - time.time()) / 60
    if args.benchmark_minutes <= 0:
        record["benchmark"] = "not asked for (--benchmark-minutes 0)"
    elif left < MIN_BENCHMARK_MINUTES:
        record["benchmark"] = f"skipped: {left:.1f} min left, fewer than {MIN_BENCHMARK_MINUTES}"
    else:
        record["benchmark"] = benchmark_phase(profile, work, out, deadline - 60 * SAVE_MARGIN_MINUTES / 2)

    # 3. The record, and what would not come back.
    record["seconds"] = round(time.time() - start, 1)
    write_record(out, record)
    record["return_problems"] = return_problems(out)
    write_record(out, record)
    checkpoint = record["train"]["checkpoint"]
    print(f"[gpu_session] done in {record['seconds']:.0f} s; checkpoint "
          f"{'step ' + str(checkpoint['step']) if checkpoint else 'NONE'}; benchmark "
          f"{'ran' if isinstance(record['benchmark'], list) else record['benchmark']}; return problems: "
          f"{record['return_problems'] or 'none'}", flush=True)
    return 0 if checkpoint and not record["return_problems"] else 1


def write_record(out: Path, record: dict) -> None:
    (out / "session.json").write_text(json.dumps(record, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Here, on CPU: before and after a lent session


def export_photos(path: Path = PHOTOS) -> int:
    """Write the training photos (scikit-image's files, decoded here) as a compressed ``.npz`` (7.7 MB)."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from rtb_train.data import load_training_photos

    path.parent.mkdir(parents=True, exist_ok=True)
    photos = load_training_photos()
    np.savez_compressed(path, **{f"photo_{i}": photo for i, photo in enumerate(photos)})
    return path.stat().st_size


def travel_bytes(carry: list[str]) -> int:
    """Bytes of what a device call sends: tracked and untracked-not-ignored files, plus the carried folders."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    files = {REPO / name for name in listed if name and (REPO / name).is_file()}
    for folder in carry:
        files |= {p for p in (REPO / folder).rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in files)


def prepare(args: argparse.Namespace) -> int:
    """Before a lent session: the wheels (.whl/), the photos, and the size of what will travel."""
    # 1. The wheels benchmarks/gpu.py needs beyond the GPU image (diffusers and its import-time needs).
    subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_wheels.sh")], check=True)
    # 2. The training photos, so that every session trains on the same arrays.
    print(f"wrote {PHOTOS.relative_to(REPO)} ({export_photos() / 1e6:.1f} MB)")
    # 3. What travels with the call (limit 64 MiB), and the call.
    carry = [".whl", str(PHOTOS.parent.relative_to(REPO))]
    size = travel_bytes(carry)
    print(f"travels: {size / 2**20:.1f} MiB of 64 MiB (working tree + {', '.join(carry)})")
    print(f"device command ({len(device_command())} characters), carry {json.dumps(carry)}:\n{device_command()}")
    return 0 if size < 64 * 2**20 else 1


def adopt(args: argparse.Namespace) -> int:
    """After a lent session: check what came back, commit-ready copies of the checkpoint and logs, the export."""
    sys.path.insert(0, str(REPO))
    from rtb.reference.lama import LamaConfig
    from rtb_train.checkpoint import (
        export_weights,
        load_checkpoint,
        read_state,
        summarize,
    )
    from rtb_train.gan import DiscriminatorConfig, GanTrainConfig, GanTrainer

    # 1. What came back: a full-profile session (a dry run only when asked) with a loadable checkpoint.
    session = json.loads((args.files / "session.json").read_text())
    if session["profile"] != FULL.name and not (args.accept_dry_run and session["profile"] == DRY_RUN.name):
        raise ValueError(f"{str(args.files)!r} holds a {session['profile']!r} session, not a {FULL.name!r} one")
    returned = args.files / "checkpoint"
    state = read_state(returned)
    trainer = GanTrainer(LamaConfig.from_dict(state["model"]), DiscriminatorConfig.from_dict(state["discriminator"]),
                         GanTrainConfig.from_dict(state["train"]))
    load_checkpoint(returned, trainer)

    # 2. The checkpoint, with this repository's commit in the sessions that ran without git (the device).
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or None
    for entry in state["record"]["sessions"]:
        entry["commit"] = entry.get("commit") or commit
    committed = args.checkpoint
    partial = committed.with_name(committed.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(returned, partial)
    (partial / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    if committed.exists():
        shutil.rmtree(committed)
    os.replace(partial, committed)

    # 3. The raw logs, and the shipped weights exported from the checkpoint.
    date = session["started"][:10]
    args.results.mkdir(parents=True, exist_ok=True)
    for name, target in (("gpu.log", f"gpu-{date}.log"), ("train.log", f"gpu-{date}-train.log")):
        if (args.files / name).is_file():
            shutil.copyfile(args.files / name, args.results / target)
            print(f"copied {name} to {args.results / target}")
    record = export_weights(committed, args.weights)
    totals = summarize(state["record"])
    print(f"checkpoint at {committed}: step {state['step']}, {totals['images_seen']:,} images, "
          f"{totals['gpu_minutes']} GPU-minutes over {len(totals['sessions'])} session(s); exported {args.weights} "
          f"(held-out hole PSNR {record['heldout_hole_psnr_db']} dB on the trainer's masks)")
    print("next: python benchmarks/reference_quality.py --model reference-gan  (the quality row of the model card)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    call = commands.add_parser("run", help="the device call")
    call.add_argument("--out", type=Path, required=True, help="what comes back ($OUT)")
    call.add_argument("--minutes", type=float, default=8.5, help="wall-clock budget of the whole call")
    call.add_argument("--benchmark-minutes", type=float, default=3.0,
                      help="share of --minutes kept for the benchmark (0: train only)")
    call.add_argument("--dry-run", type=Path, default=None, metavar="CHECKPOINT",
                      help="the tiny CPU profile, resuming from CHECKPOINT instead of the committed checkpoint")
    commands.add_parser("prepare", help="here, before a lent session: wheels, photos, travel size, the command")
    take = commands.add_parser("adopt", help="here, after a lent session: checkpoint, logs, exported weights")
    take.add_argument("files", type=Path, help="the folder the returned files are in (the run's files_at)")
    take.add_argument("--checkpoint", type=Path, default=COMMITTED, help="where the checkpoint is committed")
    take.add_argument("--results", type=Path, default=RESULTS, help="where the raw logs are committed")
    take.add_argument("--weights", type=Path, default=REPO / "rtb" / "weights" / "reference-gan.safetensors",
                      help="the exported weights (and their .json)")
    take.add_argument("--accept-dry-run", action="store_true", help="adopt a dry run's files (tests only)")
    args = parser.parse_args(argv)
    return {"run": run, "prepare": prepare, "adopt": adopt}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
