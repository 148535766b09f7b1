"""The steerability check on a sensitive editor (the tiny gain-4 network) and on the robust MSE reference model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtb import load_inpainter
from rtb.evaluation.steerability import MIN_GAIN, check_editor, rule_failures
from tests.fixtures.inpainters import build_tiny_torchscript
from tests.fixtures.samples import small_samples

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_inpainter(build_tiny_torchscript(tmp_path_factory.mktemp("model") / "tiny.pt"), device="cpu")


def test_tiny_sensitive_network_is_steerable(tiny):
    images, masks, ids = small_samples()
    result = check_editor(tiny, images, masks, ids=ids, eps=0.025, steps=20)
    assert result.verdict == "steerable" and result.steerable and result.reasons == ()
    assert [c.id for c in result.images] == ids
    for c in result.images:  # RTB moves every fill more than twice as far as ε; noise barely moves it
        assert c.gain_rtb > MIN_GAIN and c.gain_noise < 1.0
        assert c.hole_ssim_rtb < c.hole_ssim_noise - 0.05
        assert c.target_distance_rtb < c.target_distance_clean  # towards the target colour
        assert c.protect_psnr_rtb > 32
    assert result.gain_rtb == pytest.approx(float(np.median([c.gain_rtb for c in result.images])))
    assert result.line.startswith("verdict: steerable — RTB gain ")
    assert "(goal ≤ 0.30: not met at ε 0.025)" in result.line
    assert result.eps == 0.025 and result.steps == 20 and result.model.startswith("torchscript:")


def test_mse_reference_model_is_not_steerable():
    images, masks, ids = small_samples()
    result = check_editor("reference", images, masks, ids=ids, steps=20)
    assert result.verdict == "not steerable" and not result.steerable
    # The gain of an interpolating editor: about 1 (docs/efficacy.md), far below the rule's 2.
    assert 0.5 < result.gain_rtb < MIN_GAIN and result.gain_noise < result.gain_rtb
    assert any("RTB gain" in reason for reason in result.reasons)
    assert result.hole_ssim_rtb > 0.95 and result.line.startswith("verdict: not steerable — ")


def test_same_inputs_give_the_same_result(tiny):
    images, masks, ids = small_samples(ids=("rocket",), side=64)
    first = check_editor(tiny, images, masks, ids=ids, steps=3)
    second = check_editor(tiny, images, masks, ids=ids, steps=3)
    assert first.images == second.images and first.line == second.line


def test_rule():
    assert rule_failures(5.0, 0.3, 0.80, 0.99) == ()
    # The reference model's figures: gain about 1, SSIM barely moved.
    failures = rule_failures(1.1, 0.07, 0.990, 0.993)
    assert len(failures) == 2 and "RTB gain 1.10 < 2" in failures[0] and "margin 0.003 < 0.05" in failures[1]
    # An unstable editor: noise moves the fill about as much as RTB does.
    assert len(rule_failures(5.0, 2.0, 0.70, 0.80)) == 1
    assert rule_failures(math.nan, 0.1, 0.5, 0.99)  # NaN never passes


@pytest.mark.parametrize("eps", [0, -0.01, 0.3, math.nan, "0.1"])
def test_bad_eps_is_a_value_error(tiny, eps):
    images, masks, _ = small_samples(ids=("rocket",), side=64)
    with pytest.raises(ValueError, match="eps .* out of range"):
        check_editor(tiny, images, masks, eps=eps)


def test_bad_inputs_are_value_errors(tiny, tmp_path):
    images, masks, _ = small_samples(ids=("rocket",), side=64)
    with pytest.raises(ValueError, match="does not exist"):
        check_editor(str(tmp_path / "missing.pt"), images, masks)
    with pytest.raises(ValueError, match="1 images but 2 masks"):
        check_editor(tiny, images, masks * 2)
    with pytest.raises(ValueError, match="no images"):
        check_editor(tiny, [], [])
    with pytest.raises(ValueError, match="image 'blank': mask is empty"):
        check_editor(tiny, images, [np.zeros_like(masks[0])], ids=["blank"])
