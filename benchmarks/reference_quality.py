"""Hole PSNR of the reference inpainter against biharmonic inpainting and mean fill.

    python benchmarks/reference_quality.py [--images DIR]

DIR is any folder of PNG/JPEG images (each centre-cropped to a square and resized to 256×256); without it the
held-out set of ``rtb.reference.data.heldout_images`` is used (never seen in training). One hole per image,
drawn with a fixed seed, 5–25% of the area, alternating boxes and free-form strokes. Hole PSNR is the PSNR
over hole pixels only, averaged over images. The last line is the summary:

    hole PSNR: reference X.XX dB | biharmonic Y.YY dB | mean-fill Z.ZZ dB (N images)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.restoration import inpaint_biharmonic

from rtb.inpainters.reference import load_reference
from rtb.reference.data import heldout_images, random_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_KINDS = ("boxes", "strokes")


def load_folder(folder: Path, size: int) -> list[tuple[str, np.ndarray]]:
    """Every PNG/JPEG in ``folder`` (sorted) as a ``size×size×3`` float32 array in [0, 1]."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no PNG/JPEG images in {str(folder)!r}")
    out = []
    for file in files:
        image = Image.open(file).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
        out.append((file.name, np.asarray(image, dtype=np.float32) / 255.0))
    return out


def hole_psnr(output: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) over hole pixels of ``H×W×3`` images; ``mask`` is ``H×W`` with 1 = hole."""
    mse = float((((output - target) ** 2) * mask[..., None]).sum() / (mask.sum() * 3))
    return 10.0 * np.log10(1.0 / max(mse, 1e-10))


def mean_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    known = mask < 0.5
    colour = image[known].mean(axis=0)
    return np.where(mask[..., None] > 0.5, colour, image)


def biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    filled = inpaint_biharmonic(image.astype(np.float64), mask > 0.5, channel_axis=-1)
    return np.clip(filled, 0, 1).astype(np.float32)


def make_reference(weights: str | None):
    inpainter = load_reference(weights)

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image.transpose(2, 0, 1)).unsqueeze(0)
        m = torch.from_numpy(mask)[None, None]
        return inpainter.edit(x, m)[0].numpy().transpose(1, 2, 0)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hole PSNR of the reference inpainter and two baselines")
    parser.add_argument("--images", type=Path, default=None, help="folder of PNG/JPEG images (default: held-out set)")
    parser.add_argument("--weights", default=None, help="reference weights (default: the packaged file)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hole masks")
    parser.add_argument("--size", type=int, default=256, help="side the images are evaluated at")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: like the skimage baseline)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    # 1. Images and fixed masks.
    images = load_folder(args.images, args.size) if args.images is not None else heldout_images(args.size)
    rng = np.random.default_rng(args.seed)
    masks = [random_mask(rng, args.size, 0.05, 0.25, kind=MASK_KINDS[i % 2]) for i in range(len(images))]

    # 2. Run every method on every image, timing each call.
    methods = {"reference": make_reference(args.weights), "biharmonic": biharmonic, "mean-fill": mean_fill}
    methods["reference"](images[0][1], masks[0])  # warm-up, not timed
    scores = {name: [] for name in methods}
    seconds = {name: [] for name in methods}
    for (_, image), mask in zip(images, masks):
        for name, method in methods.items():
            start = time.perf_counter()
            output = method(image, mask)
            seconds[name].append(time.perf_counter() - start)
            scores[name].append(hole_psnr(output, image, mask))

    # 3. Table: per method, hole PSNR by mask kind and overall, and seconds per image.
    kinds = np.array([MASK_KINDS[i % 2] for i in range(len(images))])
    area = np.mean([m.mean() for m in masks])
    source = str(args.images) if args.images is not None else "held-out set"
    print(f"{len(images)} images from {source}, {args.size}x{args.size}, mean hole area {100 * area:.1f}%")
    print(f"{'method':<12} {'boxes dB':>9} {'strokes dB':>11} {'all dB':>8} {'s/image':>9}")
    for name in methods:
        values = np.array(scores[name])
        by_kind = [values[kinds == kind].mean() if (kinds == kind).any() else float("nan") for kind in MASK_KINDS]
        print(f"{name:<12} {by_kind[0]:>9.2f} {by_kind[1]:>11.2f} {values.mean():>8.2f} {np.mean(seconds[name]):>9.4f}")
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    print(
        f"hole PSNR: reference {means['reference']:.2f} dB | biharmonic {means['biharmonic']:.2f} dB | "
        f"mean-fill {means['mean-fill']:.2f} dB ({len(images)} images)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
