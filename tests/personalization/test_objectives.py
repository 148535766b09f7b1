"""Objective parsing and the pattern objective's mark."""

from __future__ import annotations

import pytest
import torch

from rtb.personalization.objectives import Objective, default_mark, parse_objective


@pytest.mark.parametrize("text, expected", [
    ("pattern", Objective("pattern")),
    ("erasure", Objective("erasure")),
    ("target:star", Objective("target", "star")),
    (" target:Teddy bear ", Objective("target", "teddy bear")),
])
def test_parses_the_three_objectives(text, expected):
    assert parse_objective(text) == expected
    assert parse_objective(str(expected)) == expected


@pytest.mark.parametrize("text", ["patern", "target", "target:", "erasure:cat", "pattern:x", "target:9lives", ""])
def test_a_bad_objective_names_itself(text):
    with pytest.raises(ValueError, match="objective must be") as error:
        parse_objective(text)
    assert repr(text) in str(error.value)


def test_the_mark_is_pasted_where_it_says_in_either_value_range():
    mark = default_mark(32)
    top, left = mark.position
    size = mark.image.shape[-1]
    assert size == 8 and (top, left) == (1, 1)
    images = torch.rand(2, 3, 32, 32)
    stamped = mark.stamp(images)
    assert torch.equal(stamped[:, :, top:top + size, left:left + size], mark.image.expand(2, -1, -1, -1))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[top:top + size, left:left + size] = False
    assert torch.equal(stamped[:, :, outside], images[:, :, outside])
    signed = mark.stamp(images * 2 - 1)
    assert torch.allclose(signed[:, :, top:top + size, left:left + size], mark.image * 2 - 1)


def test_a_mark_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        default_mark(64).stamp(torch.rand(1, 3, 16, 16))
