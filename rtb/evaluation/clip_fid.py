"""CLIP-FID: the Fréchet distance between CLIP image embeddings of two sets of edits (torchmetrics' FID).

The feature extractor is a local CLIP model directory (``transformers`` format: ``config.json`` +
``model.safetensors``, e.g. ``openai/clip-vit-base-patch32`` saved with ``save_pretrained``); it is loaded
offline only. Images are resized (shorter side 224, bicubic), center-cropped to 224 and normalised with the
model's mean/std, as CLIP's own preprocessing does.

:class:`CLIPImageFeatures` also passes already computed embeddings (``N×D``) through unchanged, so the Ray job
computes embeddings on its actors and the driver feeds only vectors to torchmetrics' FID.

FID is biased for small sets (below ~500 images): always report N next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# OpenAI CLIP preprocessing constants (used when the directory has no preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPImageFeatures(nn.Module):
    """``forward(images N×3×H×W in [0, 1]) → N×D`` CLIP image embeddings; ``N×D`` inputs pass through.

    Args:
        directory: a local CLIP (or CLIP vision) model directory.
        device: where the model runs (default CPU).
    """

    def __init__(self, directory: str | Path, device: str | torch.device = "cpu"):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ValueError(f"--clip-model {str(directory)!r} is not a local CLIP model directory (no config.json)")
        self.model = CLIPVisionModelWithProjection.from_pretrained(str(directory), local_files_only=True).eval()
        self.model.requires_grad_(False).to(device)
        self.size = int(self.model.config.image_size)
        mean, std = CLIP_MEAN, CLIP_STD
        preprocessor = directory / "preprocessor_config.json"
        if preprocessor.is_file():
            settings = json.loads(preprocessor.read_text())
            mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(device))
        # torchmetrics' FID reads this instead of probing the network with a dummy image.
        self.num_features = int(self.model.config.projection_dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize the shorter side to the model's size, center-crop, normalise: ``N×3×S×S`` float32."""
        images = images.to(self.mean.device, torch.float32)
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        size = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        images = images[..., top : top + self.size, left : left + self.size]
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 2:  # already embeddings
            if images.shape[1] != self.num_features:
                raise ValueError(f"embeddings have {images.shape[1]} dims, the model gives {self.num_features}")
            return images
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be N×3×H×W in [0, 1], got shape {tuple(images.shape)}")
        return self.model(pixel_values=self.preprocess(images)).image_embeds.float()


def clip_fid(features: CLIPImageFeatures, reference: torch.Tensor, compared: torch.Tensor) -> float:
    """FID between two sets (images ``N×3×H×W`` in [0, 1] or embeddings ``N×D``) with torchmetrics.

    Raises ``ValueError`` when either set has fewer than 2 samples (no covariance).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(reference) < 2 or len(compared) < 2:
        raise ValueError(f"CLIP-FID needs at least 2 samples per set, got {len(reference)} and {len(compared)}")
    metric = FrechetInceptionDistance(feature=features, normalize=True)
    metric.update(reference, real=True)
    metric.update(compared, real=False)
    return float(metric.compute())
