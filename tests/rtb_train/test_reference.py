"""Training of the reference inpainter: its data and the trainer end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtb.inpainters.reference import load_reference
from rtb.storage import fingerprint
from rtb_train.data import HELDOUT_SKIMAGE, TRAIN_SKIMAGE, procedural_image, random_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def test_masks_and_data_are_seeded_and_in_range():
    for kind in ("strokes", "boxes", "mixed"):
        rng = np.random.default_rng(3)
        for _ in range(5):
            mask = random_mask(rng, 64, 0.05, 0.4, kind=kind)
            assert 0.05 <= mask.mean() <= 0.4 and set(np.unique(mask)) <= {0.0, 1.0}
    first = procedural_image(np.random.default_rng(5), 32)
    assert np.array_equal(first, procedural_image(np.random.default_rng(5), 32))
    assert first.shape == (32, 32, 3) and 0 <= first.min() and first.max() <= 1
    assert not set(HELDOUT_SKIMAGE) & set(TRAIN_SKIMAGE)


@pytest.mark.parametrize("variant", [[], ["--no-prior"]], ids=["prior", "no-prior"])
def test_training_job_runs_end_to_end(tmp_path, variant):
    from rtb_train.reference import main

    output = tmp_path / "tiny.safetensors"
    argv = ["--steps", "1", "--batch", "1", "--procedural-count", "2", "--heldout-size", "64", "--threads", "1"]
    assert main(argv + variant + ["--heldout-procedural", "1", "--output", str(output)]) == 0
    record = json.loads(output.with_suffix(".json").read_text())
    assert record["train"]["steps"] == 1 and record["model"]["prior"] is not bool(variant)
    loaded = load_reference(output)
    assert loaded.fingerprint == fingerprint(output)
    # The variant travels in the weights' metadata: the loader rebuilds the same architecture.
    assert loaded.net.config.prior is not bool(variant)
    assert loaded.net.stem.in_channels == (16 if variant else 28)
