"""What a malicious edit should produce: the target image T of the run-time backdoor."""

from __future__ import annotations

import torch

# Pure red, green and blue: the candidates of the "primary" strategy.
PRIMARIES = torch.eye(3)


def make_targets(x: torch.Tensor, strategy: str, custom: torch.Tensor | None = None) -> torch.Tensor:
    """Targets ``N×3×H×W`` in [0, 1] for images ``x`` (``N×3×H×W``).

    - ``primary``: a solid pure R, G or B image, whichever is farthest (L2) from the image's mean colour;
    - ``gray``: solid 0.5;
    - ``invert``: ``1 − x``;
    - ``custom``: ``custom`` itself (``N×3×H×W``, or ``3×H×W`` shared by the batch).
    """
    if strategy == "primary":
        mean = x.mean(dim=(2, 3))  # N×3
        primaries = PRIMARIES.to(device=x.device, dtype=x.dtype)
        distance = torch.cdist(mean, primaries)  # N×3
        colour = primaries[distance.argmax(dim=1)]  # N×3
        return colour[:, :, None, None].expand_as(x).clone()
    if strategy == "gray":
        return torch.full_like(x, 0.5)
    if strategy == "invert":
        return 1.0 - x
    if strategy == "custom":
        if custom is None:
            raise ValueError("target 'custom' needs target images (protect(..., targets=[...]))")
        custom = custom.to(device=x.device, dtype=x.dtype)
        if custom.dim() == 3:
            custom = custom[None].expand_as(x)
        if custom.shape != x.shape:
            raise ValueError(f"custom targets have shape {tuple(custom.shape)} but images are {tuple(x.shape)}")
        return custom.clamp(0, 1)
    raise ValueError(f"unknown target strategy {strategy!r}")
