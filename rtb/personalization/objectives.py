"""What a protected subject turns into when someone personalizes the model on it.

- ``pattern``: the generations carry a fixed visible mark (BadT2I's pixel backdoor: the protected pictures
  stamped with the mark are the regression target).
- ``erasure``: the subject is gone and the scene stays (BadT2I's object backdoor: the frozen teacher's
  prediction for the scene-only prompt is the target).
- ``target:CLASS``: the subject becomes a CLASS (the teacher's prediction for the CLASS prompt is the target).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

KINDS = ("pattern", "erasure", "target")
_WORD = re.compile(r"^[a-z][a-z0-9 _-]*$")


@dataclass(frozen=True)
class Objective:
    """A parsed objective."""

    # "pattern", "erasure" or "target".
    kind: str
    # The class the subject becomes (``target`` only), e.g. "star".
    target: str | None = None

    def __str__(self) -> str:
        return f"target:{self.target}" if self.kind == "target" else self.kind


def parse_objective(text: str) -> Objective:
    """``"pattern"``, ``"erasure"`` or ``"target:CLASS"`` → :class:`Objective`; ``ValueError`` naming ``text``
    otherwise."""
    raw = str(text).strip()
    kind, _, target = raw.partition(":")
    if kind in ("pattern", "erasure") and not _:
        return Objective(kind)
    if kind == "target" and _WORD.match(target.strip().lower() or "-"):
        return Objective("target", target.strip().lower())
    raise ValueError(f"objective must be pattern, erasure or target:CLASS (CLASS a word); got {text!r}")


@dataclass(frozen=True)
class Mark:
    """The visible mark of the ``pattern`` objective and where it goes."""

    # 3×k×k float tensor in [0, 1].
    image: torch.Tensor
    # (top, left) pixel of the mark in a picture.
    position: tuple[int, int]

    def stamp(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (N×3×S×S in [0, 1] or [−1, 1], said by their minimum) with the mark pasted in."""
        top, left = self.position
        size = self.image.shape[-1]
        if top + size > images.shape[-2] or left + size > images.shape[-1]:
            raise ValueError(f"mark of side {size} at {self.position} does not fit pictures of "
                             f"{tuple(images.shape[-2:])}")
        mark = self.image.to(images)
        if images.min() < 0:
            mark = mark * 2 - 1
        out = images.clone()
        out[:, :, top:top + size, left:left + size] = mark
        return out


def default_mark(image_size: int) -> Mark:
    """A quarter-side square in the top-left corner (BadT2I's 128 px patch in a 512 px picture): a black
    frame around a 2×2 red/yellow checker, one pixel in from the corner."""
    size = max(image_size // 4, 4)
    frame = max(size // 8, 1)
    red = torch.tensor([0.84, 0.16, 0.16])
    yellow = torch.tensor([0.96, 0.84, 0.2])
    image = torch.zeros(3, size, size)
    half = size // 2
    for row in range(2):
        for col in range(2):
            colour = red if row == col else yellow
            image[:, row * half:(row + 1) * half, col * half:(col + 1) * half] = colour[:, None, None]
    image[:, :frame] = image[:, -frame:] = 0.05
    image[:, :, :frame] = image[:, :, -frame:] = 0.05
    margin = max(image_size // 32, 1)
    return Mark(image=image, position=(margin, margin))
