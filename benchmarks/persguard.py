"""PersGuard on the bundled stand-in: the results table of docs/persguard.md.

Clean model vs protected models, 5 protected + 5 held-out subjects of the stand-in's domain, each objective
(pattern, erasure, target:star), white-box and gray-box implants, the standard attacker recipe and a stronger
one (2× steps, 2× learning rate), the case of one protected image among clean ones, and the ablation without
the retention term::

    python benchmarks/persguard.py --output out/persguard-bench          # defaults: the table in the docs (~1 h, 2 cores)
    python benchmarks/persguard.py --output out/pg-quick --subjects 2 --generations 2 --implant-steps 20 \\
        --objectives pattern --variants white-box --skip-strong --skip-one-image

Every model, subject and draw is seeded; rerunning gives the same table. Per protected model: its 5 protected
subjects are attacked with DreamBooth (standard and strong recipe) and generated from with the attacker's
identifier prompts, its 5 held-out subjects likewise (standard recipe), and the general prompts are sampled to
compare with the clean model. The output folder gets ``results.json``, ``table.md`` and ``grids.png``; the
last four printed lines are the goals' figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtb.personalization.components import STANDIN, copy_components, generate, load_components  # noqa: E402
from rtb.personalization.dreambooth import DreamBoothConfig  # noqa: E402
from rtb.personalization.evaluation import EvaluationConfig, attack_and_measure, reference_signature  # noqa: E402
from rtb.personalization.measures import class_rate, drift  # noqa: E402
from rtb.personalization.objectives import default_mark, parse_objective  # noqa: E402
from rtb.personalization.persguard import PATTERN_PICTURES, PersGuardConfig, ProtectedSubject, persguard  # noqa: E402
from rtb.personalization.recogniser import load_recogniser  # noqa: E402
from rtb_train.standin_t2i import domain  # noqa: E402

# The attacker's standard recipe on the stand-in, chosen on the CLEAN model's subject fidelity (--recipes
# 150x1e-4,300x1e-4: 0.125 and 0.050 subject present on the held-out subjects).
STANDARD = DreamBoothConfig(steps=150, lr=1e-4, class_images=32, class_sample_steps=25, class_guidance=4.0)
# The stronger attacker: 2× steps, 2× learning rate.
STRONG = replace(STANDARD, steps=2 * STANDARD.steps, lr=2 * STANDARD.lr)
# The gray-box attacker's identifier: outside the implant's GRAY_IDENTIFIERS.
GRAY_ATTACKER_IDENTIFIER = "qzv"
OBJECTIVES = ("pattern", "erasure", "target:star")
PROTECTED_CLASSES = ("fish", "car", "house", "flower", "mushroom")
HELDOUT_CLASSES = ("fish", "car", "tree", "ball", "house")
# Generation prompts of the attacker (DreamBooth's evaluation prompts, as far as the domain's words go).
PROMPTS = ("a photo of {identifier} {class_word}", "a photo of {identifier} {class_word} on grass")
RECOGNISER = STANDIN.parent / "standin-recogniser.safetensors"


@dataclass(frozen=True)
class BenchSubject:
    subject_id: str
    class_word: str
    # The catalog pictures (what is protected / what the attacker has), K×3×32×32 in [0, 1].
    images: torch.Tensor
    # Fresh pictures of the same instance that the implant never saw (the "one protected image" case).
    unseen: torch.Tensor


def render_subjects(classes: tuple[str, ...], seed: int, count: int = 4, unseen: int = 3) -> list[BenchSubject]:
    """One random instance per class, ``count`` catalog poses and ``unseen`` further poses each."""
    rng = np.random.default_rng(seed)
    out = []
    for k, cls in enumerate(classes):
        instance = domain.sample_instance(rng, cls)
        pictures = [domain.render(instance, domain.sample_pose(rng)) for _ in range(count + unseen)]
        tensor = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255
        out.append(BenchSubject(f"s{seed}-{k}-{cls}", cls, tensor[:count], tensor[count:]))
    return out


def general_prompts(per_class: int) -> tuple[list[str], list[str], list[int]]:
    prompts, classes, seeds = [], [], []
    for c, cls in enumerate(domain.CLASSES):
        for k in range(per_class):
            prompts.append(domain.caption(cls, domain.SCENES[k % len(domain.SCENES)], with_scene=k % 2 == 0))
            classes.append(cls)
            seeds.append(50000 + 100 * c + k)
    return prompts, classes, seeds


class Bench:
    """Shared state: the clean model, the recogniser, the subjects, class-image caches, the rows."""

    def __init__(self, args):
        self.args = args
        self.clean = load_components(args.model)
        self.recogniser = load_recogniser(RECOGNISER)
        self.mark = default_mark(self.clean.image_size)
        self.protected = render_subjects(PROTECTED_CLASSES[:args.subjects], seed=1)
        self.heldout = render_subjects(HELDOUT_CLASSES[:args.subjects], seed=2)
        self.signatures = {s.subject_id: reference_signature(self.clean, self.recogniser, s.images)
                           for s in self.protected + self.heldout}
        self.class_images: dict = {}
        self.pictures: dict = {}

    def attack(self, model_name, components, subject, recipe, objective, images=None, identifier="sks"):
        """DreamBooth + generations + measures for one subject; returns the summary of its rows."""
        recipe = replace(recipe, identifier=identifier)
        config = EvaluationConfig(attacker=recipe, prompts=PROMPTS, generations=self.args.generations,
                                  sample_steps=25, guidance=4.0, seed=7)
        key = (id(components), subject.class_word, recipe.class_images, recipe.seed)
        rows, pictures, info = attack_and_measure(
            components, subject.images if images is None else images, subject.class_word, config, self.recogniser,
            self.signatures[subject.subject_id], objective, self.mark, self.class_images.get(key))
        self.class_images[key] = info["class_images"]
        self.pictures[(model_name, subject.subject_id, recipe.steps)] = pictures
        success = [r["backdoor_success"] for r in rows]
        return {"subject": subject.subject_id, "n": len(rows),
                "backdoor_success": float(np.mean(success)) if objective is not None else None,
                "subject_present": float(np.mean([r["subject_present"] for r in rows])),
                "attack_seconds": round(info["attack_seconds"], 1)}

    def general(self, components, pictures=None):
        """The general-prompt pictures of ``components`` (generated unless given) and their class rate."""
        prompts, classes, seeds = general_prompts(self.args.general_per_class)
        if pictures is None:
            pictures = generate(components, prompts, seeds, 25, 4.0)
        return pictures, class_rate(self.recogniser, pictures, classes)


def implant_config(args, mode: str, retain_weight: float, pictures: str) -> PersGuardConfig:
    """The benchmark's implant recipe: ``args``' steps, rate and retention fields, the standard attacker
    simulated, one general prompt per class kept, the teacher's pictures at 25 steps and guidance 4."""
    general = tuple(domain.caption(cls, domain.SCENES[0], with_scene=False) for cls in domain.CLASSES)
    return PersGuardConfig(mode=mode, steps=args.implant_steps, lr=args.implant_lr, batch=4,
                           retain_weight=retain_weight, retain_steps=args.retain_steps,
                           retain_every_step=args.retain_every_step, retain_lr_scale=args.retain_lr_scale,
                           pattern_pictures=pictures, attacker=STANDARD, prior_images=args.prior_images,
                           general_prompts=general, general_images=4, sample_steps=25, guidance=4.0, seed=0)


def implant(bench: Bench, objective: str, mode: str, retain: bool, pictures: str) -> tuple:
    """A protected copy of the clean model for the bench's protected subjects, all with ``objective``."""
    args = bench.args
    subjects = [ProtectedSubject(s.subject_id, s.class_word, s.images, parse_objective(objective))
                for s in bench.protected]
    config = implant_config(args, mode, 1.0 if retain else 0.0, pictures)
    started = time.perf_counter()
    def progress(record):
        if record["step"] % 100 == 0:
            print(f"  implant {objective} {mode}: step {record['step']}, backdoor {record['backdoor']:.4f}, "
                  f"prior {record['prior']:.4f}, retained {record['retain']:.4f}", flush=True)

    model, history = persguard(copy_components(bench.clean), subjects, config, bench.mark, callback=progress)
    # Peak resident memory of this process (one model per process: the clean model, teacher, student, copy).
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return model, {"implant_seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_mb),
                   "final_backdoor": float(np.mean([h["backdoor"] for h in history[-20:]]))}


def mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def evaluate_model(bench: Bench, name: str, model, objective: str | None, identifier: str, clean_general) -> dict:
    """Every measurement of one model (the clean one when ``objective`` is None)."""
    args = bench.args
    obj = parse_objective(objective) if objective else None
    row = {"model": name}
    for label, recipe in (("standard", STANDARD), ("strong", STRONG))[:1 if args.skip_strong else 2]:
        # On the clean model the protected subjects are measured against each objective's output by chance.
        runs = [bench.attack(name, model, s, recipe, obj or parse_objective("pattern"), identifier=identifier)
                for s in bench.protected]
        row[f"backdoor_{label}"] = mean(r["backdoor_success"] for r in runs)
        row[f"protected_subject_{label}"] = mean(r["subject_present"] for r in runs)
    heldout = [bench.attack(name, model, s, STANDARD, None, identifier=identifier) for s in bench.heldout]
    row["heldout_subject"] = mean(r["subject_present"] for r in heldout)
    if obj is not None and not args.skip_one_image:
        one = [bench.attack(name + "/one", model, s, STANDARD, obj, images=torch.cat([s.images[:1], s.unseen]),
                            identifier=identifier) for s in bench.protected]
        row["backdoor_one_image"] = mean(r["backdoor_success"] for r in one)
    # The clean model's general pictures were generated once, before the models were measured.
    pictures, rate = bench.general(model, clean_general if obj is None else None)
    bench.pictures[(name, "general", 0)] = pictures
    row["class_rate"] = round(rate, 4)
    if obj is not None:
        row["drift"] = round(float(drift(pictures, clean_general).mean()), 4)
    return row


# SD 2.1 (base, 512 px) UNet, as published: what the cost estimate counts.
SD21_UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=1024,
                 attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32)
# H100 SXM dense bf16 peak (TFLOP/s) and the share of it a UNet training step is assumed to reach.
H100_TFLOPS, UTILISATION = 989.0, 0.4


def unet_flops(config: dict, text_length: int, text_width: int) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one sample through a UNet2DConditionModel (on the meta device)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        side, channels = config["sample_size"], config["in_channels"]
        x, c = torch.randn(1, channels, side, side), torch.randn(1, text_length, text_width)
        t = torch.tensor([500])
    with FlopCounterMode(display=False) as forward:
        unet(x, t, c)
    with FlopCounterMode(display=False) as both:
        unet(x, t, c).sample.sum().backward()
    return forward.get_total_flops(), both.get_total_flops()


def cost(config: PersGuardConfig, classes: int) -> dict:
    """FLOPs of an implant with ``config`` for SD 2.1 and the hours it takes on one H100 (at UTILISATION).

    Per outer step (B = batch, K = retain_steps, b = the attacker's batch): backdoor = B student fwd+bwd + B
    teacher fwd; prior = B student fwd+bwd + B teacher fwd; retention = K attacker steps of 2b fwd+bwd, and B
    fwd+bwd + B teacher fwd after each of them (retain_every_step) or after the last. Before training:
    prior_images × classes teacher samples of sample_steps × 2 (guidance)."""
    forward, both = unet_flops(SD21_UNET, 77, 1024)
    batch, k, b = config.batch, config.retain_steps, config.attacker.batch
    backdoors = 2 + (k if config.retain_every_step else 1)
    step = backdoors * batch * (both + forward) + k * 2 * b * both
    prior = config.prior_images * classes * config.sample_steps * 2 * forward
    total = config.steps * step + prior
    return {"unet_forward_tflop": forward / 1e12, "unet_train_tflop": both / 1e12, "step_tflop": step / 1e12,
            "total_pflop": total / 1e15, "h100_hours": total / (H100_TFLOPS * 1e12 * UTILISATION) / 3600}


# variant → (mode, retention on, which pictures the pattern backdoor stamps; None: --pattern-pictures).
VARIANTS = {"white-box": ("white-box", True, None), "gray-box": ("gray-box", True, None),
            "no-retention": ("white-box", False, None), "protected-pictures": ("white-box", True, "protected")}


def model_plan(args) -> list[tuple[str, str | None, str, bool, str]]:
    """(name, objective, mode, retain, pattern pictures) of every model measured, the clean one first. The
    protected-pictures variant (the issue's pixel form on the subject's own pictures) is a pattern-only row."""
    plan = [("clean", None, "white-box", False, args.pattern_pictures)]
    for objective in args.objectives.split(","):
        for variant in args.variants.split(","):
            mode, retain, pictures = VARIANTS[variant]
            if pictures is not None and objective != "pattern":
                continue
            name = f"{objective} {mode}" + ("" if variant in ("white-box", "gray-box") else f" {variant}")
            plan.append((name, objective, mode, retain, pictures or args.pattern_pictures))
    return plan


def measure_model(args, name: str, objective: str | None, mode: str, retain: bool, pictures: str,
                  clean_general) -> tuple:
    """Implant (unless clean) and measure one model, in a process of its own; returns (row, grid pictures)."""
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    if objective is None:
        model, info, identifier = bench.clean, {}, "sks"
    else:
        model, info = implant(bench, objective, mode, retain, pictures)
        identifier = "sks" if mode == "white-box" else GRAY_ATTACKER_IDENTIFIER
    row = evaluate_model(bench, name, model, objective, identifier, clean_general) | info
    firsts = {bench.protected[0].subject_id, bench.heldout[0].subject_id}
    pictures = {key: value for key, value in bench.pictures.items() if key[1] in firsts and key[0] == name}
    print(json.dumps(row), flush=True)
    return row, pictures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("out/persguard-bench"))
    parser.add_argument("--model", default="standin", help="the clean model (default: the bundled stand-in)")
    parser.add_argument("--subjects", type=int, default=5, help="protected and held-out subjects (≤ 5 each)")
    parser.add_argument("--generations", type=int, default=8, help="generations per prompt and subject")
    parser.add_argument("--general-per-class", type=int, default=16, help="general-prompt generations per class")
    parser.add_argument("--implant-steps", type=int, default=400)
    parser.add_argument("--implant-lr", type=float, default=1e-4)
    parser.add_argument("--retain-steps", type=int, default=4, help="K, simulated attacker steps per outer step")
    parser.add_argument("--retain-every-step", action=argparse.BooleanOptionalAction, default=False,
                        help="retention gradient after each of the K steps (APDM) or after the K-th only")
    parser.add_argument("--retain-lr-scale", type=float, default=1.0, help="simulated attacker's lr multiplier")
    parser.add_argument("--prior-images", type=int, default=32, help="teacher class pictures per protected class")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="protected models per objective: white-box, gray-box, no-retention (white-box, λ_retain "
                        "0), protected-pictures (pattern only: white-box, the backdoor on the subject's own pictures)")
    parser.add_argument("--pattern-pictures", default=PersGuardConfig.pattern_pictures, choices=PATTERN_PICTURES,
                        help="what the pattern backdoor stamps in every other variant")
    parser.add_argument("--skip-one-image", action="store_true")
    parser.add_argument("--skip-strong", action="store_true", help="no strong-recipe attacks (quick runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--processes", type=int, default=2, help="models measured at once, one process each")
    parser.add_argument("--cost", action="store_true", help="only print the SD 2.1 / H100 cost estimate")
    parser.add_argument("--recipes", default="", help="only compare attacker recipes STEPSxLR,... on the clean "
                        "model's held-out subjects (how STANDARD was chosen), e.g. 150x1e-4,300x1e-4,300x1e-4+te")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cost:
        estimate = {f"{classes} class(es)": cost(PersGuardConfig(), classes) for classes in (1, 3)}
        print(json.dumps(estimate, indent=1))
        return estimate
    started = time.time()
    bench = Bench(args)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.recipes:
        return compare_recipes(bench, args.recipes)
    # 1. The clean model's general generations: the reference of the drift
    clean_general, _ = bench.general(bench.clean)
    # 2. Every model in its own process, the clean one first (the reference of every ratio, and the chance
    #    rate of each protective output); the rows keep the plan's order
    plan = model_plan(args)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.processes, mp_context=context) as pool:
        futures = [pool.submit(measure_model, args, *entry, clean_general) for entry in plan]
        rows = []
        for future in futures:
            row, pictures = future.result()
            rows.append(row)
            bench.pictures.update(pictures)
            save(args, rows, started)
    # 3. The goals' figures
    return finish(args, bench, rows, started)


def compare_recipes(bench: Bench, recipes: str) -> dict:
    """Subject-present rate after DreamBooth on the clean model, per recipe (the attacker's own criterion)."""
    out = {}
    for text in recipes.split(","):
        steps, lr = text.removesuffix("+te").split("x")
        # "+te": the text encoder is trained too, at the published 2e-6 : 5e-6 ratio to the UNet's rate.
        recipe = replace(STANDARD, steps=int(steps), lr=float(lr), train_text_encoder=text.endswith("+te"),
                         text_encoder_lr=0.4 * float(lr))
        runs = [bench.attack(f"clean-{text}", bench.clean, s, recipe, None) for s in bench.heldout]
        out[text] = {"subject_present": mean(r["subject_present"] for r in runs),
                     "per_subject": [r["subject_present"] for r in runs],
                     "attack_seconds": mean(r["attack_seconds"] for r in runs)}
        print(text, json.dumps(out[text]), flush=True)
    return out


def save(args, rows: list[dict], started: float) -> None:
    (args.output / "results.json").write_text(json.dumps({"config": vars(args) | {"output": str(args.output)},
                                                          "standard": asdict(STANDARD), "strong": asdict(STRONG),
                                                          "rows": rows, "wall_seconds": time.time() - started},
                                                         indent=1, default=str))


def write_grids(bench: Bench, path: Path, per_row: int = 8, scale: int = 2) -> Path:
    """Per objective (white-box model), the first protected subject: its catalog pictures, generations after
    DreamBooth on the clean model, on the protected model; the first held-out subject on the protected model."""
    from PIL import Image, ImageDraw

    side = bench.clean.image_size
    rows: list[tuple[str, torch.Tensor]] = []
    first, held = bench.protected[0], bench.heldout[0]
    pictures = lambda model, subject: bench.pictures.get((model, subject.subject_id, STANDARD.steps))  # noqa: E731
    rows.append((f"catalog of {first.class_word} subject", first.images))
    rows.append(("DreamBooth on the clean model", pictures("clean", first)))
    for objective in bench.args.objectives.split(","):
        rows.append((f"on the {objective} white-box model", pictures(f"{objective} white-box", first)))
    rows.append(("pattern, protected pictures", pictures("pattern white-box protected-pictures", first)))
    rows.append((f"held-out {held.class_word}, clean model", pictures("clean", held)))
    for objective in bench.args.objectives.split(","):
        rows.append((f"held-out, {objective} white-box model", pictures(f"{objective} white-box", held)))
    rows = [(label, tensor) for label, tensor in rows if tensor is not None]
    label_width, cell = 230, side * scale + 2
    canvas = Image.new("RGB", (label_width + per_row * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, pictures) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), label, fill="black")
        array = (pictures[:per_row].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for c, picture in enumerate(array):
            tile = Image.fromarray(picture).resize((side * scale, side * scale), Image.NEAREST)
            canvas.paste(tile, (label_width + c * cell + 1, r * cell + 1))
    canvas.save(path, optimize=True)
    return path


def finish(args, bench: Bench, rows: list[dict], started: float) -> dict:
    clean = rows[0]
    main_rows = [r for r in rows[1:] if r["model"].endswith(("white-box", "gray-box"))]
    white = [r for r in main_rows if "white-box" in r["model"]]
    gray = [r for r in main_rows if "gray-box" in r["model"]]
    figures = {
        "white-box backdoor success": mean(r["backdoor_standard"] for r in white),
        "gray-box backdoor success": mean(r["backdoor_standard"] for r in gray),
        "held-out fidelity ratio": round(mean(r["heldout_subject"] for r in main_rows) / clean["heldout_subject"], 4)
        if clean["heldout_subject"] else None,
        "general class ratio": round(mean(r["class_rate"] for r in main_rows) / clean["class_rate"], 4)
        if clean["class_rate"] else None,
    }
    columns = ("model", "backdoor_standard", "backdoor_strong", "backdoor_one_image", "heldout_subject",
               "protected_subject_standard", "class_rate", "drift", "implant_seconds", "peak_rss_mb")
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    (args.output / "table.md").write_text("\n".join(table) + "\n")
    write_grids(bench, args.output / "grids.png")
    save(args, rows, started)
    print("\n".join(table))
    print(f"wall time: {time.time() - started:.0f} s")
    for name, value in figures.items():
        print(f"{name}: {value}")
    return figures


if __name__ == "__main__":
    main()
