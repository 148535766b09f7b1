"""A small CNN that names what a picture of the stand-in's domain shows: the object class (or none), the scene,
and the instance attributes (body colour, surface pattern, pattern colour) that make a subject.

It is what "subject present" and "class rate" are measured with (:mod:`rtb.personalization.measures`). Trained
by ``python -m rtb_train.standin_t2i recogniser``; the weights carry their label names in the safetensors
metadata, so this module knows nothing of the domain's drawing code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class RecogniserConfig:
    """Shape of the recogniser."""

    # Label names per head, e.g. {"class": ["ball", ..., "empty"], "scene": [...], ...}.
    heads: dict
    # Channels of the four conv stages (32, 16, 8, 4 px).
    widths: tuple = (32, 64, 128, 128)


def _stage(cin: int, cout: int, downsample: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2 if downsample else 1, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class Recogniser(nn.Module):
    """``forward(images)`` → ``{head: logits N×len(labels)}`` for ``images`` N×3×32×32 in [0, 1]."""

    def __init__(self, config: RecogniserConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        self.stages = nn.Sequential(*[_stage(cin, cout, i > 0) for i, (cin, cout) in
                                      enumerate(zip((3, *widths[:-1]), widths))])
        self.heads = nn.ModuleDict({name: nn.Linear(widths[-1], len(labels)) for name, labels in config.heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.stages(images * 2 - 1).mean(dim=(2, 3))
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, list[str]]:
        """The most likely label of each head for each of ``images`` (N×3×32×32 in [0, 1])."""
        logits = self(images)
        return {name: [self.config.heads[name][i] for i in logits[name].argmax(dim=1).tolist()] for name in logits}


def save_recogniser(model: Recogniser, path: str | Path, record: dict | None = None) -> None:
    """Write ``model`` as safetensors with its config (and an optional training ``record``) in the metadata."""
    from safetensors.torch import save_file

    metadata = {"config": json.dumps({"heads": model.config.heads, "widths": list(model.config.widths)})}
    if record is not None:
        metadata["record"] = json.dumps(record)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)


def load_recogniser(path: str | Path) -> Recogniser:
    """The recogniser saved at ``path`` (safetensors written by :func:`save_recogniser`), in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recogniser weights {str(path)!r} do not exist")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "config" not in metadata:
        raise ValueError(f"{str(path)!r} is not a recogniser (no config in its safetensors metadata)")
    raw = json.loads(metadata["config"])
    model = Recogniser(RecogniserConfig(heads=raw["heads"], widths=tuple(raw["widths"])))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
