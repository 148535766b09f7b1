"""Rendered sets of the procedural domain: pictures plus the labels captions and the recogniser need.

A set is a function of (count, seed) alone and is cached as ``.npz`` in the work directory, so a resumed run
trains on exactly the pictures it started with. The held-out set uses a different seed from the training set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtb_train.standin_t2i import domain

# Label columns of a set; "class" includes EMPTY as its last index.
LABELS = {
    "class": (*domain.CLASSES, domain.EMPTY),
    "scene": domain.SCENES,
    "body": domain.COLOURS,
    "pattern": domain.PATTERNS,
    "accent": domain.COLOURS,
}


def render_set(count: int, seed: int, empty_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """``count`` random pictures drawn from ``np.random.default_rng(seed)``.

    Returns ``{"images": N×32×32×3 uint8, "class", "scene", "body", "pattern", "accent": N int64}``; an empty
    scene has class EMPTY and body/pattern/accent −1.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((count, domain.SIZE, domain.SIZE, 3), np.uint8)
    labels = {name: np.full(count, -1, np.int64) for name in LABELS}
    for index in range(count):
        instance = None if rng.random() < empty_fraction else domain.sample_instance(rng)
        pose = domain.sample_pose(rng)
        images[index] = domain.render(instance, pose)
        labels["scene"][index] = domain.SCENES.index(pose.scene)
        if instance is None:
            labels["class"][index] = len(domain.CLASSES)
            continue
        labels["class"][index] = domain.CLASSES.index(instance.cls)
        labels["body"][index] = domain.COLOURS.index(instance.body)
        labels["pattern"][index] = domain.PATTERNS.index(instance.pattern)
        labels["accent"][index] = domain.COLOURS.index(instance.accent)
    return {"images": images, **labels}


def cached_set(folder: str | Path, name: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """:func:`render_set` cached as ``folder/<name>-<count>-<seed>.npz``."""
    path = Path(folder) / f"{name}-{count}-{seed}.npz"
    if path.exists():
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    data = render_set(count, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **data)
    partial.rename(path)
    return data


def attributes_for(data: dict[str, np.ndarray], index: int, rng: np.random.Generator) -> str:
    """The object's body colour, its pattern's adjective, or both ("red striped"), each alone a third of the
    time. Neither word is in the tokenizer's merges: they are spelled in byte tokens, as a word outside
    SD's vocabulary is split into pieces."""
    words = [domain.COLOURS[int(data["body"][index])], domain.PATTERN_WORDS[domain.PATTERNS[int(data["pattern"][index])]]]
    choice = int(rng.integers(3))
    return " ".join(words) if choice == 2 else words[choice]


def captions_for(data: dict[str, np.ndarray], indices: np.ndarray, rng: np.random.Generator,
                 drop: float = 0.0, describe: float = 0.0) -> list[str]:
    """Captions of the pictures at ``indices``: the scene named half of the time, the object's colour and
    pattern with probability ``describe`` (so the class word is found wherever it stands, as in SD's
    captions), and the empty caption with probability ``drop`` (classifier-free guidance's unconditional
    branch). With ``describe`` 0 the draws are those of the first candidates."""
    texts = []
    for index in indices:
        cls = int(data["class"][index])
        scene = domain.SCENES[int(data["scene"][index])]
        with_scene = bool(rng.random() < 0.5)
        empty = cls == len(domain.CLASSES)
        attributes = attributes_for(data, index, rng) if describe > 0 and not empty and rng.random() < describe \
            else ""
        text = domain.caption(None if empty else domain.CLASSES[cls], scene, with_scene, attributes)
        texts.append("" if rng.random() < drop else text)
    return texts
