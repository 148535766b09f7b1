"""Imperceptibility per budget mode, and its price in efficacy: the table of docs/imperceptibility.md.

For each model and evaluation set it protects every image under each budget mode (``ProtectConfig.budget``,
``colour``, ``chroma_ratio`` and the ε ceiling) and measures, with :mod:`rtb.metrics`:

- CIEDE2000 ΔE00 of the protected 8-bit image vs its source: mean and 95th percentile over every pixel of the set
  (pooled), the worst image's 95th percentile, and the share of pixels above a just-noticeable ΔE00 of 2.3;
- PSNR and SSIM (means over images), the mean per-pixel bound (levels);
- exact grey: how many grey sources come back exactly grey, and the mean colour cast (max − min channel, levels)
  of the protected grey images;
- efficacy: the malicious exact hole-SSIM (protected edit vs clean edit inside the protected region,
  :func:`rtb.evaluation.edits.evaluate_image`), median and mean over images, and the mean over images of the
  paired difference to the ``paper`` mode (same image) — meaningful only on an editor that RTB can steer (the
  tiny sensitive test network; ``reference`` is an MSE model that cannot be steered, so its column is not an
  efficacy figure).

Sets: ``samples`` (the bundled catalog, 6 images of 256 px, ``cameraman`` grey), ``heldout``
(:func:`rtb_train.heldout.make_heldout`, colour) and ``heldout-grey`` (grey copies, stored as RGB with
R = G = B like a black-and-white photo in an RGB JPEG, of the first held-out images drawn on a photo)::

    python -c "from pathlib import Path; from tests.fixtures.inpainters import build_tiny_torchscript; \\
        build_tiny_torchscript(Path('out/tiny.pt'))"
    python benchmarks/imperceptibility.py --output out/imperceptibility --model out/tiny.pt
    python benchmarks/imperceptibility.py --output out/imperceptibility --model reference \\
        --modes paper,uniform-lc25,jnd-rgb,jnd-lc50,jnd-lc25,jnd-lc0
    python benchmarks/imperceptibility.py --output out/imperceptibility --model reference --crops \\
        docs/imperceptibility-crops.png --modes paper,jnd-lc25   # after the runs: the crops of the doc

Every protected image is written under ``OUTPUT/<model>/<set>/<mode>/``; one JSON line per image goes to
``OUTPUT/rows.jsonl`` and the table (Markdown) to stdout and ``OUTPUT/<model>-table.md``. One intra-op thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtb import ProtectConfig, catalog, load_inpainter, metrics, protect  # noqa: E402
from rtb.colour import is_grey_image  # noqa: E402
from rtb.evaluation.crops import crop_sheet  # noqa: E402
from rtb.evaluation.edits import EditConfig, evaluate_image  # noqa: E402
from rtb.images import decode_image, decode_mask, to_tensor  # noqa: E402

SAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "rtb" / "samples" / "catalog"
SETS = ("samples", "heldout", "heldout-grey")
# name → ProtectConfig overrides. "paper" is the paper's L∞ ball (uniform ε = 0.025 per RGB channel).
MODES = {
    "paper": {"budget": "uniform", "colour": "rgb"},
    "uniform-lc25": {"budget": "uniform", "colour": "luma-chroma", "chroma_ratio": 0.25},
    "jnd-rgb": {"budget": "jnd", "colour": "rgb"},
    "jnd-lc50": {"budget": "jnd", "colour": "luma-chroma", "chroma_ratio": 0.5},
    "jnd-lc25": {"budget": "jnd", "colour": "luma-chroma", "chroma_ratio": 0.25},
    "jnd-lc0": {"budget": "jnd", "colour": "luma-chroma", "chroma_ratio": 0.0},
    # Higher ε ceilings under jnd: where the efficacy of the paper's ε = 0.025 comes back, if it does.
    "jnd-lc25-eps035": {"budget": "jnd", "colour": "luma-chroma", "chroma_ratio": 0.25, "eps": 0.035},
    "jnd-lc25-eps050": {"budget": "jnd", "colour": "luma-chroma", "chroma_ratio": 0.25, "eps": 0.05},
    "jnd-lc25-eps075": {"budget": "jnd", "colour": "luma-chroma", "chroma_ratio": 0.25, "eps": 0.075},
}
JND_DELTA_E = metrics.JND_DELTA_E


def read_pairs(folder: Path):
    """(ids, PIL images, boolean masks) of a pairs catalog, sorted by id."""
    rows = [catalog.read_pair(r) for r in catalog.list_pairs(catalog.list_files(str(folder)))]
    return [r["id"] for r in rows], [decode_image(r["image"]) for r in rows], [decode_mask(r["mask"]) for r in rows]


def load_sets(work: Path, names, heldout_count: int, grey_count: int) -> dict[str, tuple]:
    """``{set: (ids, images, masks)}``; the held-out catalog is written under ``work`` once."""
    out = {}
    if "samples" in names:
        out["samples"] = read_pairs(SAMPLE_CATALOG)
    if "heldout" in names or "heldout-grey" in names:
        from rtb_train.heldout import make_heldout

        folder = work / f"heldout-{heldout_count}"
        if not folder.exists():
            make_heldout(folder, count=heldout_count, size=128)
        ids, images, masks = read_pairs(folder)
        if "heldout" in names:
            out["heldout"] = (ids, images, masks)
        if "heldout-grey" in names:
            photos = [i for i, image_id in enumerate(ids) if not image_id.endswith("-procedural")][:grey_count]
            out["heldout-grey"] = ([ids[i] + "-grey" for i in photos],
                                   [images[i].convert("L").convert("RGB") for i in photos], [masks[i] for i in photos])
    return out


def measure(model, name: str, ids, images, masks, overrides: dict, out_dir: Path) -> list[dict]:
    """Protect one set under one mode and measure every image: one dict per image."""
    config = ProtectConfig(**overrides)
    began = time.perf_counter()
    result = protect(images, masks, model=model, method="rtb", config=config)
    seconds = time.perf_counter() - began
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id, image, mask, protected, stats in zip(ids, images, masks, result.images, result.stats):
        protected.save(out_dir / f"{image_id}.png")
        source = to_tensor(image.convert("RGB"))
        output = to_tensor(protected.convert("RGB"))
        delta_e = metrics.delta_e00_map(output[None], source[None])[0]
        edits = evaluate_image(model, image_id, source, torch.from_numpy(mask), {"protected": output},
                               EditConfig(families=("exact",)))
        (edit,) = edits.rows
        rows.append({
            "model": name, "id": image_id, "eps": stats.eps, **{k: v for k, v in overrides.items() if k != "eps"},
            "bound_mean_levels": stats.bound_mean * 255, "delta_e_mean": stats.delta_e_mean,
            "delta_e_p95": stats.delta_e_p95, "delta_e_above_jnd": stats.delta_e_above_jnd, "psnr": stats.psnr,
            "ssim": stats.ssim, "linf_levels": round(stats.linf * 255), "source_grey": stats.source_grey,
            "source_grey_pil": is_grey_image(image), "grey_preserved": stats.grey_preserved,
            "grey_cast": float(metrics.grey_cast(output[None])[0]), "hole_ssim": edit["hole_ssim"],
            "seconds": seconds / len(ids), "delta_e_values": delta_e.flatten().numpy(),
        })
    return rows


def summarize(rows: list[dict], paper: list[dict] | None = None) -> dict:
    """The table row of one (model, set, mode); ``paper``: the same set's rows under ``paper``, for the paired
    hole-SSIM difference."""
    values = np.concatenate([r["delta_e_values"] for r in rows])
    grey = [r for r in rows if r["source_grey"]]
    return {
        "images": len(rows), "bound": float(np.mean([r["bound_mean_levels"] for r in rows])),
        "de_mean": float(values.mean()), "de_p95": float(np.percentile(values, 95)),
        "de_worst_p95": float(max(r["delta_e_p95"] for r in rows)), "above": float((values > JND_DELTA_E).mean()),
        "psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows])),
        "grey": len(grey), "grey_kept": sum(bool(r["grey_preserved"]) for r in grey),
        "grey_cast": float(np.mean([r["grey_cast"] for r in grey])) if grey else None,
        "hole_median": float(np.median([r["hole_ssim"] for r in rows])),
        "hole_mean": float(np.mean([r["hole_ssim"] for r in rows])),
        "hole_vs_paper": None if paper is None else float(np.mean(
            [r["hole_ssim"] - p["hole_ssim"] for r, p in zip(rows, paper, strict=True)])),
        "seconds": float(np.mean([r["seconds"] for r in rows])),
    }


def table(results: dict[tuple[str, str], dict]) -> str:
    """Markdown table of ``{(set, mode): summary}``."""
    head = ("| set | mode | ε | bound (levels) | ΔE00 mean | ΔE00 p95 | worst image p95 | > 2.3 | PSNR | SSIM "
            "| grey kept | grey cast | hole-SSIM median (mean) | Δ hole-SSIM vs paper | s/image |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (set_name, mode), s in results.items():
        eps = MODES[mode].get("eps", 0.025)
        grey = f"{s['grey_kept']}/{s['grey']}" if s["grey"] else "–"
        cast = f"{s['grey_cast']:.2f}" if s["grey_cast"] is not None else "–"
        versus = f"{s['hole_vs_paper']:+.3f}" if s["hole_vs_paper"] is not None else "–"
        lines.append(f"| {set_name} | {mode} | {eps:g} | {s['bound']:.2f} | {s['de_mean']:.2f} | {s['de_p95']:.2f} | "
                     f"{s['de_worst_p95']:.2f} | {s['above']:.1%} | {s['psnr']:.1f} | {s['ssim']:.3f} | {grey} | "
                     f"{cast} | {s['hole_median']:.3f} ({s['hole_mean']:.3f}) | {versus} | {s['seconds']:.1f} |")
    return "\n".join(lines)


def draw_crops(output: Path, model_name: str, sets: dict, modes: list[str], path: Path, picks) -> None:
    """The doc's crops: the flattest window of each picked image under each mode, from the saved PNGs."""
    items = []
    for set_name, image_id in picks:
        ids, images, _ = sets[set_name]
        source = images[ids.index(image_id)]
        for mode in modes:
            protected = Image.open(output / model_name / set_name / mode / f"{image_id}.png")
            items.append((f"{image_id} · {mode}", source, protected))
    sheet = crop_sheet(items, side=40, zoom=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB, {sheet.width}×{sheet.height})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--model", default="reference", help="reference, or a TorchScript/diffusers path")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the paper's 20)")
    parser.add_argument("--heldout-count", type=int, default=12)
    parser.add_argument("--grey-count", type=int, default=6)
    parser.add_argument("--crops", type=Path, default=None, help="draw the doc's crops from saved runs and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    set_names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [m for m in modes if m not in MODES] + [s for s in set_names if s not in SETS]
    if unknown:
        raise SystemExit(f"unknown modes or sets {unknown}; modes: {', '.join(MODES)}; sets: {', '.join(SETS)}")
    model_name = Path(str(args.model)).stem if args.model != "reference" else "reference"
    args.output.mkdir(parents=True, exist_ok=True)
    sets = load_sets(args.output, set_names, args.heldout_count, args.grey_count)
    if args.crops is not None:
        picks = [("samples", "cameraman"), ("samples", "poster"), ("samples", "rocket")]
        draw_crops(args.output, model_name, sets, modes, args.crops, picks)
        return

    # 1. Load the model once.
    model = load_inpainter(args.model, device="cpu")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"model {args.model} (fingerprint {model.fingerprint}); torch threads 1; uptime at start: {load}", flush=True)

    # 2. Protect and measure every (set, mode).
    results = {}
    with open(args.output / "rows.jsonl", "a") as log:
        for set_name in set_names:
            ids, images, masks = sets[set_name]
            paper = None
            for mode in sorted(modes, key=lambda m: m != "paper"):  # the paper's first: the paired baseline
                overrides = dict(MODES[mode])
                if args.steps is not None:
                    overrides["steps"] = args.steps
                rows = measure(model, model_name, ids, images, masks, overrides,
                               args.output / model_name / set_name / mode)
                paper = rows if mode == "paper" else paper
                results[(set_name, mode)] = summary = summarize(rows, paper)
                for row in rows:
                    record = {k: v for k, v in row.items() if k != "delta_e_values"}
                    log.write(json.dumps({"set": set_name, "mode": mode, **record}) + "\n")
                log.flush()
                print(f"{set_name} {mode}: {json.dumps(summary)}", flush=True)

    # 3. The table.
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = table(results) + f"\n\nmodel {args.model} (fingerprint {model.fingerprint}); uptime at end: {load}\n"
    (args.output / f"{model_name}-table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
