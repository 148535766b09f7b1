"""Loading, checking, saving and sampling an SD-format text-to-image model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rtb.personalization.components import check_sd_format, generate, load_components, save_components

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loads_and_generates_deterministically_from_a_seed(components):
    images = generate(components, ["a photo of fish", "a photo of fish", "a photo of tree"], [3, 3, 4], steps=3)
    assert images.shape == (3, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images[0], images[1], atol=1e-5)  # same seed, same prompt (batch rounding aside)
    assert not torch.equal(images[0], images[2])


def test_save_then_load_gives_the_same_networks(components, tmp_path):
    with torch.no_grad():
        for parameter in components.unet.parameters():
            parameter.add_(0.01)
    again = load_components(save_components(components, tmp_path / "copy"))
    for a, b in zip(components.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(a, b)


def _broken_copy(tiny_t2i, tmp_path, how):
    path = tmp_path / "broken"
    shutil.copytree(tiny_t2i, path)
    if how == "no index":
        (path / "model_index.json").unlink()
    elif how == "no vae":
        shutil.rmtree(path / "vae")
    elif how == "inpainting unet":
        config = json.loads((path / "unet" / "config.json").read_text())
        (path / "unet" / "config.json").write_text(json.dumps(config | {"in_channels": 9}))
    elif how == "pickled weights":
        for file in (path / "unet").glob("*.safetensors"):
            file.rename(file.with_suffix(".bin"))
    return path


@pytest.mark.parametrize("how", ["no index", "no vae", "inpainting unet", "pickled weights"])
def test_a_directory_that_is_not_sd_format_is_named(tiny_t2i, tmp_path, how):
    path = _broken_copy(tiny_t2i, tmp_path, how)
    with pytest.raises(ValueError, match="not SD-format") as error:
        check_sd_format(path)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="not SD-format"):
        load_components(path)


def test_a_missing_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as error:
        load_components(tmp_path / "nowhere")
    assert "nowhere" in str(error.value)
