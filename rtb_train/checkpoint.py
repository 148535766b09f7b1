"""Checkpoints of the LaMa-style GAN training (``reference-gan``): one folder of small files, and the export.

A checkpoint is a folder (written by :func:`save_checkpoint`, read by :func:`load_checkpoint`)::

    generator.safetensors       the live generator, float32 (BatchNorm statistics and counters included)
    discriminator.safetensors   the PatchGAN discriminator, float32
    ema.safetensors             the EMA generator in the shipped weights format (rtb.reference.lama), float32
    adam.safetensors            both Adam states, float32; only with optimizer_state="float32"
    state.json                  step, configurations, re-warm-up start and the cumulative training record

Each file is under the device tool's 16 MiB per returned file at the default ``LamaConfig`` (generator and EMA
9.4 MB, discriminator 11.1 MB; Adam's state would be 40.8 MB, which is why it can be left out).

``optimizer_state`` decides what happens to Adam's moments:

- ``"float32"``: stored exactly; a resumed run repeats the uninterrupted one bit for bit on CPU (same machine,
  thread count and library versions), because the data of batch ``k`` depend only on ``(seed, k)`` and nothing
  after initialisation draws from torch's random generator;
- ``"none"``: not stored; the resumed run restarts both Adam states from zero and ramps both learning rates up
  again over ``GanTrainConfig.rewarm_steps`` steps (``GanTrainer.rewarm_start``). Weights, EMA, step and data
  order are exactly those of the uninterrupted run; the updates after the resume are not. This is what the
  GPU sessions commit (``docs/gpu-session.md``): 29.8 MB instead of 70.6 MB per session.

The record in ``state.json`` accumulates over sessions: one entry per session (date, device, commit, command,
steps, images, setup and training seconds) and totals recomputed from them (:func:`summarize`).

    python -m rtb_train.checkpoint export [CHECKPOINT] [--output rtb/weights/reference-gan.safetensors] [--fp16]
    python -m rtb_train.checkpoint show [CHECKPOINT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rtb.reference.lama import load_lama_weights, save_lama_weights
from rtb_train.data import GanDataConfig
from rtb_train.gan import GanTrainConfig, GanTrainer

# Where the GPU sessions' checkpoint is committed (docs/gpu-session.md).
COMMITTED = Path(__file__).resolve().parent / "checkpoints" / "reference-gan"
# The shipped weights exported from it.
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "rtb" / "weights" / "reference-gan.safetensors"
# The value of "format" in state.json and in the metadata of the checkpoint's own safetensors files.
FORMAT = "rtb-gan-checkpoint"
VERSION = 1
GENERATOR, DISCRIMINATOR, EMA = "generator.safetensors", "discriminator.safetensors", "ema.safetensors"
ADAM, STATE = "adam.safetensors", "state.json"
# How Adam's moments are stored (see the module docstring).
OPTIMIZER_STATES = ("float32", "none")


def is_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete checkpoint (``state.json`` is written last)."""
    return (Path(folder) / STATE).is_file()


def read_state(folder: str | Path) -> dict:
    """The ``state.json`` of checkpoint ``folder``; ``ValueError`` naming the folder if it is not one."""
    path = Path(folder) / STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(folder)!r} holds no readable GAN checkpoint ({error})") from error
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} version {VERSION} file "
                         f"(format {state.get('format')!r}, version {state.get('version')!r})")
    return state


def summarize(record: dict) -> dict:
    """``record`` with its totals recomputed from its sessions (steps, images, minutes, devices)."""
    sessions = record.get("sessions", [])
    seconds = sum(s["setup_seconds"] + s["train_seconds"] for s in sessions)
    gpu_seconds = sum(s["setup_seconds"] + s["train_seconds"] for s in sessions if s.get("accelerator") == "cuda")
    return {
        **record,
        "steps": sessions[-1]["steps"][1] if sessions else 0,
        "images_seen": sum((s["steps"][1] - s["steps"][0]) * s["batch"] for s in sessions),
        "train_minutes": round(sum(s["train_seconds"] for s in sessions) / 60, 2),
        "wall_minutes": round(seconds / 60, 2),
        "gpu_minutes": round(gpu_seconds / 60, 2),
        "devices": sorted({s["device"] for s in sessions}),
    }


def checkpoint_state(trainer: GanTrainer, data: GanDataConfig, record: dict, optimizer_state: str) -> dict:
    """What ``state.json`` holds for ``trainer`` now (also the source of the weights' record)."""
    if optimizer_state not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer_state must be one of {OPTIMIZER_STATES}, got {optimizer_state!r}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": trainer.step_index,
        "optimizer_state": optimizer_state,
        "rewarm_start": trainer.rewarm_start,
        "model": trainer.model_config.to_dict(),
        "discriminator": trainer.disc_config.to_dict(),
        "train": trainer.config.to_dict(),
        "data": asdict(data),
        "record": summarize(record),
    }


def _module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _optimizer_tensors(trainer: GanTrainer) -> tuple[dict[str, torch.Tensor], dict]:
    """Both Adam states flattened to ``{"generator.3.exp_avg": tensor, ...}`` and their param groups."""
    tensors, groups = {}, {}
    for name, optimizer in (("generator", trainer.opt_g), ("discriminator", trainer.opt_d)):
        state = optimizer.state_dict()
        groups[name] = state["param_groups"]
        for index, entry in state["state"].items():
            for key, value in entry.items():
                tensors[f"{name}.{index}.{key}"] = value.detach().to("cpu", torch.float32).contiguous()
    return tensors, groups


def save_checkpoint(folder: str | Path, trainer: GanTrainer, data: GanDataConfig, record: dict,
                    optimizer_state: str = "float32") -> Path:
    """Write ``trainer`` to the checkpoint ``folder``, replacing it atomically; returns the folder.

    The files go to ``<folder>.partial`` first, which then takes the place of ``folder``, so an interrupted
    save leaves the previous checkpoint (or none) and never a half-written one.
    """
    # 1. The state first: it validates optimizer_state before anything is written.
    state = checkpoint_state(trainer, data, record, optimizer_state)
    folder = Path(folder)
    partial, old = folder.with_name(folder.name + ".partial"), folder.with_name(folder.name + ".old")
    for leftover in (partial, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    partial.mkdir(parents=True)

    # 2. Networks, the EMA in the shipped format, Adam's state when kept, state.json last.
    save_file(_module_tensors(trainer.generator), str(partial / GENERATOR), metadata={"format": FORMAT})
    save_file(_module_tensors(trainer.discriminator), str(partial / DISCRIMINATOR), metadata={"format": FORMAT})
    save_lama_weights(trainer.ema, partial / EMA)
    if optimizer_state == "float32":
        tensors, groups = _optimizer_tensors(trainer)
        save_file(tensors, str(partial / ADAM), metadata={"format": FORMAT, "param_groups": json.dumps(groups)})
    (partial / STATE).write_text(json.dumps(state, indent=1) + "\n")

    # 3. Swap the new folder in.
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)


def _load_optimizers(path: Path, trainer: GanTrainer) -> None:
    with safe_open(str(path), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    for name, optimizer in (("generator", trainer.opt_g), ("discriminator", trainer.opt_d)):
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            owner, index, field = key.split(".")
            if owner == name:
                state.setdefault(int(index), {})[field] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups[name]})


def check_compatible(folder: str | Path, state: dict, trainer: GanTrainer, data: GanDataConfig | None) -> None:
    """``ValueError`` naming ``folder`` and the difference when the checkpoint belongs to another run."""
    name = repr(str(folder))
    if state["model"] != trainer.model_config.to_dict() or state["discriminator"] != trainer.disc_config.to_dict():
        raise ValueError(f"checkpoint {name} was written for another generator or discriminator configuration: "
                         f"{state['model']}, {state['discriminator']}")
    saved_seed = GanTrainConfig.from_dict(state["train"]).seed
    if saved_seed != trainer.config.seed:
        raise ValueError(f"checkpoint {name} was written by a run with seed {saved_seed}, not {trainer.config.seed}")
    if data is not None and state["data"] != asdict(data):
        raise ValueError(f"checkpoint {name} was written by a run with other data: {state['data']}, not {asdict(data)}")


def load_checkpoint(folder: str | Path, trainer: GanTrainer, data: GanDataConfig | None = None) -> dict:
    """Restore ``trainer`` (freshly built with the checkpoint's configurations) from ``folder``; returns its state.

    Without stored Adam state the optimisers start from zero and ``trainer.rewarm_start`` is set to the step,
    which starts the learning-rate re-warm-up. ``ValueError`` for another architecture, seed or ``data``.
    """
    # 1. The record and the compatibility checks.
    folder = Path(folder)
    state = read_state(folder)
    check_compatible(folder, state, trainer, data)

    # 2. Networks; the EMA's buffers are the generator's (the trainer copies them at every step).
    trainer.generator.load_state_dict(_load_tensors(folder / GENERATOR))
    trainer.discriminator.load_state_dict(_load_tensors(folder / DISCRIMINATOR))
    trainer.ema.load_state_dict(load_lama_weights(folder / EMA).state_dict())
    with torch.no_grad():
        for ema_buffer, buffer in zip(trainer.ema.buffers(), trainer.generator.buffers()):
            ema_buffer.copy_(buffer)

    # 3. Adam's state, or fresh moments and the re-warm-up.
    trainer.opt_g.state.clear()
    trainer.opt_d.state.clear()
    if state["optimizer_state"] == "float32":
        _load_optimizers(folder / ADAM, trainer)
        trainer.rewarm_start = state["rewarm_start"]
    else:
        trainer.rewarm_start = int(state["step"])
    trainer.step_index = int(state["step"])
    return state


def weights_record(state: dict, generator_parameters: int) -> dict:
    """The training record that goes with the exported weights (safetensors metadata and ``<output>.json``)."""
    record = summarize(state["record"])
    sessions = record.get("sessions", [])
    last = sessions[-1] if sessions else {}
    heldout = record.get("heldout", [])
    return {
        "arch": "lama-gan",
        "model": state["model"],
        "discriminator": state["discriminator"],
        "train": state["train"],
        "data": state["data"],
        "steps_done": state["step"],
        "complete": state["step"] >= state["train"]["steps"],
        "images_seen": record["images_seen"],
        "train_seconds": round(sum(s["train_seconds"] for s in sessions), 1),
        "wall_seconds": round(60 * record["wall_minutes"], 1),
        "gpu_minutes": record["gpu_minutes"],
        "heldout_hole_psnr_db": heldout[-1][1] if heldout and heldout[-1][0] == state["step"] else None,
        "heldout": heldout,
        "heldout_source": record.get("heldout_source"),
        "command": last.get("command"),
        "device": last.get("device"),
        "devices": record["devices"],
        "torch": last.get("torch"),
        "generator_parameters": generator_parameters,
        "discriminator_parameters": record.get("discriminator_parameters"),
        "sessions": sessions,
    }


def export_weights(folder: str | Path = COMMITTED, output: str | Path = SHIPPED_WEIGHTS,
                   dtype: torch.dtype = torch.float32) -> dict:
    """Write the checkpoint's EMA generator to ``output`` (the shipped format) and its record to ``<output>.json``."""
    folder, output = Path(folder), Path(output)
    state = read_state(folder)
    net = load_lama_weights(folder / EMA)
    record = weights_record(state, sum(p.numel() for p in net.parameters()))
    save_lama_weights(net, output, record, dtype=dtype)
    output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def folder_sizes(folder: str | Path) -> dict[str, int]:
    """Bytes of each file of a checkpoint folder."""
    return {path.name: path.stat().st_size for path in sorted(Path(folder).iterdir()) if path.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the EMA generator as the shipped weights")
    export.add_argument("checkpoint", nargs="?", type=Path, default=COMMITTED)
    export.add_argument("--output", type=Path, default=SHIPPED_WEIGHTS)
    export.add_argument("--fp16", action="store_true", help="store the weights as float16")
    show = commands.add_parser("show", help="print the cumulative record and the file sizes")
    show.add_argument("checkpoint", nargs="?", type=Path, default=COMMITTED)
    args = parser.parse_args(argv)
    if args.command == "export":
        record = export_weights(args.checkpoint, args.output, torch.float16 if args.fp16 else torch.float32)
        print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB) and {args.output.with_suffix('.json')}: "
              f"step {record['steps_done']}, {record['images_seen']:,} images, {record['gpu_minutes']} GPU-minutes")
        return 0
    state = read_state(args.checkpoint)
    totals = {k: v for k, v in summarize(state["record"]).items() if k not in ("sessions", "heldout")}
    print(json.dumps({"step": state["step"], "optimizer_state": state["optimizer_state"], **totals}, indent=1))
    sizes = folder_sizes(args.checkpoint)
    print(", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in sizes.items())
          + f"; {sum(sizes.values()) / 1e6:.2f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
