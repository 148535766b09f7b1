"""The optimizer end to end on a real (tiny, random) network loaded through the real loader."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rtb import ProtectConfig, load_inpainter, protect
from rtb.config import PAPER_BUDGET
from rtb.masks import attacker_hole
from rtb.targets import make_targets
from tests.fixtures.catalogs import sample
from tests.fixtures.inpainters import build_tiny_torchscript


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_tiny_torchscript(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="module")
def model(model_path):
    return load_inpainter(model_path, device="cpu")


@pytest.fixture(scope="module")
def model64(model_path):
    return load_inpainter(model_path, device="cpu", dtype=torch.float64)


def png_round_trip(image: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("method", ["rtb", "noise"])
def test_bound_holds_after_8bit_png_round_trip(model, method):
    pairs = [sample(i) for i in range(3)]
    config = ProtectConfig(eps=0.025, steps=5)
    result = protect([p[0] for p in pairs], [p[1] for p in pairs], model=model, method=method, config=config)
    levels = math.ceil(0.025 * 255)
    for (image, _), protected, stats in zip(pairs, result.images, result.stats):
        diff = np.abs(png_round_trip(protected).astype(int) - np.asarray(image).astype(int))
        assert protected.size == image.size and protected.mode == "RGB"
        assert diff.max() <= levels
        assert diff.max() >= levels - 1  # the budget is actually used
        assert stats.linf == pytest.approx(diff.max() / 255)
        assert stats.psnr > 30 and 0.5 < stats.ssim <= 1


def test_same_inputs_and_seed_give_identical_bytes(model):
    pairs = [sample(i) for i in range(2)]
    config = ProtectConfig(steps=4, seed=7)
    runs = [protect([p[0] for p in pairs], [p[1] for p in pairs], model=model, config=config) for _ in range(2)]
    assert [im.tobytes() for im in runs[0].images] == [im.tobytes() for im in runs[1].images]
    other = protect([p[0] for p in pairs], [p[1] for p in pairs], model=model, config=ProtectConfig(steps=4, seed=8))
    assert other.images[0].tobytes() != runs[0].images[0].tobytes()
    before = torch.random.get_rng_state()
    protect([pairs[0][0]], [pairs[0][1]], model=model, config=config)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is untouched


def test_a_batch_gives_the_same_result_as_each_image_alone(model64):
    pairs = [sample(i) for i in range(3)]
    config = ProtectConfig(steps=6, batch_size=3)
    together = protect([p[0] for p in pairs], [p[1] for p in pairs], model=model64, config=config)
    for (image, mask), batched, batched_stats in zip(pairs, together.images, together.stats):
        alone = protect([image], [mask], model=model64, config=ProtectConfig(steps=6, batch_size=1))
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(batched))
        assert alone.stats[0].loss_implant == pytest.approx(batched_stats.loss_implant, rel=1e-9)


def test_implant_loss_falls_and_hide_stays_below_implant(model):
    image, mask = sample(3, size=(64, 64))
    result = protect([image], [mask], model=model, config=ProtectConfig(steps=20, **PAPER_BUDGET))
    stats = result.stats[0]
    history = np.array(stats.loss_history)
    assert history[-1] < 0.8 * history[0]
    noise = protect([image], [mask], model=model, method="noise").stats[0]
    assert stats.loss_implant < 0.8 * noise.loss_implant
    assert stats.loss_hide < stats.loss_implant


def attacker_hole_loss(model, pairs, protected, draws=16):
    """Mean MSE to the primary target over attacker-like holes drawn from a generator the run never used."""
    losses = []
    for (image, mask), output in zip(pairs, protected):
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
        x_protected = torch.from_numpy(np.asarray(output).copy()).permute(2, 0, 1)[None].float() / 255
        m = torch.from_numpy(mask)[None, None].float()
        target = make_targets(x, "primary")
        generator = torch.Generator().manual_seed(123)
        for _ in range(draws):
            hole = attacker_hole(m, generator)
            with torch.no_grad():
                edit = model.surrogate(x_protected, hole)
            losses.append(float(((edit - target) ** 2 * hole).sum() / (hole.sum() * 3)))
    return float(np.mean(losses))


def test_mask_augmentation_steers_attacker_holes_and_keeps_batches_independent(model, model64):
    pairs = [sample(i, size=(64, 64)) for i in range(4)]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    plain = protect(images, masks, model=model, config=ProtectConfig(steps=20, **PAPER_BUDGET))
    augmented = protect(images, masks, model=model, config=ProtectConfig(steps=20, augment_holes=4, **PAPER_BUDGET))
    # Holes an attacker paints (jittered, boxed, partial) end nearer the target than without augmentation.
    assert attacker_hole_loss(model, pairs, augmented.images) < 0.98 * attacker_hole_loss(model, pairs, plain.images)
    # The augmented holes come from each image's own generator: a batch equals each image alone.
    config = ProtectConfig(steps=3, augment_holes=2, batch_size=2)
    together = protect(images[:2], masks[:2], model=model64, config=config)
    for image, mask, batched in zip(images, masks, together.images):
        alone = protect([image], [mask], model=model64, config=ProtectConfig(steps=3, augment_holes=2, batch_size=1))
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(batched))
    with pytest.raises(ValueError, match="augment_holes must be an integer in \\[0, 16\\], got -1"):
        ProtectConfig(augment_holes=-1)


def test_any_size_and_rgba_alpha_untouched(model):
    image, mask = sample(5, size=(37, 53), mode="RGBA")
    result = protect([image], [mask], model=model, config=ProtectConfig(steps=2))
    protected = result.images[0]
    assert protected.mode == "RGBA" and protected.size == image.size
    assert np.array_equal(np.asarray(protected)[..., 3], np.asarray(image)[..., 3])


def test_downscaled_working_resolution_maps_back_within_the_bound(model):
    image, mask = sample(6, size=(90, 120))
    result = protect([image], [mask], model=model, config=ProtectConfig(steps=3, max_side=48))
    diff = np.abs(np.asarray(result.images[0]).astype(int) - np.asarray(image).astype(int))
    assert result.images[0].size == (120, 90)
    assert 0 < diff.max() <= math.ceil(0.025 * 255)


def test_targets_and_custom_target(model):
    image, mask = sample(1)
    for target in ("gray", "invert"):
        assert protect([image], [mask], model=model, config=ProtectConfig(steps=1, target=target)).images
    custom = Image.new("RGB", (10, 10), (255, 0, 255))
    result = protect([image], [mask], model=model, config=ProtectConfig(steps=1, target="custom"), targets=[custom])
    assert result.images[0].size == image.size
    with pytest.raises(ValueError, match="one target image per image"):
        protect([image], [mask], model=model, config=ProtectConfig(steps=1, target="custom"))


def encoded(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda img, m: ([img], [np.zeros_like(m)]), "mask is empty"),
        (lambda img, m: ([img], [np.ones_like(m)]), "mask covers 100% of the image"),
        (lambda img, m: ([img], [m[:-4]]), "mask is 40×44 but image is 40×48"),
        (lambda img, m: ([b"\x89PNG garbage"], [m]), "not a decodable image"),
        (lambda img, m: ([encoded(img)], [b"nope"]), "mask bytes are not a decodable image"),
        (lambda img, m: ([img, img], [m]), "2 images but 1 masks"),
    ],
)
def test_bad_input_names_the_value(model, make, message):
    image, mask = sample(0)
    images, masks = make(image, mask)
    with pytest.raises(ValueError, match=message):
        protect(images, masks, model=model, config=ProtectConfig(steps=1))


def test_bad_settings_are_refused(model):
    image, mask = sample(0)
    with pytest.raises(ValueError, match="eps 0.5 is out of range"):
        protect([image], [mask], model=model, config=ProtectConfig(eps=0.5))
    with pytest.raises(ValueError, match="eps must be positive"):
        ProtectConfig(eps=-0.1)
    with pytest.raises(ValueError, match="unknown method 'glaze'"):
        protect([image], [mask], model=model, method="glaze")
    with pytest.raises(ValueError, match="needs a diffusers model with a VAE; got 'torchscript:"):
        protect([image], [mask], model=model, method="photoguard-encoder")
    with pytest.raises(ValueError, match="model must be 'reference'"):
        protect([image], [mask], model=123)


EOT = "jpeg:60-95,resize:0.5-1.0,blur:0.5-1.0,none"


@pytest.mark.usefixtures("one_thread")
def test_eot_keeps_the_bound_determinism_and_batch_independence(model, model64):
    pairs = [sample(i) for i in range(3)]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    config = ProtectConfig(eps=0.025, steps=6, eot=EOT, batch_size=3)
    # 1. The L∞ bound holds on the 8-bit PNG (the transformations act inside the loss only).
    result = protect(images, masks, model=model, config=config)
    for image, protected in zip(images, result.images):
        diff = np.abs(png_round_trip(protected).astype(int) - np.asarray(image).astype(int))
        assert math.ceil(0.025 * 255) - 1 <= diff.max() <= math.ceil(0.025 * 255)
    # 2. Same inputs and seed: same bytes, global RNG untouched; EOT changes the result.
    before = torch.random.get_rng_state()
    again = protect(images, masks, model=model, config=config)
    assert torch.equal(before, torch.random.get_rng_state())
    assert [im.tobytes() for im in again.images] == [im.tobytes() for im in result.images]
    plain = protect(images, masks, model=model, config=ProtectConfig(eps=0.025, steps=6, batch_size=3))
    assert plain.images[0].tobytes() != result.images[0].tobytes()
    # 3. Each sample's transformation comes from its own generator: a batch equals each image alone.
    together = protect(images, masks, model=model64, config=config)
    for image, mask, batched in zip(images, masks, together.images):
        alone = protect([image], [mask], model=model64, config=ProtectConfig(eps=0.025, steps=6, eot=EOT, batch_size=1))
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(batched))


def test_eot_is_parsed_validated_and_part_of_the_config_hash():
    from rtb import config_hash
    from rtb.transforms import Transform

    config = ProtectConfig(eot="jpeg:60-95, resize:0.5-1.0")
    assert config.eot == (Transform("jpeg", 60.0, 95.0), Transform("resize", 0.5, 1.0))
    assert ProtectConfig(eot=list(config.eot)) == config
    assert ProtectConfig(eot=dataclasses_asdict(config)["eot"]) == config  # a config read back from JSON
    assert config_hash(config, "rtb") != config_hash(ProtectConfig(), "rtb")
    assert config_hash(config, "rtb") != config_hash(ProtectConfig(eot="jpeg:60-90,resize:0.5-1.0"), "rtb")
    assert config_hash(ProtectConfig(eot=""), "rtb") == config_hash(ProtectConfig(), "rtb")
    with pytest.raises(ValueError, match="eot transform 'webp:80': webp has no differentiable version"):
        ProtectConfig(eot="webp:80")
    with pytest.raises(ValueError, match="unknown transform 'crop:0.5'"):
        ProtectConfig(eot="jpeg:70,crop:0.5")


def dataclasses_asdict(config):
    import dataclasses

    return dataclasses.asdict(config)


def test_imperceptibility_stats_and_guarantees_under_jnd_and_luma_chroma(model, model64):
    import dataclasses

    from rtb import metrics
    from rtb.images import to_tensor

    pairs = [sample(i) for i in range(3)]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    images[1] = images[1].convert("L")  # a grey source
    config = ProtectConfig(steps=4, seed=3, budget="jnd", colour="luma-chroma", chroma_ratio=0.25, batch_size=3)
    # 1. Same inputs and seed: same bytes; the global RNG untouched; a batch equals each image alone (float64).
    before = torch.random.get_rng_state()
    first = protect(images, masks, model=model, config=config)
    assert torch.equal(before, torch.random.get_rng_state())
    again = protect(images, masks, model=model, config=config)
    assert [im.tobytes() for im in first.images] == [im.tobytes() for im in again.images]
    together = protect(images, masks, model=model64, config=config)
    for image, mask, batched in zip(images, masks, together.images):
        alone = protect([image], [mask], model=model64, config=dataclasses.replace(config, batch_size=1))
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(batched))
    # 2. The new ImageStats fields are the metrics core's figures on the 8-bit output.
    for image, protected, stats in zip(images, first.images, first.stats):
        source = to_tensor(image.convert("RGB"))[None]
        output = to_tensor(protected)[None]
        mean, p95, above = metrics.delta_e00_stats(output, source)
        assert (stats.delta_e_mean, stats.delta_e_p95, stats.delta_e_above_jnd) == (
            pytest.approx(float(mean[0])), pytest.approx(float(p95[0])), pytest.approx(float(above[0])))
        assert 0 < stats.delta_e_mean < stats.delta_e_p95 and 3 / 255 <= stats.bound_mean < 0.025
    assert [s.source_grey for s in first.stats] == [False, True, False]
    assert [s.grey_preserved for s in first.stats] == [None, True, None]
    # 3. The paper's settings keep the old figures: ε everywhere.
    paper = protect(images[:1], masks[:1], model=model, config=ProtectConfig(steps=2, **PAPER_BUDGET))
    assert paper.stats[0].bound_mean == pytest.approx(0.025) and paper.stats[0].grey_preserved is None


def test_budget_settings_are_validated_and_enter_the_config_hash_only_when_not_the_papers():
    import dataclasses
    import hashlib
    import json

    from rtb import config_hash

    with pytest.raises(ValueError, match="budget must be one of uniform, jnd; got 'JND'"):
        ProtectConfig(budget="JND")
    with pytest.raises(ValueError, match="colour must be one of rgb, luma-chroma; got 'ycbcr'"):
        ProtectConfig(colour="ycbcr")
    paper = ProtectConfig(budget="uniform", colour="rgb")
    # At the paper's values the payload is the one from before the fields existed, so the hash is unchanged.
    payload = {"method": "rtb", **dataclasses.asdict(paper)}
    for name in ("eot", "budget", "colour", "chroma_ratio"):
        payload.pop(name)
    old = hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()
    assert config_hash(paper, "rtb") == old
    others = [dataclasses.replace(paper, budget="jnd"), dataclasses.replace(paper, colour="luma-chroma"),
              dataclasses.replace(paper, budget="jnd", colour="luma-chroma"),
              dataclasses.replace(paper, budget="jnd", colour="luma-chroma", chroma_ratio=0.0)]
    assert len({config_hash(c, "rtb") for c in [paper, *others]}) == 5
