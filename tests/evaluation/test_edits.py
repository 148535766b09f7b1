"""One image evaluated with a real tiny network (the metrics themselves: tests/test_metrics.py)."""

from __future__ import annotations

import math

import pytest
import torch

from rtb import load_inpainter, metrics
from rtb.evaluation.edits import EditConfig, evaluate_image
from tests.fixtures.inpainters import build_tiny_torchscript

pytestmark = pytest.mark.usefixtures("one_thread")


def pair(seed=0, h=40, w=56):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    a = torch.nn.functional.avg_pool2d(a, 3, 1, 1)  # some structure, not pure noise
    b = (a + 0.08 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    m = torch.zeros(1, 1, h, w, dtype=torch.float64)
    m[..., 9:27, 14:40] = 1
    return a, b, m


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    return load_inpainter(str(build_tiny_torchscript(tmp_path_factory.mktemp("m") / "tiny.pt")), device="cpu")


def test_evaluate_image_rows(editor):
    a, b, _ = pair(h=64, w=96)
    region = torch.zeros(64, 96)
    region[20:40, 40:60] = 1
    result = evaluate_image(editor, "img", a[0], region, {"protected": b[0], "control": a[0]}, EditConfig(seed=2))
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert len(ok) == 2 * len(result.images) and {r["arm"] for r in ok} == {"protected", "control"}
    for r in ok:
        assert 0 < r["hole_fraction"] < 1 and 0 <= r["target_distance"] <= 1
        if r["arm"] == "control":  # the control here is the source itself: its edits are the clean edits
            assert r["hole_ssim"] == pytest.approx(1.0) and math.isinf(r["full_psnr"]) and r["protect_linf"] == 0
        else:
            assert r["hole_ssim"] < 1 and r["protect_psnr"] < 30
    again = evaluate_image(editor, "img", a[0], region, {"protected": b[0], "control": a[0]}, EditConfig(seed=2))
    assert again.rows == result.rows


def test_evaluate_image_rejects_mismatched_arms(editor):
    a, _, _ = pair()
    with pytest.raises(ValueError, match="arm 'protected'"):
        evaluate_image(editor, "x", a[0], torch.ones(40, 56), {"protected": a[0, :, :20]})
    with pytest.raises(ValueError, match="target"):
        EditConfig(target="purple")


def test_evaluate_image_ssim_matches_the_float64_functions(editor):
    a, b, _ = pair(h=64, w=96)
    region = torch.zeros(64, 96)
    region[20:40, 40:60] = 1
    result = evaluate_image(editor, "img", a[0], region, {"protected": b[0]}, EditConfig(families=("exact", "bbox")))
    for row in result.rows:
        edits = result.images[(row["family"], row["index"])]
        m = edits["hole"][None, None].double()
        assert row["hole_ssim"] == pytest.approx(float(metrics.hole_ssim(edits["protected"][None], edits["clean"][None], m)[0]), abs=1e-5)
        assert row["full_ssim"] == pytest.approx(float(metrics.ssim(edits["protected"][None], edits["clean"][None])[0]), abs=1e-5)


def test_transforms_compare_like_with_like(editor):
    a, b, _ = pair(h=64, w=96)
    region = torch.zeros(64, 96)
    region[20:40, 40:60] = 1
    config = EditConfig(families=("exact", "ring-half"))
    plain = evaluate_image(editor, "img", a[0], region, {"protected": b[0], "control": a[0]}, config)
    assert evaluate_image(editor, "img", a[0], region, {"protected": b[0], "control": a[0]}, config,
                          transform="none").rows == plain.rows
    assert {r["transform"] for r in plain.rows} == {"none"}
    jpeg = evaluate_image(editor, "img", a[0], region, {"protected": b[0], "control": a[0]}, config, transform="jpeg:75")
    assert {r["transform"] for r in jpeg.rows} == {"jpeg:75"} and len(jpeg.rows) == len(plain.rows)
    for before, after in zip(plain.rows, jpeg.rows):
        if after["arm"] == "control":  # the source itself: the same codec on both sides, so identical edits
            assert after["hole_ssim"] == pytest.approx(1.0) and math.isinf(after["full_psnr"])
            assert after["protect_linf"] == 0
        else:  # JPEG removes part of b's noise: the arm moves nearer the (transformed) source
            assert after["protect_psnr"] > before["protect_psnr"] + 1
            assert after["hole_ssim"] != before["hole_ssim"]
    # The editor saw the codec's output: the images handed back are the decoded JPEGs, at full size.
    assert jpeg.inputs["source"].shape == a[0].shape and not torch.equal(jpeg.inputs["source"], a[0])
    with pytest.raises(ValueError, match="unknown transform 'png:3'"):
        evaluate_image(editor, "img", a[0], region, {"protected": b[0]}, config, transform="png:3")
