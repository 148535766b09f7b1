import torch

from rtb.masks import attacker_hole, bbox_mask, dilate, erode, half, mask_fraction, ring


def point(size=41, at=(20, 20)):
    m = torch.zeros(1, 1, size, size)
    m[0, 0, at[0], at[1]] = 1
    return m


def test_dilation_is_a_17_box():
    d = dilate(point(), 17)
    ys, xs = torch.nonzero(d[0, 0], as_tuple=True)
    assert d.sum() == 17 * 17
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (12, 28, 12, 28)


def test_ring_is_dilation_minus_region():
    m = torch.zeros(1, 1, 64, 64)
    m[..., 20:30, 25:40] = 1
    r = ring(m, 17)
    assert torch.all((r == 0) | (r == 1))
    assert (r * m).sum() == 0
    assert r.sum() == (10 + 16) * (15 + 16) - 10 * 15


def test_halves_partition_the_region():
    m = torch.zeros(2, 1, 32, 32)
    m[0, 0, 4:20, 6:26] = 1
    m[1, 0, 10:30, 2:12] = 1
    for a, b in (("top", "bottom"), ("left", "right")):
        ha, hb = half(m, a), half(m, b)
        assert torch.equal(ha + hb, m)
        assert torch.allclose(mask_fraction(ha), mask_fraction(hb), atol=2 / 1024)
    diagonal = half(m, "diagonal")
    assert (diagonal <= m).all() and 0.3 < float(diagonal[0].sum() / m[0].sum()) < 0.7
    anti = half(m, "antidiagonal")
    assert not torch.equal(diagonal, anti)


def test_erode_undoes_dilate_on_a_box():
    m = torch.zeros(1, 1, 48, 48)
    m[..., 10:30, 12:40] = 1
    assert torch.equal(erode(dilate(m, 5), 5), m)
    assert erode(m, 5).sum() == (20 - 4) * (28 - 4)


def test_bbox_mask_grows_by_the_margin_and_stays_in_the_image():
    m = torch.zeros(1, 1, 32, 32)
    m[0, 0, 2, 5] = m[0, 0, 9, 20] = 1
    assert bbox_mask(m).sum() == 8 * 16
    grown = bbox_mask(m, 4)
    assert grown.sum() == (2 + 8 + 4) * (4 + 16 + 4)  # clipped at the top edge
    assert (grown >= bbox_mask(m)).all()


def test_attacker_holes_cover_the_region_like_an_attacker_and_follow_the_generator():
    m = torch.zeros(1, 1, 64, 64)
    m[..., 20:36, 18:42] = 1
    inner, outer = erode(m, 9), dilate(m, 17)  # inner: M without a 4 px band
    draw = lambda seed: [attacker_hole(m, g) for g in [torch.Generator().manual_seed(seed)] for _ in range(40)]  # noqa: E731
    holes = draw(5)
    kinds = set()
    for hole in holes:
        kinds.add("grown" if bool((hole > m).any()) else "inside" if bool((hole < m).any()) else "exact")
        assert hole.shape == m.shape and torch.all((hole == 0) | (hole == 1))
        assert (hole <= torch.maximum(outer, bbox_mask(m, 8))).all()  # never beyond M+ (or the grown box)
        covered = float((hole * m).sum() / m.sum())
        assert covered >= 0.25 and bool((hole * inner).any())
    assert {"grown", "inside"} <= kinds  # contours moved out (jitter, bbox, partial) and in (jitter)
    assert all(torch.equal(a, b) for a, b in zip(holes, draw(5)))  # the same generator state, the same holes
    assert not all(torch.equal(a, b) for a, b in zip(holes, draw(6)))


def test_attacker_hole_of_an_empty_mask_is_empty():
    m = torch.zeros(1, 1, 16, 16)
    assert torch.equal(attacker_hole(m, torch.Generator().manual_seed(0)), m)
