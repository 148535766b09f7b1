"""Train the stand-in text-to-image model and its recogniser on CPU; every stage resumes from its checkpoint.

    python -m rtb_train.standin_t2i vae        --work out/standin
    python -m rtb_train.standin_t2i recogniser --work out/standin
    python -m rtb_train.standin_t2i t2i        --work out/standin --arch s64 --steps 5000
    python -m rtb_train.standin_t2i t2i        --work out/standin --arch s64 --steps 2500 --describe 0.5 \
        --init out/standin/t2i-s64/model --name s64-described           # a candidate warm-started from another
    python -m rtb_train.standin_t2i export     --work out/standin --name s64-described  # → rtb/weights/standin-t2i

Rerunning a command continues the stage from its last checkpoint (written every 3 minutes); a finished stage
is not redone. One CPU thread by default (the recipe fixes it: the thread count can change float reduction
order). The stand-in is chosen by ``quality.json`` of each candidate (held-out loss, class rate, grids).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rtb_train.standin_t2i import data as datasets
from rtb_train.standin_t2i.checkpoint import log
from rtb_train.standin_t2i.models import build, candidates

# The rare word of the identifier class rate (DreamBooth's customary identifier).
IDENTIFIER = "sks"
# Rendered set sizes: training pictures and held-out pictures (different seeds).
TRAIN_COUNT, HELDOUT_COUNT = 40000, 1024
WEIGHTS = Path(__file__).resolve().parents[2] / "rtb" / "weights"


def load_sets(work: Path, args) -> tuple[dict, dict]:
    train = datasets.cached_set(work / "data", "train", args.train_count, seed=0)
    heldout = datasets.cached_set(work / "data", "heldout", HELDOUT_COUNT, seed=1)
    return train, heldout


def stage_vae(work: Path, args) -> None:
    from diffusers import AutoencoderKL

    from rtb_train.standin_t2i.train_vae import VaeTrainConfig, train_vae

    final = work / "vae" / "final"
    if (final / "config.json").exists():
        print(f"vae: done ({final})")
        return
    train, heldout = load_sets(work, args)
    config = replace(VaeTrainConfig(), **({"steps": args.steps} if args.steps else {}))
    torch.manual_seed(config.seed)
    vae = build(candidates()[args.arch])["vae"]
    vae = train_vae(work / "vae", vae, train, heldout, config)
    vae.save_pretrained(final, safe_serialization=True)
    assert isinstance(vae, AutoencoderKL)


def stage_recogniser(work: Path, args) -> None:
    from diffusers import AutoencoderKL

    from rtb.personalization.recogniser import save_recogniser
    from rtb_train.standin_t2i.train_recogniser import RecogniserTrainConfig, accuracy, to_unit, train_recogniser

    final = work / "recogniser" / "recogniser.safetensors"
    if final.exists():
        print(f"recogniser: done ({final})")
        return
    train, heldout = load_sets(work, args)
    config = replace(RecogniserTrainConfig(), **({"steps": args.steps} if args.steps else {}))
    model = train_recogniser(work / "recogniser", train, config)
    record = {"config": asdict(config), "heldout_renders": accuracy(model, to_unit(heldout["images"]), heldout)}
    vae_folder = work / "vae" / "final"
    if vae_folder.exists():
        vae = AutoencoderKL.from_pretrained(vae_folder).eval()
        with torch.no_grad():
            x = torch.from_numpy(heldout["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
            recon = torch.cat([vae.decode(vae.encode(x[i:i + 256]).latent_dist.mean).sample
                               for i in range(0, len(x), 256)])
        record["heldout_reconstructions"] = accuracy(model, ((recon + 1) / 2).clamp(0, 1), heldout)
    log(work / "recogniser", {"stage": "recogniser", "done": True, **record})
    save_recogniser(model, final, record)


def stage_t2i(work: Path, args) -> None:
    from diffusers import AutoencoderKL

    from rtb.personalization.components import SDComponents
    from rtb.personalization.recogniser import load_recogniser
    from rtb_train.standin_t2i.quality import heldout_batch, measure_class_rate, sample_grid
    from rtb_train.standin_t2i.train_t2i import T2iTrainConfig, heldout_loss, train_t2i
    from rtb_train.standin_t2i.train_vae import encode_posteriors

    folder = work / f"t2i-{args.name or args.arch}"
    if (folder / "quality.json").exists():
        print(f"t2i {args.arch}: done ({folder / 'quality.json'})")
        return
    # 1. The frozen autoencoder and the latents of the training set
    train, heldout = load_sets(work, args)
    vae = AutoencoderKL.from_pretrained(work / "vae" / "final").eval()
    cache = work / "data" / "latents.pt"
    if not cache.exists():
        torch.save(encode_posteriors(vae, train["images"]), cache)
    latents = torch.load(cache)
    # 2. Train
    config = replace(T2iTrainConfig(), describe=args.describe, **({"steps": args.steps} if args.steps else {}))
    torch.manual_seed(config.seed)
    components = build(candidates()[args.arch])
    components["vae"] = vae
    if args.init:  # warm start: another candidate's shipped (EMA) weights
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        components["unet"] = UNet2DConditionModel.from_pretrained(Path(args.init) / "unet")
        components["text_encoder"] = CLIPTextModel.from_pretrained(Path(args.init) / "text_encoder")
    batch = heldout_batch(vae, components["scheduler"], heldout)
    components = train_t2i(folder, components, latents, train, batch, config)
    # 3. Quality of the EMA weights; save the model
    from diffusers import DDIMScheduler

    sd = SDComponents(unet=components["unet"].eval(), vae=vae, text_encoder=components["text_encoder"].eval(),
                      tokenizer=components["tokenizer"], noise_scheduler=components["scheduler"],
                      sample_scheduler=DDIMScheduler.from_config(components["scheduler"].config, set_alpha_to_one=False),
                      source=str(folder))
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    recogniser = load_recogniser(work / "recogniser" / "recogniser.safetensors")
    quality = {
        "arch": args.arch, "name": args.name or args.arch, "init": args.init, "config": asdict(config),
        "cpu_seconds": round(state["cpu_seconds"], 1),
        "parameters": {name: sum(p.numel() for p in components[name].parameters())
                       for name in ("unet", "vae", "text_encoder")},
        "heldout_loss": round(heldout_loss(components, None, batch, vae.config.scaling_factor), 5),
        "class_rate": round(measure_class_rate(sd, recogniser), 4),
        # DreamBooth's prompts put a rare word before the class word ("a photo of sks fish").
        "identifier_class_rate": round(measure_class_rate(sd, recogniser, word=IDENTIFIER), 4),
    }
    sample_grid(sd, folder / "samples.png")
    from rtb.personalization.components import save_components

    save_components(sd, folder / "model")
    (folder / "quality.json").write_text(json.dumps(quality, indent=2))
    log(folder, {"stage": "t2i", "done": True, **{k: v for k, v in quality.items() if k != "config"}})


def stage_export(work: Path, args) -> None:
    folder = work / f"t2i-{args.name or args.arch}"
    quality = json.loads((folder / "quality.json").read_text())
    target = Path(args.output)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder / "model", target)

    def finished(folder: Path) -> dict:
        lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        return [r for r in lines if r.get("done")][-1] | {"folder": folder.name}

    recogniser = json.loads(safe_metadata(work / "recogniser" / "recogniser.safetensors")["record"])
    card = {
        "name": "rtb stand-in text-to-image model",
        "format": "diffusers StableDiffusionPipeline (safetensors)",
        "domain": "procedural 32x32 pictures: 8 object classes x 5 scenes (rtb_train/standin_t2i/domain.py)",
        "training": "python -m rtb_train.standin_t2i {vae,recogniser,t2i,export} (see docs/persguard.md)",
        "vae": finished(work / "vae"),
        "t2i": quality,
        "recogniser": recogniser,
        # Every candidate trained in this work directory, the chosen ones included.
        "candidates": {
            "vae": [finished(f) for f in sorted(work.glob("vae*")) if (f / "log.jsonl").exists()],
            "t2i": [json.loads((f / "quality.json").read_text()) for f in sorted(work.glob("t2i-*"))
                    if (f / "quality.json").exists()],
        },
        "exported": time.strftime("%Y-%m-%d"),
    }
    (target / "model_card.json").write_text(json.dumps(card, indent=2))
    shutil.copy(work / "recogniser" / "recogniser.safetensors", WEIGHTS / "standin-recogniser.safetensors")
    for file in [WEIGHTS / "standin-recogniser.safetensors", *target.rglob("*")]:
        file.chmod(0o755 if file.is_dir() else 0o644)  # safetensors writes 0600; the weights are shipped
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"exported {folder.name} to {target} ({size / 1e6:.1f} MB)")


def safe_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rtb_train.standin_t2i", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("vae", "recogniser", "t2i", "export"))
    parser.add_argument("--work", type=Path, default=Path("out/standin"), help="checkpoints, caches, logs")
    parser.add_argument("--arch", default="s64", choices=sorted(candidates()), help="candidate architecture")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the stage's config)")
    parser.add_argument("--train-count", type=int, default=TRAIN_COUNT, help="rendered training pictures")
    parser.add_argument("--name", default=None, help="t2i/export: the candidate's folder t2i-NAME [default: arch]")
    parser.add_argument("--describe", type=float, default=0.0,
                        help="t2i: share of captions naming the object's colour and pattern")
    parser.add_argument("--init", default=None, help="t2i: warm start from a finished candidate's model/ folder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads torch may use")
    parser.add_argument("--output", default=str(WEIGHTS / "standin-t2i"), help="export: the shipped directory")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    stages = {"vae": stage_vae, "recogniser": stage_recogniser, "t2i": stage_t2i, "export": stage_export}
    stages[args.stage](args.work, args)


if __name__ == "__main__":
    main()
