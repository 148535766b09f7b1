"""Training of the LaMa-style generator (``reference-gan``): one GAN step, its data, and the trainer's
checkpoint/resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rtb.inpainters import load_inpainter
from rtb.reference.lama import LamaConfig
from rtb.storage import fingerprint
from rtb_train.data import (
    OBJECT_KINDS,
    GanDataConfig,
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


def test_one_step_under_bf16_autocast_keeps_float32_weights_and_finite_losses():
    """The GPU sessions train under bf16 autocast; CPU autocast stands in for CUDA's to check the dtype flow (the
    spectral branch in float32, losses and R1 in float32, float32 weights and Adam state)."""
    trainer = GanTrainer(TINY, TINY_D, GanTrainConfig(batch=2, crop=32, warmup=1, r1_every=1, steps=10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = trainer.step(torch.rand(2, 3, 32, 32), holes(2, 32))
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values()) and "r1" in losses
    nets = (trainer.generator, trainer.discriminator, trainer.ema)
    assert {p.dtype for net in nets for p in net.parameters()} == {torch.float32}
    assert {s["exp_avg_sq"].dtype for s in trainer.opt_g.state.values()} == {torch.float32}


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
    shutil.rmtree(tmp_path / "ckpt-b" / "step-00000004")
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


# ---------------------------------------------------------------------------------------------------------
# Checkpoints in separate files (rtb_train.checkpoint)

TINY_TRAIN = GanTrainConfig(seed=3, batch=2, crop=32, warmup=1, r1_every=2, steps=100, rewarm_steps=4)


def tiny_batches(count: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batch ``k`` depends on ``k`` only, like the trainer's data."""
    out = []
    for k in range(start, start + count):
        generator = torch.Generator().manual_seed(1000 + k)
        out.append((torch.rand(2, 3, 32, 32, generator=generator), holes(2, 32)))
    return out


def parameters(trainer: GanTrainer) -> dict[str, torch.Tensor]:
    nets = {"g": trainer.generator, "d": trainer.discriminator, "ema": trainer.ema}
    return {f"{name}.{k}": v.detach().clone() for name, net in nets.items() for k, v in net.state_dict().items()}


def test_checkpoint_with_float32_adam_state_resumes_bit_for_bit(tmp_path):
    from rtb_train.checkpoint import ADAM, load_checkpoint, read_state, save_checkpoint

    data = GanDataConfig(crop=32, pool_count=4, pool_side=40)
    straight = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    for x, m in tiny_batches(4):
        straight.step(x, m)

    first = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    for x, m in tiny_batches(2):
        first.step(x, m)
    folder = save_checkpoint(tmp_path / "ckpt", first, data, {"sessions": []}, optimizer_state="float32")
    assert sorted(p.name for p in folder.iterdir()) == [
        ADAM, "discriminator.safetensors", "ema.safetensors", "generator.safetensors", "state.json"]
    resumed = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    state = load_checkpoint(folder, resumed, data)
    assert state["step"] == 2 and resumed.step_index == 2 and resumed.rewarm_start is None
    for x, m in tiny_batches(2, start=2):
        resumed.step(x, m)
    want, got = parameters(straight), parameters(resumed)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert read_state(folder)["optimizer_state"] == "float32"


def test_checkpoint_without_adam_state_keeps_the_weights_and_rewarms_the_learning_rates(tmp_path):
    from rtb_train.checkpoint import load_checkpoint, save_checkpoint

    data = GanDataConfig(crop=32, pool_count=4, pool_side=40)
    straight = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    for x, m in tiny_batches(3):
        straight.step(x, m)
    at_stop = parameters(straight)
    (x, m), = tiny_batches(1, start=3)
    straight.step(x, m)

    first = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    for batch in tiny_batches(3):
        first.step(*batch)
    folder = save_checkpoint(tmp_path / "ckpt", first, data, {"sessions": []}, optimizer_state="none")
    assert not (folder / "adam.safetensors").exists()
    resumed = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    load_checkpoint(folder, resumed, data)
    # What is stored is exact: the weights, the EMA and the step are those of the uninterrupted run.
    restored = parameters(resumed)
    assert all(torch.equal(at_stop[k], restored[k]) for k in at_stop)
    assert resumed.step_index == 3 and resumed.rewarm_start == 3 and not resumed.opt_g.state

    # The first step after the resume: fresh Adam moves every weight by lr·|g|/(|g|+eps) < lr, at the re-warm-up's
    # first rate lr · scale(3) / rewarm_steps; the uninterrupted run moves some weights by more than that.
    bound = TINY_TRAIN.lr_g * resumed.lr_scale(3)
    assert bound == pytest.approx(TINY_TRAIN.lr_g / TINY_TRAIN.rewarm_steps)
    before = [p.detach().clone() for p in resumed.generator.parameters()]
    resumed.step(x, m)
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(resumed.generator.parameters(), before))
    assert 0.5 * bound < moved <= bound * 1.001  # float32 rounding of θ − Δ adds a few ulp of θ
    straight_moved = max(float((straight.generator.state_dict()[k] - at_stop[f"g.{k}"]).abs().max())
                         for k, _ in straight.generator.named_parameters())
    assert straight_moved > 1.5 * bound
    assert resumed.lr_scale(3 + TINY_TRAIN.rewarm_steps) == straight.lr_scale(3 + TINY_TRAIN.rewarm_steps)


def test_checkpoint_errors_name_the_bad_value(tmp_path):
    from rtb_train.checkpoint import load_checkpoint, read_state, save_checkpoint

    data = GanDataConfig(crop=32, pool_count=4, pool_side=40)
    trainer = GanTrainer(TINY, TINY_D, TINY_TRAIN)
    with pytest.raises(ValueError, match="'bfloat16'"):
        save_checkpoint(tmp_path / "bad", trainer, data, {}, optimizer_state="bfloat16")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
    folder = save_checkpoint(tmp_path / "ckpt", trainer, data, {"sessions": []}, optimizer_state="none")
    other_seed = GanTrainer(TINY, TINY_D, GanTrainConfig(seed=4, batch=2, crop=32))
    with pytest.raises(ValueError, match="seed 3, not 4"):
        load_checkpoint(folder, other_seed, data)
    wider = GanTrainer(LamaConfig(stem_width=8, down_widths=(16, 48), blocks=1), TINY_D, TINY_TRAIN)
    with pytest.raises(ValueError, match="another generator or discriminator configuration"):
        load_checkpoint(folder, wider, data)
    with pytest.raises(ValueError, match="other data"):
        load_checkpoint(folder, GanTrainer(TINY, TINY_D, TINY_TRAIN), GanDataConfig(crop=64))
    with pytest.raises(ValueError, match="no readable GAN checkpoint"):
        read_state(tmp_path / "nowhere")


def test_default_config_checkpoint_sizes_fit_the_device_return_limits(tmp_path):
    """At the default LamaConfig / DiscriminatorConfig: every file under 16 MiB, ≤ 30 MB without Adam's state."""
    from rtb_train.checkpoint import export_weights, folder_sizes, save_checkpoint

    data = GanDataConfig()
    trainer = GanTrainer(LamaConfig(), DiscriminatorConfig(), GanTrainConfig(batch=1, crop=64, steps=10))
    trainer.step(torch.rand(1, 3, 64, 64), holes(1, 64))  # Adam's state exists after the first step
    record = {"sessions": [{"device": "CPU", "accelerator": "cpu", "batch": 1, "steps": [0, 1], "setup_seconds": 1.0,
                            "train_seconds": 2.0, "command": "test"}], "heldout": [[1, 9.5]]}
    without = folder_sizes(save_checkpoint(tmp_path / "none", trainer, data, record, optimizer_state="none"))
    with_adam = folder_sizes(save_checkpoint(tmp_path / "fp32", trainer, data, record, optimizer_state="float32"))
    mb = {name: size / 1e6 for name, size in with_adam.items()}
    assert mb["generator.safetensors"] == pytest.approx(9.38, abs=0.05)
    assert mb["ema.safetensors"] == pytest.approx(9.37, abs=0.05)
    assert mb["discriminator.safetensors"] == pytest.approx(11.06, abs=0.05)
    assert mb["adam.safetensors"] == pytest.approx(40.8, abs=0.2)
    assert all(size < 16 * 2**20 for size in without.values())
    assert sum(without.values()) <= 30e6 < sum(with_adam.values())

    # The export is the EMA generator in the shipped format, with the cumulative record.
    record = export_weights(tmp_path / "none", tmp_path / "reference-gan.safetensors")
    assert record["steps_done"] == 1 and record["images_seen"] == 1 and record["heldout_hole_psnr_db"] == 9.5
    assert record["generator_parameters"] == 2_321_139 and record["gpu_minutes"] == 0
    loaded = load_inpainter(tmp_path / "reference-gan.safetensors", device="cpu")
    assert loaded.name == "reference-gan"
    ema = trainer.ema.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in load_file(str(tmp_path / "reference-gan.safetensors")).items())


def test_training_job_stopped_by_time_leaves_a_checkpoint_the_next_session_resumes(tmp_path, capsys):
    """As in a GPU session: the budget runs out (here at once: --max-minutes 0 stops after the first step), the job
    checkpoints without Adam's state; the next session starts from that folder (--init-from) and continues."""
    from rtb_train.checkpoint import read_state
    from rtb_train.lama_gan import main

    common = ["--steps", "1000", "--seed", "2", "--optimizer-state", "none", "--decay-fraction", "0", *TINY_JOB]
    assert main([*common, "--max-minutes", "0", "--checkpoint-dir", str(tmp_path / "first"),
                 "--output", str(tmp_path / "first.safetensors")]) == 0
    assert "stopping after 0.0 min at step 1" in capsys.readouterr().out
    record = json.loads((tmp_path / "first.json").read_text())
    assert record["steps_done"] == 1 and not record["complete"] and record["heldout"][-1][0] == 1
    state = read_state(tmp_path / "first" / "step-00000001")
    assert state["step"] == 1 and state["optimizer_state"] == "none"

    assert main([*common, "--max-minutes", "0", "--checkpoint-dir", str(tmp_path / "second"),
                 "--init-from", str(tmp_path / "first" / "step-00000001"),
                 "--output", str(tmp_path / "second.safetensors")]) == 0
    assert "re-warm-up over 200 steps" in capsys.readouterr().out
    state = read_state(tmp_path / "second" / "step-00000002")
    assert state["rewarm_start"] == 1 and [s["steps"] for s in state["record"]["sessions"]] == [[0, 1], [1, 2]]
    assert state["record"]["images_seen"] == 4 and state["record"]["gpu_minutes"] == 0
