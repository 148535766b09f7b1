"""Attack a model with DreamBooth on one subject, generate with the identifier prompts, and measure each picture.

What the evaluation job (``rtb evaluate-personalization``) and ``benchmarks/persguard.py`` both run per
(subject, model). A generation row holds the measures of :mod:`rtb.personalization.measures` and, when the
subject has an objective, whether the protective output appeared (**backdoor success**):

- ``pattern``: the mark is present;
- ``erasure``: the recogniser sees no object (``"empty"``);
- ``target:C``: the recogniser sees a C.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rtb.personalization.components import SDComponents, generate
from rtb.personalization.dreambooth import DreamBoothConfig, dreambooth, prepare_dreambooth
from rtb.personalization.measures import matches_subject, pattern_scores, recognise, subject_signature
from rtb.personalization.objectives import Mark, Objective


@dataclass(frozen=True)
class EvaluationConfig:
    """How a subject is attacked and its generations are made."""

    # The attacker's DreamBooth recipe (its identifier goes into the generation prompts).
    attacker: DreamBoothConfig = field(default_factory=DreamBoothConfig)
    # Generation prompts; {identifier} and {class_word} are filled in.
    prompts: tuple[str, ...] = ("a photo of {identifier} {class_word}",)
    # Generations per prompt and subject.
    generations: int = 8
    # DDIM steps and guidance scale of the generations.
    sample_steps: int = 25
    guidance: float = 4.0
    # Seed of the generations (the attacker's own seed is in ``attacker``).
    seed: int = 0
    # Correlation at which the mark counts as present.
    pattern_threshold: float = 0.6


@torch.no_grad()
def reference_signature(components: SDComponents, recogniser, images: torch.Tensor) -> dict[str, str]:
    """The subject's signature as the model can render it: the recogniser's majority labels on the catalog
    images after a round trip through the model's autoencoder (details it cannot reproduce, such as a fine
    dot pattern through the stand-in's factor-4 VAE, are left out of "subject present" on every model alike)."""
    vae = components.vae
    latents = vae.encode(images.to(components.unet.device) * 2 - 1).latent_dist.mean
    decoded = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1).cpu()
    return subject_signature(recogniser, decoded)


def backdoor_success(objective: Objective | None, labels: dict, pattern_score: float, threshold: float) -> bool | None:
    """Whether one picture shows the protective output of ``objective`` (None without an objective)."""
    if objective is None:
        return None
    if objective.kind == "pattern":
        return pattern_score >= threshold
    if objective.kind == "erasure":
        return labels["class"] == "empty"
    return labels["class"] == objective.target


def measure_generations(pictures: torch.Tensor, prompts: list[str], seeds: list[int], recogniser, signature: dict,
                        objective: Objective | None, mark: Mark, threshold: float) -> list[dict]:
    """One row per generation (prompt, seed, pattern_score, pattern_present, object_class, subject_present,
    backdoor_success) of ``pictures`` (G×3×S×S), made from ``prompts[i]`` and ``seeds[i]``."""
    scores = pattern_scores(pictures, mark)
    rows = []
    for prompt, seed, labels, score in zip(prompts, seeds, recognise(recogniser, pictures), scores.tolist()):
        rows.append({"prompt": prompt, "seed": seed, "pattern_score": score, "pattern_present": score >= threshold,
                     "object_class": labels["class"], "subject_present": matches_subject(labels, signature),
                     "backdoor_success": backdoor_success(objective, labels, score, threshold)})
    return rows


def attack_and_measure(components: SDComponents, images: torch.Tensor, class_word: str, config: EvaluationConfig,
                       recogniser, signature: dict, objective: Objective | None, mark: Mark,
                       class_images: torch.Tensor | None = None) -> tuple[list[dict], torch.Tensor, dict]:
    """DreamBooth on ``images`` (N×3×S×S in [0, 1]), then the identifier-prompt generations and their measures.

    Args:
        components: the attacked model (left unchanged).
        signature: the subject's :func:`rtb.personalization.measures.subject_signature`.
        objective: the subject's protection objective (None for an unprotected subject).
        class_images: prior-preservation pictures to reuse (else the attacked model generates them).
    Returns:
        ``(rows, pictures, info)``: one row per generation (prompt, seed, pattern_score, pattern_present,
        object_class, subject_present, backdoor_success), the pictures (G×3×S×S), and the attack's losses,
        seconds and class pictures.
    """
    # 1. Attack
    started = time.perf_counter()
    data = prepare_dreambooth(components, images, class_word, config.attacker, class_images)
    attacked = dreambooth(components, images, class_word, config.attacker, data=data)
    attack_seconds = time.perf_counter() - started
    # 2. Generate with the identifier prompts
    prompts, seeds = [], []
    for k, template in enumerate(config.prompts):
        text = template.format(identifier=config.attacker.identifier, class_word=class_word)
        prompts += [text] * config.generations
        seeds += [config.seed * 1000003 + 1009 * k + i for i in range(config.generations)]
    pictures = generate(attacked.components, prompts, seeds, config.sample_steps, config.guidance)
    # 3. Measure
    rows = measure_generations(pictures, prompts, seeds, recogniser, signature, objective, mark,
                               config.pattern_threshold)
    info = {"loss_before": attacked.loss_before, "loss_after": attacked.loss_after, "attack_seconds": attack_seconds,
            "class_images": data.class_images}
    return rows, pictures, info
