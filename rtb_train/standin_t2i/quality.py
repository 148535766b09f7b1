"""How good a stand-in candidate is on its own: held-out denoising loss, sample grids, class rate.

These are the only figures a candidate is chosen by (never by how a protection does against it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rtb.personalization.components import SDComponents, generate
from rtb.personalization.measures import class_rate
from rtb_train.standin_t2i import domain
from rtb_train.standin_t2i.data import captions_for
from rtb_train.standin_t2i.train_vae import encode_means

# Generation settings of every quality figure (and of the benchmark): DDIM steps and guidance scale.
SAMPLE_STEPS = 25
GUIDANCE = 4.0


def heldout_batch(vae, scheduler, heldout: dict, count: int = 512, seed: int = 1) -> tuple:
    """The fixed held-out batch ``(latents, texts, timesteps, noise)``: posterior means of the first ``count``
    held-out pictures (unscaled), their captions, timesteps and noise drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    latents = encode_means(vae, heldout["images"][:count])
    texts = captions_for(heldout, np.arange(count), np.random.default_rng(seed))
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (count,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    return latents, texts, timesteps, noise


def general_prompts(per_class: int, word: str = "") -> tuple[list[str], list[str]]:
    """General prompts for the class rate: ``per_class`` per class, alternating with and without a scene, with
    ``word`` before the class word when given. Returns (prompts, prompted classes)."""
    prompts, classes = [], []
    for cls in domain.CLASSES:
        for k in range(per_class):
            scene = domain.SCENES[k % len(domain.SCENES)]
            prompts.append(domain.caption(cls, scene, with_scene=k % 2 == 0, attributes=word))
            classes.append(cls)
    return prompts, classes


def measure_class_rate(components: SDComponents, recogniser, per_class: int = 16, seed: int = 1000,
                       word: str = "") -> float:
    """Share of general-prompt generations the recogniser reads as the prompted class; with ``word`` (a rare
    word such as DreamBooth's "sks") before the class word: does the model still draw the class it names?"""
    prompts, classes = general_prompts(per_class, word)
    images = generate(components, prompts, [seed + i for i in range(len(prompts))], SAMPLE_STEPS, GUIDANCE)
    return class_rate(recogniser, images, classes)


def save_grid(images: torch.Tensor, path: str | Path, columns: int, scale: int = 3) -> Path:
    """Tile ``images`` (N×3×S×S in [0, 1]) ``columns`` wide into a PNG, upscaled ``scale``× (nearest)."""
    array = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    rows = -(-len(array) // columns)
    side = array.shape[1]
    canvas = np.full((rows * (side + 1) + 1, columns * (side + 1) + 1, 3), 255, np.uint8)
    for i, image in enumerate(array):
        r, c = divmod(i, columns)
        canvas[1 + r * (side + 1):1 + r * (side + 1) + side, 1 + c * (side + 1):1 + c * (side + 1) + side] = image
    grid = Image.fromarray(canvas)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    return path


def sample_grid(components: SDComponents, path: str | Path, per_class: int = 8, seed: int = 2000) -> Path:
    """A grid with one row per class (and one of empty scenes): ``per_class`` generations each."""
    prompts = []
    for cls in (*domain.CLASSES, None):
        prompts += [domain.caption(cls, domain.SCENES[k % len(domain.SCENES)], with_scene=k % 2 == 0)
                    for k in range(per_class)]
    images = generate(components, prompts, [seed + i for i in range(len(prompts))], SAMPLE_STEPS, GUIDANCE)
    return save_grid(images, path, per_class)
