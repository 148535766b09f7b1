"""The shipped stand-in text-to-image model draws what its prompt names — the quality it was chosen by — also
when a rare word stands before the class word, as in DreamBooth's "a photo of sks fish"."""

from __future__ import annotations

import pytest

from rtb.personalization.components import generate, load_components
from rtb.personalization.measures import class_rate, recognise
from rtb_train.standin_t2i import domain

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def standin():
    return load_components("standin")


@pytest.mark.parametrize("word", ["", "sks"])
def test_the_stand_in_draws_the_class_its_prompt_names(standin, recogniser, word):
    prompts = [domain.caption(cls, "grass", with_scene=False, attributes=word) for cls in domain.CLASSES]
    classes = [cls for cls in domain.CLASSES for _ in range(2)]
    pictures = generate(standin, [p for p in prompts for _ in range(2)], list(range(len(classes))), 25, 4.0)
    assert class_rate(recogniser, pictures, classes) >= 0.75, [r["class"] for r in recognise(recogniser, pictures)]
