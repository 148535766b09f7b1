"""Efficacy of RTB on the reference model: the goals table of docs/efficacy.md, one row per (set, variant).

For each evaluation set (the bundled sample catalog, the held-out catalog of :mod:`rtb_train.heldout`)
it protects every image with RTB under each variant and once with the ``noise`` control at the same ε, writes
the protect-run layout (``images/<id>.png``, ``metrics/*.parquet``), runs the evaluation job in-process
(``jobs.evaluate.run``, ``--runner local``) and prints the medians the goals are stated on::

    python benchmarks/efficacy.py --output out/efficacy                       # defaults on both sets
    python benchmarks/efficacy.py --output out/efficacy --sets heldout --variants defaults,steps50,hide4
    python benchmarks/efficacy.py --output out/robust --sets heldout --variants defaults,eot \
        --transforms none,jpeg:95,jpeg:75,webp:80,resize:0.5,resize:0.75

Variants are levers of ``ProtectConfig`` (steps, loss weights, target, mask augmentation, EOT); ``defaults`` is
the paper's settings. ``--transforms`` (``rtb evaluate --transforms``) measures every variant after each real
codec; the table gets one row per (set, variant, transform).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.evaluate import EvalConfig, run  # noqa: E402
from rtb import ProtectConfig, catalog, load_inpainter, protect  # noqa: E402
from rtb_train.heldout import make_heldout  # noqa: E402
from rtb.evaluation.report import GOALS, median  # noqa: E402
from rtb.transforms import format_transforms, parse_transforms  # noqa: E402
from rtb.images import decode_image, decode_mask  # noqa: E402

SAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "rtb" / "samples" / "catalog"
# name → (ProtectConfig overrides, evaluation target)
VARIANTS = {
    "defaults": ({}, "primary"),
    "steps50": ({"steps": 50}, "primary"),
    "pgd50": ({"steps": 50, "lr": 0.005}, "primary"),  # small steps (ε/5) instead of the paper's saturating 4ε
    "pgd200": ({"steps": 200, "lr": 0.005}, "primary"),
    "hide4": ({"hide_weight": 4.0}, "primary"),
    "implant2": ({"implant_weight": 2.0, "expanded_weight": 2.0}, "primary"),
    "invert": ({"target": "invert"}, "invert"),
    "gray": ({"target": "gray"}, "gray"),
    # mask augmentation: attacker-like holes (jittered contour, grown bbox, partial halves) each step
    "augment2": ({"augment_holes": 2}, "primary"),
    "augment4": ({"augment_holes": 4}, "primary"),
    "augment4-pgd50": ({"augment_holes": 4, "steps": 50, "lr": 0.005}, "primary"),
    # expectation over transformation: a differentiable JPEG / down-and-up resize (/ blur) each step
    "eot": ({"eot": "jpeg:60-95,resize:0.5-1.0"}, "primary"),
    "eot-blur": ({"eot": "jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0"}, "primary"),
}
REPORTED = (("expanded", "hole_ssim"), ("partial", "hole_ssim"), ("bbox", "hole_ssim"), ("brush", "hole_ssim"),
            ("exact", "target_distance"), ("exact", "clean_target_distance"), ("elsewhere", "hole_ssim"),
            ("ring-half", "hole_ssim"), ("exact", "protect_ssim"))


def read_pairs(folder: Path):
    """(ids, PIL images, boolean masks) of a pairs catalog, sorted by id."""
    rows = [catalog.read_pair(r) for r in catalog.list_pairs(catalog.list_files(str(folder)))]
    bad = [r["id"] for r in rows if r["read_error"]]
    if bad:
        raise ValueError(f"unreadable pairs in {folder}: {bad}")
    return [r["id"] for r in rows], [decode_image(r["image"]) for r in rows], [decode_mask(r["mask"]) for r in rows]


def write_run(out: Path, ids, result, method: str) -> float:
    """Write a protect run's layout; returns the mean seconds per image."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id, image, stats in zip(ids, result.images, result.stats):
        image.save(out / "images" / f"{image_id}.png")
        rows.append({"id": image_id, "status": "ok", "method": method, "eps": stats.eps, "steps": stats.steps,
                     "psnr": stats.psnr, "ssim": stats.ssim, "seconds": stats.seconds})
    catalog.write_table(pa.Table.from_pylist(rows), str(out / "metrics" / "run-00000.parquet"))
    return float(np.mean([s.seconds for s in result.stats]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default="reference")
    parser.add_argument("--sets", default="sample,heldout", help="comma list of sample, heldout")
    parser.add_argument("--variants", default="defaults", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--eps", type=float, default=0.025)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--heldout-count", type=int, default=32)
    parser.add_argument("--heldout-size", type=int, default=128)
    parser.add_argument("--masks", default="default")
    parser.add_argument("--transforms", default="none",
                        help="comma list of none, jpeg:Q, webp:Q, resize:S, blur:SIGMA (rtb evaluate --transforms)")
    args = parser.parse_args(argv)
    transforms = format_transforms(parse_transforms(args.transforms))
    out = Path(args.output)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    # The model is loaded once for protection; the evaluation job loads it again by name, so its fingerprint
    # is checked after every variant (a model file replaced mid-run would otherwise mix two models).
    inpainter = load_inpainter(args.model)
    results = []
    for name in args.sets.split(","):
        # 1. The evaluation set.
        if name == "sample":
            folder = SAMPLE_CATALOG
        elif name == "heldout":
            folder = out / "heldout-catalog"
            make_heldout(folder, args.heldout_count, args.heldout_size)
        else:
            raise ValueError(f"unknown set {name!r}; choose sample or heldout")
        ids, images, masks = read_pairs(folder)

        # 2. The noise control at the same ε (once per set).
        noise_dir = out / name / "noise"
        noise = protect(images, masks, model=inpainter, method="noise", config=ProtectConfig(eps=args.eps))
        write_run(noise_dir, ids, noise, "noise")

        for variant in variants:
            # 3. Protect with the variant, then evaluate against the clean edits and the control.
            overrides, target = VARIANTS[variant]
            config = ProtectConfig(**{"eps": args.eps, "steps": args.steps, **overrides})
            began = time.perf_counter()
            result = protect(images, masks, model=inpainter, method="rtb", config=config)
            protect_seconds = time.perf_counter() - began
            run_dir = out / name / variant
            write_run(run_dir / "protected", ids, result, "rtb")
            summary = run(EvalConfig(catalog=str(folder), protected=str(run_dir / "protected"), output=str(run_dir / "eval"),
                                     model=args.model, control=str(noise_dir), target=target, runner="local",
                                     masks=args.masks, sample=4, transforms=transforms))
            if load_inpainter(args.model).fingerprint != inpainter.fingerprint:
                raise ValueError(f"model {args.model!r} changed during the run; rerun")
            # 4. One row per transform the images went through before the edit.
            for transform, measured in summary["transforms"].items():
                row = {"set": name, "variant": variant, "transform": transform, "images": len(ids),
                       "model_fingerprint": inpainter.fingerprint, "config": {**overrides, "eps": args.eps,
                       "steps": config.steps}, "protect_seconds_per_image": protect_seconds / len(ids),
                       "goals": {}, "reported": {}}
                for label, arm, family, metric, op, threshold in GOALS:
                    value = median(measured, arm, family, metric)
                    met = value is not None and (value <= threshold if op == "<=" else value >= threshold)
                    row["goals"][label] = {"median": value, "goal": f"{op} {threshold}", "met": met}
                for family, metric in REPORTED:
                    row["reported"][f"{family} {metric}"] = {
                        arm: median(measured, arm, family, metric) for arm in ("protected", "control")}
                results.append(row)
                print(json.dumps(row), flush=True)

    (out / "efficacy.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))


def markdown(results: list[dict]) -> str:
    """The goals table (medians; ✓ = goal met) and the other families, as Markdown."""
    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{1 if digits == 1 else digits}f}"

    head = ["set", "variant", "transform", "N"] + [f"{g[0]} ({g[4]} {g[5]:g})" for g in GOALS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["set"], r["variant"], r["transform"], str(r["images"])]
        for label, *_rest in GOALS:
            goal = r["goals"][label]
            digits = 1 if "PSNR" in label else 3
            cells.append(f"{fmt(goal['median'], digits)} {'✓' if goal['met'] else '✗'}")
        lines.append("| " + " | ".join(cells) + " |")
    head2 = ["set", "variant", "transform"] + [k for k in results[0]["reported"]] + ["protect s/image"]
    lines += ["", "| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
    for r in results:
        cells = [r["set"], r["variant"], r["transform"]]
        for values in r["reported"].values():
            cells.append(f"{fmt(values['protected'])} (noise {fmt(values['control'])})")
        cells.append(f"{r['protect_seconds_per_image']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
