"""CLIP-FID on a tiny random CLIP vision model saved locally (the real loading path, no hub)."""

from __future__ import annotations

import pytest
import torch

from rtb.evaluation.clip_fid import CLIPImageFeatures, clip_fid


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    path = tmp_path_factory.mktemp("clip")
    CLIPVisionModelWithProjection(config).save_pretrained(str(path))
    return path


def test_features_and_fid(tiny_clip):
    from torchmetrics.image.fid import FrechetInceptionDistance

    features = CLIPImageFeatures(tiny_clip)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 3, 40, 52, generator=g)
    b = (a * 0.3 + 0.6).clamp(0, 1)
    ea, eb = features(a), features(b)
    assert ea.shape == (6, 16) and torch.equal(features(ea), ea)
    fid = clip_fid(features, ea, eb)
    assert fid == pytest.approx(clip_fid(features, a, b), rel=1e-4) and fid > 0
    assert abs(clip_fid(features, ea, features(a))) < 1e-3
    # The same number as torchmetrics fed with the images directly.
    direct = FrechetInceptionDistance(feature=features, normalize=True)
    direct.update(a, real=True)
    direct.update(b, real=False)
    assert float(direct.compute()) == pytest.approx(fid, rel=1e-4)


def test_bad_inputs(tiny_clip, tmp_path):
    with pytest.raises(ValueError, match="not a local CLIP model"):
        CLIPImageFeatures(tmp_path)
    features = CLIPImageFeatures(tiny_clip)
    with pytest.raises(ValueError, match="at least 2"):
        clip_fid(features, torch.rand(1, 16), torch.rand(3, 16))
