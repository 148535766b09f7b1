"""Resumable training state: one ``checkpoint.pt`` per stage, replaced atomically, plus a JSON-lines log.

A stopped stage resumes from its last checkpoint with the same optimiser, schedule, EMA and random-generator
states, so the resumed run draws the same batches as an uninterrupted one would have from that step on.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch


def save_checkpoint(folder: str | Path, state: dict) -> None:
    """Write ``state`` to ``folder/checkpoint.pt`` (a crash mid-write leaves the previous one intact)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "checkpoint.pt.partial"
    torch.save(state, partial)
    os.replace(partial, folder / "checkpoint.pt")


def load_checkpoint(folder: str | Path) -> dict | None:
    """The state saved by :func:`save_checkpoint` in ``folder``, or None when there is none."""
    path = Path(folder) / "checkpoint.pt"
    return torch.load(path, weights_only=False) if path.exists() else None


def log(folder: str | Path, record: dict) -> None:
    """Append ``record`` (with a wall-clock timestamp) to ``folder/log.jsonl`` and print it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"time": time.strftime("%H:%M:%S"), **record}
    with open(folder / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


class CpuClock:
    """CPU seconds of this process plus those of earlier (resumed) runs of the same stage."""

    def __init__(self, earlier: float = 0.0):
        self.earlier = earlier
        self.start = time.process_time()

    def seconds(self) -> float:
        return self.earlier + time.process_time() - self.start
