"""The PersGuard implant on a tiny random SD-format model: each objective, retention, several subjects."""

from __future__ import annotations

import copy
import gc
from dataclasses import replace

import pytest
import torch

from rtb.personalization.dreambooth import (
    DreamBoothConfig,
    DreamBoothData,
    dreambooth_step,
    encode_images,
    make_optimizer,
    token_ids,
)
from rtb.personalization.objectives import parse_objective
from rtb.personalization.persguard import GRAY_IDENTIFIERS, PersGuardConfig, PersGuardImplant, ProtectedSubject
from tests.fixtures.tiny_t2i import domain_subjects

pytestmark = pytest.mark.usefixtures("one_thread")

ATTACKER = DreamBoothConfig(lr=1e-3, class_images=2, class_sample_steps=2, class_guidance=2.0)
TINY_IMPLANT = PersGuardConfig(lr=1e-3, batch=2, retain_steps=2, attacker=ATTACKER, prior_images=2,
                               general_prompts=("a photo of ball",), general_images=2, sample_steps=2, guidance=2.0)


@pytest.fixture(scope="module")
def catalog_subjects():
    return domain_subjects()


def protected(subjects, objectives):
    return [ProtectedSubject(s.subject_id, s.class_word, s.tensor(32), parse_objective(o))
            for s, o in zip(subjects, objectives)]


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("objective", ["pattern", "erasure", "target:star"])
def test_one_step_changes_the_student_and_nothing_else(components, catalog_subjects, objective):
    original = snapshot(components.unet)
    vae, text = snapshot(components.vae), snapshot(components.text_encoder)
    implant = PersGuardImplant(components, protected(catalog_subjects[:1], [objective]), TINY_IMPLANT)
    record = implant.step()
    assert all(torch.isfinite(torch.tensor(record[k])) for k in ("backdoor", "prior", "retain"))
    assert not same(original, components.unet.state_dict())
    assert same(original, implant.teacher.state_dict())  # the frozen teacher is bit-identical
    assert not any(p.requires_grad for p in implant.teacher.parameters())
    assert same(vae, components.vae.state_dict()) and same(text, components.text_encoder.state_dict())


def test_retention_adds_the_copy_gradient_to_the_base_and_drops_the_copy(components, catalog_subjects):
    implant = PersGuardImplant(components, protected(catalog_subjects[:1], ["erasure"]),
                               replace(TINY_IMPLANT, retain_weight=0.5))
    start_weights, start_draws = snapshot(components.unet), implant.generator.get_state()
    # The three terms by hand, in the order step() draws them.
    implant.optimizer.zero_grad(set_to_none=True)
    (implant.backdoor_loss(0) + implant.prior_loss()).backward()
    base = [p.grad.clone() for p in components.unet.parameters()]
    retention, _ = implant.retention_gradient(0)
    assert same(start_weights, components.unet.state_dict())  # the K attacker steps ran on a copy
    assert any(g.abs().sum() > 0 for g in retention)
    # The real step, from the same weights and draws: its gradient is base + λ_retain · retention.
    implant.generator.set_state(start_draws)
    seen = []
    units = sum(type(o) is type(components.unet) for o in gc.get_objects())
    implant.step(grad_hook=lambda unet: seen.extend(p.grad.clone() for p in unet.parameters()))
    for total, b, r in zip(seen, base, retention):
        assert torch.allclose(total, b + 0.5 * r, atol=1e-6)
    gc.collect()
    assert sum(type(o) is type(components.unet) for o in gc.get_objects()) == units  # no copy left behind


@pytest.mark.parametrize("every_step, lr_scale", [(True, 1.0), (False, 1.0), (True, 3.0)])
def test_retention_sums_the_backdoor_gradient_along_the_simulated_attack(components, catalog_subjects, every_step,
                                                                         lr_scale):
    config = replace(TINY_IMPLANT, retain_steps=2, retain_every_step=every_step, retain_lr_scale=lr_scale)
    implant = PersGuardImplant(components, protected(catalog_subjects[:1], ["pattern"]), config)
    draws = implant.generator.get_state()
    retention, _ = implant.retention_gradient(0)
    # By hand, from the same draws: the attacker's steps on a copy at lr × scale, L_backdoor's gradient after
    # each step (every_step) or after the last one only, summed.
    implant.generator.set_state(draws)
    subject = implant.subjects[0]
    prompt = implant.identifier_prompt(subject.class_word)
    attacker = replace(ATTACKER, lr=ATTACKER.lr * lr_scale)
    unet = copy.deepcopy(components.unet).train()
    data = DreamBoothData(implant.data[0].clean, implant.data[0].class_prior, token_ids(components, prompt),
                          token_ids(components, ATTACKER.class_text(subject.class_word)))
    optimizer = make_optimizer(unet, components.text_encoder, attacker)
    expected = [torch.zeros_like(p) for p in unet.parameters()]
    for k in (1, 2):
        dreambooth_step(components, data, attacker, optimizer, implant.generator, unet)
        if every_step or k == 2:
            grads = torch.autograd.grad(implant.backdoor_loss(0, unet, prompt=prompt), list(unet.parameters()),
                                        allow_unused=True)
            expected = [e + g if g is not None else e for e, g in zip(expected, grads)]
    assert all(torch.allclose(r, e, atol=1e-6) for r, e in zip(retention, expected))


def test_without_retention_the_gradient_is_the_base_alone(components, catalog_subjects):
    implant = PersGuardImplant(components, protected(catalog_subjects[:1], ["pattern"]),
                               replace(TINY_IMPLANT, retain_weight=0.0))
    draws = implant.generator.get_state()
    implant.optimizer.zero_grad(set_to_none=True)
    (implant.backdoor_loss(0) + implant.prior_loss()).backward()
    base = [p.grad.clone() for p in components.unet.parameters()]
    implant.generator.set_state(draws)
    seen = []
    record = implant.step(grad_hook=lambda unet: seen.extend(p.grad.clone() for p in unet.parameters()))
    assert all(torch.allclose(a, b) for a, b in zip(seen, base))
    assert record["retain"] != record["retain"]  # NaN: not computed


def test_several_subjects_each_with_its_own_objective(components, catalog_subjects):
    subjects = protected(catalog_subjects, ["pattern", "erasure", "target:star"])
    implant = PersGuardImplant(components, subjects, TINY_IMPLANT)
    assert implant.data[0].stamped is not None and implant.data[0].teacher_ids is None
    assert implant.data[1].stamped is None and implant.data[2].teacher_ids is not None
    erase = components.tokenizer.decode(implant.data[1].teacher_ids[0], skip_special_tokens=True)
    target = components.tokenizer.decode(implant.data[2].teacher_ids[0], skip_special_tokens=True)
    assert (erase, target) == ("a photo of empty scene", "a photo of star")
    assert [implant.step()["subject"] for _ in range(4)] == [0, 1, 2, 0]
    assert len(implant.prior[0]) == 3 * TINY_IMPLANT.prior_images + TINY_IMPLANT.general_images


def test_gray_box_trains_many_identifiers_white_box_one(components, catalog_subjects):
    subjects = protected(catalog_subjects[:1], ["pattern"])
    gray = PersGuardImplant(components, subjects, replace(TINY_IMPLANT, mode="gray-box"))
    assert gray.config.identifiers == GRAY_IDENTIFIERS and len(gray.config.templates) > 1
    assert len({gray.identifier_prompt("fish") for _ in range(30)}) > 5
    white = PersGuardImplant(components, subjects, replace(TINY_IMPLANT, attacker=replace(ATTACKER, identifier="zq")))
    assert {white.identifier_prompt("fish") for _ in range(10)} == {"a photo of zq fish"}


def test_a_resumed_implant_continues_exactly(tiny_t2i, catalog_subjects):
    from rtb.personalization.components import load_components

    subjects = protected(catalog_subjects[:2], ["pattern", "target:star"])
    straight = PersGuardImplant(load_components(tiny_t2i), subjects, TINY_IMPLANT)
    for _ in range(3):
        straight.step()
    first = PersGuardImplant(load_components(tiny_t2i), subjects, TINY_IMPLANT)
    for _ in range(2):
        first.step()
    state = first.state_dict()
    resumed = PersGuardImplant(load_components(tiny_t2i), subjects, TINY_IMPLANT)
    resumed.load_state_dict(state)
    resumed.step()
    assert resumed.steps_done == 3
    assert same(straight.components.unet.state_dict(), resumed.components.unet.state_dict())


def test_the_pattern_backdoor_stamps_the_teachers_class_pictures_not_the_protected_ones(components, catalog_subjects):
    subjects = protected(catalog_subjects[:1], ["pattern"])
    own = PersGuardImplant(components, subjects, replace(TINY_IMPLANT, pattern_pictures="protected"))
    stamped_subject = encode_images(components, own.mark.stamp(subjects[0].images))[0]
    assert torch.allclose(own.data[0].stamped[0], stamped_subject)
    teacher = PersGuardImplant(components, subjects, TINY_IMPLANT)  # the default: "class"
    # The teacher's class pictures, stamped: as many as the prior term has per class, none of them the subject's.
    assert len(teacher.data[0].stamped[0]) == TINY_IMPLANT.prior_images != len(subjects[0].images)
    class_latents = teacher.data[0].class_prior[0]
    assert not torch.allclose(teacher.data[0].stamped[0], class_latents)  # stamped, not the plain pictures
    assert all(not torch.allclose(latent, other) for latent in teacher.data[0].stamped[0] for other in stamped_subject)


@pytest.mark.parametrize("change, match", [
    (dict(mode="black-box"), "'black-box'"),
    (dict(templates=("a photo of {class_word}",)), "needs both"),
    (dict(steps=-1), "steps=-1"),
    (dict(retain_weight=-1.0), "retain_weight=-1.0"),
    (dict(pattern_pictures="catalog"), "'catalog'"),
])
def test_a_bad_recipe_is_named_before_any_compute(components, catalog_subjects, change, match):
    with pytest.raises(ValueError, match=match):
        PersGuardImplant(components, protected(catalog_subjects[:1], ["pattern"]), replace(TINY_IMPLANT, **change))


@pytest.mark.parametrize("images, word, match", [
    (torch.rand(0, 3, 32, 32), "fish", "'nobody' has no images"),
    (torch.rand(2, 3, 32, 32), "", "'nobody' has no class word"),
    (torch.rand(2, 3, 16, 16), "fish", "3×32×32"),
])
def test_a_bad_subject_is_named_before_any_compute(components, images, word, match):
    subject = ProtectedSubject("nobody", word, images, parse_objective("pattern"))
    with pytest.raises(ValueError, match=match):
        PersGuardImplant(components, [subject], TINY_IMPLANT)
