"""Hole PSNR and texture of a reference inpainter against biharmonic inpainting and mean fill.

    python benchmarks/reference_quality.py [--model reference|reference-gan|FILE.safetensors] [--images DIR]

DIR is any folder of PNG/JPEG images (each centre-cropped to a square and resized to 256×256); without it the
held-out set of ``rtb_train.data.heldout_images`` is used (never seen in training). One hole per image,
drawn with a fixed seed, 5–25% of the area, alternating boxes and free-form strokes. Hole PSNR is the PSNR
over hole pixels only, averaged over images.

Texture is the mean gradient magnitude inside the fill over that of the ground truth in the same pixels,
pooled over images (``Σ mean_hole|∇out| / Σ mean_hole|∇truth|``; central differences per channel, averaged
over RGB): 1 means the fill is as busy as the real content, a smooth (blurry) fill is well below 1, mean fill
is near 0. The last two lines are the summaries (NAME is the ``--model`` given; ``reference`` by default):

    texture (fill gradient / truth gradient): NAME A.AA | biharmonic B.BB | mean-fill C.CC
    hole PSNR: NAME X.XX dB | biharmonic Y.YY dB | mean-fill Z.ZZ dB (N images)
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

from rtb.inpainters import load_inpainter
from rtb.metrics import masked_psnr
from rtb_train.data import heldout_images, random_mask

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
    """PSNR (dB, peak 1; :func:`rtb.metrics.masked_psnr`) over hole pixels of ``H×W×3`` images; ``mask`` is ``H×W``
    with 1 = hole."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64).transpose(2, 0, 1))[None]

    return float(masked_psnr(tensor(output), tensor(target), tensor(mask[..., None]))[0])


def mean_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    known = mask < 0.5
    colour = image[known].mean(axis=0)
    return np.where(mask[..., None] > 0.5, colour, image)


def biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    filled = inpaint_biharmonic(image.astype(np.float64), mask > 0.5, channel_axis=-1)
    return np.clip(filled, 0, 1).astype(np.float32)


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """``H×W`` mean over channels of the central-difference gradient magnitude of an ``H×W×3`` image."""
    gy, gx = np.gradient(image.astype(np.float64), axis=(0, 1))
    return np.sqrt(gx**2 + gy**2).mean(axis=2)


def hole_gradient(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude of ``image`` over the hole pixels of ``mask``."""
    hole = mask > 0.5
    return float(gradient_magnitude(image)[hole].mean()) if hole.any() else 0.0


def make_model(spec: str):
    """``(inpainter, run)`` where ``run(image H×W×3, mask H×W) → H×W×3`` is one edit on the CPU."""
    inpainter = load_inpainter(spec, device="cpu")

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image.transpose(2, 0, 1)).unsqueeze(0)
        m = torch.from_numpy(mask)[None, None]
        return inpainter.edit(x, m)[0].numpy().transpose(1, 2, 0)

    return inpainter, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hole PSNR and texture of a reference inpainter and two baselines")
    parser.add_argument("--images", type=Path, default=None, help="folder of PNG/JPEG images (default: held-out set)")
    parser.add_argument("--model", default=None,
                        help="reference (default) | reference-gan | a .safetensors file of either architecture")
    parser.add_argument("--weights", default=None,
                        help="reference weights file, reported under the name 'reference' (kept for old commands)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hole masks")
    parser.add_argument("--size", type=int, default=256, help="side the images are evaluated at")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: like the skimage baseline)")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="write a contact sheet PNG: truth | hole | model | biharmonic, one row per image")
    parser.add_argument("--sheet-rows", type=int, default=8, help="images on the contact sheet (first N)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is not None and args.weights is not None:
        parser.error("give --model or --weights, not both")
    spec = args.model or (str(args.weights) if args.weights is not None else "reference")
    label = args.model or "reference"

    # 1. Images and fixed masks.
    images = load_folder(args.images, args.size) if args.images is not None else heldout_images(args.size)
    rng = np.random.default_rng(args.seed)
    masks = [random_mask(rng, args.size, 0.05, 0.25, kind=MASK_KINDS[i % 2]) for i in range(len(images))]

    # 2. Run every method on every image, timing each call.
    inpainter, run = make_model(spec)
    methods = {label: run, "biharmonic": biharmonic, "mean-fill": mean_fill}
    run(images[0][1], masks[0])  # warm-up, not timed
    scores = {name: [] for name in methods}
    seconds = {name: [] for name in methods}
    gradients = {name: [] for name in methods}
    truth_gradients = [hole_gradient(image, mask) for (_, image), mask in zip(images, masks)]
    rows = []
    for index, ((_, image), mask) in enumerate(zip(images, masks)):
        outputs = {}
        for name, method in methods.items():
            start = time.perf_counter()
            output = outputs[name] = method(image, mask)
            seconds[name].append(time.perf_counter() - start)
            scores[name].append(hole_psnr(output, image, mask))
            gradients[name].append(hole_gradient(output, mask))
        if args.sheet is not None and index < args.sheet_rows:
            holed = np.where(mask[..., None] > 0.5, np.array([1.0, 0.0, 1.0], np.float32), image)
            rows.append(np.concatenate([image, holed, outputs[label], outputs["biharmonic"]], axis=1))
    texture = {name: float(np.sum(values) / max(np.sum(truth_gradients), 1e-12)) for name, values in gradients.items()}

    # 3. Table: per method, hole PSNR by mask kind and overall, and seconds per image.
    kinds = np.array([MASK_KINDS[i % 2] for i in range(len(images))])
    area = np.mean([m.mean() for m in masks])
    source = str(args.images) if args.images is not None else "held-out set"
    print(f"model {label}: {inpainter.name}, fingerprint {inpainter.fingerprint[:12]}")
    print(f"{len(images)} images from {source}, {args.size}x{args.size}, mean hole area {100 * area:.1f}%")
    width = max(12, len(label))
    print(f"{'method':<{width}} {'boxes dB':>9} {'strokes dB':>11} {'all dB':>8} {'s/image':>9} {'texture':>8}")
    for name in methods:
        values = np.array(scores[name])
        by_kind = [values[kinds == kind].mean() if (kinds == kind).any() else float("nan") for kind in MASK_KINDS]
        print(f"{name:<{width}} {by_kind[0]:>9.2f} {by_kind[1]:>11.2f} {values.mean():>8.2f} "
              f"{np.mean(seconds[name]):>9.4f} {texture[name]:>8.3f}")
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    if rows:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)).save(args.sheet)
        print(f"contact sheet ({len(rows)} rows: truth | hole | {label} | biharmonic): {args.sheet}")
    print(
        f"texture (fill gradient / truth gradient): {label} {texture[label]:.3f} | "
        f"biharmonic {texture['biharmonic']:.3f} | mean-fill {texture['mean-fill']:.3f}"
    )
    print(
        f"hole PSNR: {label} {means[label]:.2f} dB | biharmonic {means['biharmonic']:.2f} dB | "
        f"mean-fill {means['mean-fill']:.2f} dB ({len(images)} images)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
