"""Mask families: shapes, the invariants each family promises, determinism."""

from __future__ import annotations

import pytest
import torch

from rtb.evaluation.masks import (
    FAMILIES, MASK_SETS, MaskSetConfig, brush_mask, elsewhere_mask, family_rng, mask_set, partial_mask,
)
from rtb.masks import dilate, ring


def region(h=64, w=80, box=(20, 30, 36, 50)) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w, dtype=torch.float64)
    top, left, bottom, right = box
    m[..., top:bottom, left:right] = 1
    m[..., top:top + 4, left:left + 4] = 0  # not a plain rectangle
    return m


def by_family(holes):
    out = {}
    for hole in holes:
        out.setdefault(hole.family, []).append(hole)
    return out


def test_every_family_keeps_its_promise():
    m = region()
    plus = dilate(m, 17)
    holes, notes = mask_set(m, "img", seed=3)
    families = by_family(holes)
    assert set(families) == set(FAMILIES) and notes == []
    for hole in holes:
        assert hole.mask.shape == m.shape and set(hole.mask.unique().tolist()) <= {0.0, 1.0}
        assert hole.kind == ("benign" if hole.family in ("ring-half", "elsewhere") else "malicious")
    assert torch.equal(families["exact"][0].mask, m)
    assert torch.equal(families["expanded"][0].mask, plus)
    for hole in families["partial"]:  # exact on one side, M+ on the other: covers M, inside M+, neither
        assert torch.equal(hole.mask * m, m) and torch.equal(hole.mask * plus, hole.mask)
        assert 0 < (hole.mask - m).sum() < (plus - m).sum()
    bbox = families["bbox"][0].mask
    assert torch.equal(bbox * m, m) and bbox.sum() == 16 * 20
    for hole in families["brush"]:
        assert (hole.mask * m).sum() >= 0.8 * m.sum()
    for hole in families["ring-half"]:
        assert (hole.mask * m).sum() == 0 and torch.equal(hole.mask * ring(m, 17), hole.mask)
        assert 0.3 * ring(m, 17).sum() < hole.mask.sum() < 0.7 * ring(m, 17).sum()
    for hole in families["elsewhere"]:
        assert hole.mask.sum() == m.sum() and (hole.mask * plus).sum() == 0
    assert len(families["partial"]) == 3 and len(families["brush"]) == 2


def test_holes_are_deterministic_and_depend_on_seed_and_id():
    m = region()
    a, _ = mask_set(m, "img", seed=1)
    b, _ = mask_set(m, "img", seed=1)
    assert all(torch.equal(x.mask, y.mask) for x, y in zip(a, b))
    c, _ = mask_set(m, "other", seed=1)
    random = [(x, y) for x, y in zip(a, c) if x.family in ("brush", "elsewhere")]
    assert any(not torch.equal(x.mask, y.mask) for x, y in random)


@pytest.mark.parametrize("seed", range(6))
def test_brush_covers_irregular_regions(seed):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(1, 1, 12, 16, generator=g) > 0.4).double()
    m = torch.nn.functional.interpolate(m, size=(72, 96), mode="nearest")
    hole = brush_mask(m, family_rng(seed, "x", "brush", 0))
    assert (hole * m).sum() >= 0.8 * m.sum()


def test_elsewhere_needs_room_and_all_set_has_more_holes():
    m = torch.zeros(1, 1, 48, 48, dtype=torch.float64)
    m[..., 10:38, 10:38] = 1
    assert elsewhere_mask(m, family_rng(0, "x", "elsewhere", 0)) is None
    holes, notes = mask_set(m, "x")
    assert "elsewhere" not in {h.family for h in holes} and len(notes) == 2
    many, _ = mask_set(region(96, 120), "x", config=MASK_SETS["all"])
    assert len(by_family(many)["partial"]) == 6 and len(by_family(many)["ring-half"]) == 4
    assert partial_mask(m, "left").shape == m.shape


def test_bad_inputs_raise_naming_the_value():
    with pytest.raises(ValueError, match="empty"):
        mask_set(torch.zeros(1, 1, 32, 32), "x")
    with pytest.raises(ValueError, match="'nose'"):
        mask_set(region(), "x", families=("nose",))
    with pytest.raises(ValueError, match="partial"):
        MaskSetConfig(partial=9)
