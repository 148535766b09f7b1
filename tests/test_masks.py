import torch

from rtb.masks import dilate, half, mask_fraction, ring


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
