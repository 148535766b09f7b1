"""The attacker's DreamBooth on a tiny random SD-format model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rtb.personalization.dreambooth import DreamBoothConfig, dreambooth, prepare_dreambooth
from tests.fixtures.tiny_t2i import domain_subject

pytestmark = pytest.mark.usefixtures("one_thread")

# A recipe scaled to the tiny model: few steps, a large learning rate, few class pictures sampled briefly.
TINY_RECIPE = DreamBoothConfig(steps=25, lr=2e-3, class_images=4, class_sample_steps=2, class_guidance=2.0)


@pytest.fixture(scope="module")
def subject_images():
    return domain_subject("alice", "fish", count=3).tensor(32)


def test_dreambooth_lowers_the_instance_loss_and_leaves_the_attacked_model_alone(components, subject_images):
    before = [p.clone() for p in components.unet.parameters()]
    out = dreambooth(components, subject_images, "fish", TINY_RECIPE)
    assert len(out.losses) == TINY_RECIPE.steps
    assert out.loss_after < 0.9 * out.loss_before
    assert all(torch.equal(a, b) for a, b in zip(before, components.unet.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, out.components.unet.parameters()))


def test_dreambooth_is_a_function_of_its_seed(components, subject_images):
    config = replace(TINY_RECIPE, steps=3)
    first = dreambooth(components, subject_images, "fish", config).components.unet.state_dict()
    again = dreambooth(components, subject_images, "fish", config).components.unet.state_dict()
    other = dreambooth(components, subject_images, "fish", replace(config, seed=1)).components.unet.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_prior_preservation_draws_class_pictures_from_the_attacked_model(components, subject_images):
    data = prepare_dreambooth(components, subject_images, "fish", TINY_RECIPE)
    assert data.class_images.shape == (TINY_RECIPE.class_images, 3, 32, 32)
    assert data.prior[0].shape == (TINY_RECIPE.class_images, 4, 8, 8)
    assert components.tokenizer.decode(data.instance_ids[0], skip_special_tokens=True) == "a photo of sks fish"
    assert components.tokenizer.decode(data.class_ids[0], skip_special_tokens=True) == "a photo of fish"
    without = prepare_dreambooth(components, subject_images, "fish", replace(TINY_RECIPE, prior_weight=0.0))
    assert len(without.class_images) == 0 and len(without.prior[0]) == 0


def test_the_text_encoder_is_trained_only_when_asked(components, subject_images):
    config = replace(TINY_RECIPE, steps=2, class_images=2)
    frozen = dreambooth(components, subject_images, "fish", config).components.text_encoder.state_dict()
    trained = dreambooth(components, subject_images, "fish", replace(config, train_text_encoder=True,
                                                                     text_encoder_lr=1e-3)).components
    original = components.text_encoder.state_dict()
    assert all(torch.equal(frozen[k], original[k]) for k in original)
    assert any(not torch.equal(v, original[k]) for k, v in trained.text_encoder.state_dict().items())


@pytest.mark.parametrize("images, word, match", [
    (torch.rand(0, 3, 32, 32), "fish", "N ≥ 1"),
    (torch.rand(2, 32, 32), "fish", "N×3×S×S"),
    (torch.rand(2, 3, 32, 32), " ", "class word"),
])
def test_bad_dreambooth_inputs_are_named(components, images, word, match):
    with pytest.raises(ValueError, match=match):
        prepare_dreambooth(components, images, word, TINY_RECIPE)
