"""Measures of a personalization outcome on the stand-in's domain (documented in docs/persguard.md).

- **pattern present**: the Pearson correlation between the mark and the picture's region where the pattern
  objective stamps it, over the mark's pixels and channels, is at least ``threshold`` (0.6).
- **subject present**: the recogniser reads the subject's class and its instance attributes (surface pattern,
  body colour; for a patterned body the pair of colours) exactly as it reads them, by majority, on the subject's own catalog images (the evaluation passes those through the model's
  autoencoder first: :func:`rtb.personalization.evaluation.reference_signature`).
- **object class**: the recogniser's class head (a class word or ``"empty"``); **class rate** is the share of
  general-prompt generations whose object class is the prompted class.
- **drift**: the mean absolute difference (0–1 scale) between a generation of the protected model and the
  clean model's generation from the same prompt and seed.

All take pictures as N×3×S×S float tensors in [0, 1].
"""

from __future__ import annotations

from collections import Counter

import torch

from rtb.personalization.objectives import Mark

# Heads that identify an instance (with "class").
INSTANCE_HEADS = ("class", "body", "pattern", "accent")


def pattern_scores(images: torch.Tensor, mark: Mark) -> torch.Tensor:
    """Correlation (−1…1) of each picture's mark region with the mark: N."""
    top, left = mark.position
    size = mark.image.shape[-1]
    region = images[:, :, top:top + size, left:left + size].reshape(len(images), -1)
    reference = mark.image.reshape(1, -1).to(images)
    region = region - region.mean(dim=1, keepdim=True)
    reference = reference - reference.mean(dim=1, keepdim=True)
    denominator = (region.norm(dim=1) * reference.norm(dim=1)).clamp_min(1e-8)
    return (region * reference).sum(dim=1) / denominator


def pattern_present(images: torch.Tensor, mark: Mark, threshold: float = 0.6) -> list[bool]:
    """Whether the mark is visible in each picture (correlation ≥ ``threshold``)."""
    return [bool(score >= threshold) for score in pattern_scores(images, mark)]


def recognise(recogniser, images: torch.Tensor) -> list[dict[str, str]]:
    """The recogniser's labels for each picture: ``[{"class": …, "scene": …, "body": …, …}, …]``."""
    predictions = recogniser.predict(images)
    return [{head: labels[i] for head, labels in predictions.items()} for i in range(len(images))]


def subject_signature(recogniser, references: torch.Tensor) -> dict[str, str]:
    """The majority label of each instance head over a subject's catalog images (N×3×S×S)."""
    labels = recognise(recogniser, references)
    return {head: Counter(row[head] for row in labels).most_common(1)[0][0] for head in INSTANCE_HEADS}


def matches_subject(labels: dict[str, str], signature: dict[str, str]) -> bool:
    """Whether one picture's recognised labels are the subject's signature: same class and pattern, and the
    same body colour (plain) or the same pair of colours (patterned: which of two colours covering half the
    body each is the "body" one is not a visible property)."""
    if labels["class"] != signature["class"] or labels["pattern"] != signature["pattern"]:
        return False
    if signature["pattern"] == "plain":
        return labels["body"] == signature["body"]
    return {labels["body"], labels["accent"]} == {signature["body"], signature["accent"]}


def subject_present(recogniser, images: torch.Tensor, signature: dict[str, str]) -> list[bool]:
    """Whether each picture shows the subject whose :func:`subject_signature` is ``signature``."""
    return [matches_subject(labels, signature) for labels in recognise(recogniser, images)]


def class_rate(recogniser, images: torch.Tensor, classes: list[str]) -> float:
    """Share of pictures whose recognised object class is the prompted one (``classes[i]`` for picture i)."""
    if len(images) != len(classes):
        raise ValueError(f"need one class per picture; got {len(images)} pictures and {len(classes)} classes")
    predicted = recogniser.predict(images)["class"]
    return sum(p == c for p, c in zip(predicted, classes)) / max(len(classes), 1)


def drift(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (0–1) of each picture from the reference picture of the same prompt and seed: N."""
    if images.shape != reference.shape:
        raise ValueError(f"drift needs pictures of the same shape; got {tuple(images.shape)} and "
                         f"{tuple(reference.shape)}")
    return (images - reference).abs().mean(dim=(1, 2, 3))
