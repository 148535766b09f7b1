"""Expectation over transformation on the tiny sensitive network: what JPEG and resizing take away, and what
EOT gives back (the real codecs of the evaluation, measured with the evaluation's own code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtb import ProtectConfig, load_inpainter, protect
from rtb.config import PAPER_BUDGET
from rtb.evaluation.edits import EditConfig, evaluate_image
from rtb.images import to_tensor
from tests.fixtures.catalogs import sample
from tests.fixtures.inpainters import build_tiny_torchscript

pytestmark = pytest.mark.usefixtures("one_thread")

TRANSFORMS = ("none", "jpeg:75", "resize:0.5")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_inpainter(build_tiny_torchscript(tmp_path_factory.mktemp("models") / "tiny.pt"), device="cpu")


def exact_hole(model, pairs, protected) -> dict[str, tuple[float, float]]:
    """Per transform: mean over images of the exact hole's (hole-SSIM vs the clean edit, target distance),
    both images through the same real codec before the edit."""
    out = {}
    for transform in TRANSFORMS:
        values = []
        for (image, mask), output in zip(pairs, protected):
            result = evaluate_image(model, "x", to_tensor(image), torch.from_numpy(mask), {"protected": to_tensor(output)},
                                    EditConfig(families=("exact",)), transform=transform)
            (row,) = result.rows
            assert row["transform"] == transform
            values.append((row["hole_ssim"], row["target_distance"]))
        out[transform] = tuple(np.mean(values, axis=0))
    return out


def test_jpeg_and_resizing_weaken_rtb_and_eot_restores_part_of_it(model):
    pairs = [sample(i, size=(64, 64)) for i in range(4)]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    plain = exact_hole(model, pairs, protect(images, masks, model=model, config=ProtectConfig(steps=20, **PAPER_BUDGET)).images)
    eot = exact_hole(model, pairs, protect(images, masks, model=model,
                                           config=ProtectConfig(steps=20, eot="jpeg:60-95,resize:0.5-1.0", **PAPER_BUDGET)).images)
    # Measured (tiny gain-4 net, 4 images): hole-SSIM without EOT none 0.68, jpeg:75 0.95, resize:0.5 0.99;
    # with EOT jpeg:75 0.86, resize:0.5 0.93.
    # 1. Without EOT the codecs take most of the effect away: the edit returns towards the clean edit.
    assert plain["jpeg:75"][0] > plain["none"][0] + 0.15
    assert plain["resize:0.5"][0] > plain["none"][0] + 0.15
    # 2. With EOT over matching ranges the effect holds better after each: lower hole-SSIM, nearer the target.
    assert eot["jpeg:75"][0] < plain["jpeg:75"][0] - 0.04
    assert eot["resize:0.5"][0] < plain["resize:0.5"][0] - 0.025
    assert eot["jpeg:75"][1] < plain["jpeg:75"][1] - 0.02
    assert eot["resize:0.5"][1] < plain["resize:0.5"][1] - 0.01
    # 3. The price: on the untransformed image EOT's effect is smaller than the plain optimiser's.
    assert plain["none"][0] < eot["none"][0]


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    return load_inpainter(build_tiny_torchscript(tmp_path_factory.mktemp("models64") / "tiny.pt"), device="cpu",
                          dtype=torch.float64)


def test_rtb_under_jnd_and_luma_chroma_respects_the_budget_steers_and_keeps_batches_independent(model64):
    from rtb.budget import budget_map
    from rtb.colour import luma_chroma_from_rgb
    from rtb.methods import noise, rtb

    x = torch.stack([to_tensor(sample(i)[0]) for i in range(3)])
    x[1] = x[1, :1]  # an exactly grey image
    m = torch.stack([torch.from_numpy(sample(i)[1]).double()[None] for i in range(3)])
    config = ProtectConfig(steps=8, budget="jnd", colour="luma-chroma", chroma_ratio=0.25)
    generators = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    out = rtb.run(model64, x, m, config, generators([0, 1, 2]))
    bound = budget_map(x, "jnd", rtb.DEFAULT_EPS)
    # 1. Every pixel within its own bound (≤ ε), the colour differences within a quarter of it, x + δ an image.
    assert (out.delta.abs() <= bound + 1e-15).all() and float(bound.max()) == rtb.DEFAULT_EPS
    assert (luma_chroma_from_rgb(out.delta)[:, 1:].abs() <= 0.25 * bound + 1e-15).all()
    assert (x + out.delta).min() >= -1e-15 and (x + out.delta).max() <= 1 + 1e-15
    # 2. The grey image's δ is luminance only: exactly equal channels.
    assert torch.equal(out.delta[1, 0], out.delta[1, 1]) and torch.equal(out.delta[1, 1], out.delta[1, 2])
    # 3. It still steers: the implant loss ends well below the noise control's in the same budget.
    control = noise.run(model64, x, m, config, generators([0, 1, 2]))
    assert (out.losses["implant"] < 0.9 * control.losses["implant"]).all()
    # 4. The budget map and the projection act per sample: a batch gives what each image gives alone.
    alone = rtb.run(model64, x[2:], m[2:], config, generators([2]))
    assert torch.equal(alone.delta, out.delta[2:])
