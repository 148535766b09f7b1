"""The diffusers SD-inpainting backend on a tiny random pipeline (real networks, CPU, local files only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from rtb.inpainters import Inpainter, load_inpainter
from rtb.inpainters.diffusers_inpaint import SURROGATES, load_diffusers
from rtb.storage import fingerprint
from tests.fixtures.tiny_diffusers import TINY_SIZE, build_tiny_inpaint_pipeline
from tests.fixtures.tiny_diffusers import tiny_batch, tiny_generators

SIZE = TINY_SIZE


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny") / "sd-inpaint")


@pytest.fixture(scope="module")
def inpainters(tiny_dir):
    """One loaded backend per surrogate, shared by the module (loading is the slow part)."""
    return {mode: load_diffusers(tiny_dir, surrogate=mode, unroll_steps=2) for mode in SURROGATES}



def test_loads_frozen_with_contract_attributes(tiny_dir, inpainters):
    inp = inpainters["latent-x0"]
    assert isinstance(inp, Inpainter)
    assert inp.has_vae and inp.size_multiple == 8 and inp.native_size == SIZE
    assert inp.device == torch.device("cpu") and inp.dtype == torch.float32
    assert inp.fingerprint == fingerprint(tiny_dir)
    assert inp.name == f"diffusers:{tiny_dir}"
    for module in (inp.pipe.unet, inp.pipe.vae, inp.pipe.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_fingerprint_is_stable_across_copies(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "elsewhere")
    assert load_diffusers(copy).fingerprint == fingerprint(tiny_dir)
    assert fingerprint(copy) == fingerprint(tiny_dir)


def test_load_inpainter_from_s3(tiny_dir, s3_bucket, tmp_path):
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    fs.put(str(tiny_dir), f"{bucket}/models/tiny", recursive=True)
    uri = f"s3://{bucket}/models/tiny"
    inp = load_inpainter(uri, cache_dir=tmp_path / "cache", storage_options=options, surrogate="pixel-x0")
    assert inp.fingerprint == fingerprint(tiny_dir)
    assert inp.name == f"diffusers:{uri}" and inp.surrogate_mode == "pixel-x0"
    x, m = tiny_batch(1)
    assert inp.surrogate(x, m, inp.sample_noise(tiny_generators([0]), SIZE, SIZE)).shape == x.shape


def test_sample_noise_is_per_sample(inpainters):
    inp = inpainters["latent-x0"]
    both = inp.sample_noise(tiny_generators([3, 4]), SIZE, SIZE)
    alone = inp.sample_noise(tiny_generators([4]), SIZE, SIZE)
    assert both["noise"].shape == (2, 4, SIZE // 8, SIZE // 8) and both["timestep"].shape == (2,)
    assert torch.equal(both["noise"][1:], alone["noise"]) and torch.equal(both["timestep"][1:], alone["timestep"])


@pytest.mark.parametrize("mode", SURROGATES)
def test_surrogate_gradient_flows_through_context_only(inpainters, mode):
    inp = inpainters[mode]
    x, m = tiny_batch()
    x.requires_grad_(True)
    out = inp.surrogate(x, m, inp.sample_noise(tiny_generators([0, 1]), SIZE, SIZE))
    assert out.shape == (inp.to_loss_space(x.detach()).shape)
    assert out.shape[-2:] == inp.mask_to_loss_space(m).shape[-2:]
    # A loss on the fill only, as the optimizer uses it.
    (out * inp.mask_to_loss_space(m)).pow(2).sum().backward()
    grad = x.grad
    assert grad[m.expand_as(grad) == 0].abs().sum() > 0
    # The masked image is x·(1 − m): the pixels inside the hole never reach the model.
    assert grad[m.expand_as(grad) == 1].abs().max() == 0


@pytest.mark.parametrize("mode", ["pixel-x0", "unrolled"])
def test_pixel_surrogates_are_composited(inpainters, mode):
    inp = inpainters[mode]
    x, m = tiny_batch()
    with torch.no_grad():
        out = inp.surrogate(x, m, inp.sample_noise(tiny_generators([0, 1]), SIZE, SIZE))
    assert torch.equal(out * (1 - m), x * (1 - m))
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out * m, x * m)


def test_latent_surrogate_outside_hole_is_the_context_latent(inpainters):
    inp = inpainters["latent-x0"]
    x, m = tiny_batch()
    with torch.no_grad():
        out = inp.surrogate(x, m, inp.sample_noise(tiny_generators([0, 1]), SIZE, SIZE))
        context = inp.encode_latents(x * (1 - m) + 0.5 * m)
    outside = inp.mask_to_loss_space(m).expand_as(out) == 0
    torch.testing.assert_close(out[outside], context[outside], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", SURROGATES)
def test_batch_equals_each_image_alone(inpainters, mode):
    inp = inpainters[mode]
    x, m = tiny_batch(2, seed=5)
    m[1, :, :16] = 0  # different holes per image
    with torch.no_grad():
        both = inp.surrogate(x, m, inp.sample_noise(tiny_generators([10, 11]), SIZE, SIZE))
        second = inp.surrogate(x[1:], m[1:], inp.sample_noise(tiny_generators([11]), SIZE, SIZE))
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-4)


def test_edit_is_seeded_and_composited(inpainters):
    inp = inpainters["latent-x0"]
    x, m = tiny_batch(2)
    first = inp.edit(x, m, steps=2, seed=7)
    again = inp.edit(x, m, steps=2, seed=7)
    other = inp.edit(x, m, steps=2, seed=8)
    alone = inp.edit(x[1:], m[1:], steps=2, seed=7)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    torch.testing.assert_close(first[1:], alone, atol=1e-5, rtol=1e-4)
    assert torch.equal(first * (1 - m), x * (1 - m))
    assert first.min() >= 0 and first.max() <= 1


def test_pickled_weights_are_refused(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    copy = Path(shutil.copytree(tiny_dir, tmp_path / "pickled"))
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), copy / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match="unet.*safetensors"):
        load_diffusers(copy)


def test_bad_inputs_raise_naming_the_value(tiny_dir, inpainters, tmp_path):
    inp = inpainters["latent-x0"]
    x, m = tiny_batch(2)
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        inp.surrogate(x, m[:1])
    with pytest.raises(ValueError, match="30×30"):
        inp.surrogate(x[..., :30, :30], m[..., :30, :30])
    with pytest.raises(ValueError, match="'x-pred'"):
        load_diffusers(tiny_dir, surrogate="x-pred")
    with pytest.raises(ValueError, match="model_index.json"):
        load_diffusers(tmp_path)
    index = Path(shutil.copytree(tiny_dir, tmp_path / "t2i")) / "model_index.json"
    index.write_text(index.read_text().replace("StableDiffusionInpaintPipeline", "StableDiffusionPipeline"))
    with pytest.raises(ValueError, match="'StableDiffusionPipeline'"):
        load_diffusers(index.parent)


def test_sdxl_inpainting_pipeline_best_effort(tmp_path):
    from tests.fixtures.tiny_diffusers import build_tiny_sdxl_inpaint_pipeline

    path = build_tiny_sdxl_inpaint_pipeline(tmp_path / "sdxl-inpaint")
    x, m = tiny_batch(2)
    for mode in SURROGATES:
        inp = load_diffusers(path, surrogate=mode, unroll_steps=2)
        assert inp.is_xl and inp.native_size == SIZE
        images = x.clone().requires_grad_(True)
        out = inp.surrogate(images, m, inp.sample_noise(tiny_generators([0, 1]), SIZE, SIZE))
        (out * inp.mask_to_loss_space(m)).pow(2).sum().backward()
        assert images.grad[m.expand_as(x) == 0].abs().sum() > 0
        assert images.grad[m.expand_as(x) == 1].abs().max() == 0
    edited = inp.edit(x, m, steps=2, seed=1)
    assert torch.equal(edited, inp.edit(x, m, steps=2, seed=1))
    assert torch.equal(edited * (1 - m), x * (1 - m))
