"""Training of the LaMa-style generator (``reference-gan``): one GAN step, its data, and the trainer's
checkpoint/resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rtb.inpainters import load_inpainter
from rtb.reference.lama import LamaConfig
from rtb.storage import fingerprint
from rtb_train.data import (
    GanDataConfig,
    OBJECT_KINDS,
    colour_jitter,
    draw_jitter,
    gan_batch,
    object_mask,
    pool_image,
    training_mask,
)
from rtb_train.gan import (
    DiscriminatorConfig,
    GanTrainConfig,
    GanTrainer,
    PatchDiscriminator,
    apply_colour_jitter,
    discriminator_loss,
    patch_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# A generator small enough for a CPU test: 1/4 resolution, one FFC block.
TINY = LamaConfig(stem_width=8, down_widths=(16, 32), blocks=1)
TINY_D = DiscriminatorConfig(widths=(16, 32, 64))


def holes(n: int, size: int) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size)
    m[..., size // 4 : size // 2 + 3, size // 5 : size // 2 + 5] = 1.0
    return m


def test_one_training_step_of_both_losses_changes_the_parameters():
    trainer = GanTrainer(TINY, TINY_D, GanTrainConfig(batch=2, crop=32, warmup=1, r1_every=1, steps=10))
    before_g = [p.detach().clone() for p in trainer.generator.parameters()]
    before_d = [p.detach().clone() for p in trainer.discriminator.parameters()]
    before_ema = [p.detach().clone() for p in trainer.ema.parameters()]
    x = torch.rand(2, 3, 32, 32)
    losses = trainer.step(x, holes(2, 32))
    assert set(losses) == {"d_adv", "r1", "l1", "g_adv", "fm", "g_loss", "d_loss"}
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["r1"]) > 0 and float(losses["fm"]) > 0
    assert all(not torch.equal(a, b) for a, b in zip(before_g, trainer.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, trainer.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_ema, trainer.ema.parameters()))
    assert trainer.step_index == 1
    # Next step: no R1 (lazy) when r1_every > 1.
    trainer.config = GanTrainConfig(batch=2, crop=32, warmup=1, r1_every=4, steps=10)
    assert "r1" not in trainer.step(x, holes(2, 32))


def test_discriminator_labels_only_hole_patches_fake():
    d = PatchDiscriminator(TINY_D)
    logits, features = d(torch.rand(1, 3, 64, 64))
    assert logits.shape[:2] == (1, 1) and len(features) == 3
    m = torch.zeros(1, 1, 64, 64)
    m[..., :8, :8] = 1
    pm = patch_mask(m, logits)
    assert pm.shape == logits.shape and float(pm.sum()) >= 1 and float(pm.mean()) < 0.2
    # A perfectly confident discriminator: real patches +∞, hole patches −∞, the others +∞ → loss 0.
    big = 50.0
    loss = discriminator_loss(torch.full_like(logits, big), big * (1 - 2 * pm), pm)
    assert float(loss) < 1e-6


# ---------------------------------------------------------------------------------------------------------
# Data


def test_object_masks_are_seeded_and_in_range():
    for kind in (*OBJECT_KINDS, None):
        rng = np.random.default_rng(4)
        for _ in range(3):
            mask = object_mask(rng, 64, 0.05, 0.4, kind=kind)
            assert 0.05 <= mask.mean() <= 0.4 and set(np.unique(mask)) <= {0.0, 1.0}
    a, b = object_mask(np.random.default_rng(9), 64), object_mask(np.random.default_rng(9), 64)
    assert np.array_equal(a, b)
    rng = np.random.default_rng(5)
    assert all(0.05 <= training_mask(rng, 64, 0.05, 0.5).mean() <= 0.5 for _ in range(10))
    with pytest.raises(ValueError):
        object_mask(rng, 64, kind="car")


def test_pool_images_and_batches_are_deterministic():
    first = pool_image(0, 3, 40)
    assert first.dtype == np.uint8 and first.shape == (40, 40, 3) and np.array_equal(first, pool_image(0, 3, 40))
    pool = np.stack([pool_image(0, i, 40) for i in range(4)])
    photos = [np.full((50, 60, 3), 128, np.uint8), np.zeros((48, 48, 3), np.uint8)]
    config = GanDataConfig(crop=32, pool_count=4, pool_side=40)
    images, masks, jitter = gan_batch(0, 7, 3, photos, pool, config)
    assert images.shape == (3, 32, 32, 3) and masks.shape == (3, 32, 32) and jitter.shape == (3, 10)
    # Batch 7 is the same whatever was drawn before it.
    gan_batch(0, 6, 3, photos, pool, config)
    again = gan_batch(0, 7, 3, photos, pool, config)
    assert all(np.array_equal(a, b) for a, b in zip((images, masks, jitter), again))
    assert not np.array_equal(images, gan_batch(1, 7, 3, photos, pool, config)[0])


def test_device_colour_jitter_matches_the_numpy_one():
    image = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    for seed in range(20):
        expected = colour_jitter(np.random.default_rng(seed), image)
        params = torch.from_numpy(draw_jitter(np.random.default_rng(seed)))[None]
        got = apply_colour_jitter(torch.from_numpy(image.transpose(2, 0, 1))[None], params)[0]
        got = got.numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(got, expected, atol=2e-5)


# ---------------------------------------------------------------------------------------------------------
# The training job

TINY_JOB = ["--batch", "2", "--crop", "32", "--pool-count", "4", "--heldout-size", "32", "--heldout-procedural", "1",
            "--stem-width", "8", "--down-widths", "16,32", "--blocks", "1", "--d-widths", "16,32,64",
            "--threads", "1", "--warmup", "2", "--log-every", "2", "--eval-every", "2", "--r1-every", "2"]


def test_training_job_resumes_to_the_same_weights(tmp_path):
    from rtb_train.lama_gan import main

    def run(output: Path, checkpoints: Path) -> dict[str, torch.Tensor]:
        argv = ["--steps", "4", "--seed", "1", "--checkpoint-every", "2",
                "--checkpoint-dir", str(checkpoints), "--output", str(output)]
        assert main(argv + TINY_JOB) == 0
        return load_file(str(output))

    straight = run(tmp_path / "straight.safetensors", tmp_path / "ckpt-a")
    # An interrupted run: the checkpoint of step 4 is lost, the rerun resumes from step 2.
    run(tmp_path / "first.safetensors", tmp_path / "ckpt-b")
    (tmp_path / "ckpt-b" / "step-00000004.pt").unlink()
    resumed = run(tmp_path / "resumed.safetensors", tmp_path / "ckpt-b")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)

    record = json.loads((tmp_path / "resumed.json").read_text())
    assert record["arch"] == "lama-gan" and record["steps_done"] == 4 and record["complete"]
    assert record["command"].startswith("python -m rtb_train.lama_gan --steps 4")
    assert [s["steps"] for s in record["sessions"]] == [[0, 2], [2, 4]]
    assert record["wall_seconds"] > 0 and "CPU" in record["device"]
    loaded = load_inpainter(tmp_path / "resumed.safetensors", device="cpu")
    assert loaded.name == "reference-gan" and loaded.fingerprint == fingerprint(tmp_path / "resumed.safetensors")
    x = torch.rand(1, 3, 32, 32)
    m = holes(1, 32)
    out = loaded.edit(x, m)
    assert torch.equal(out * (1 - m), x * (1 - m))
