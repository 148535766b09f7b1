"""PhotoGuard baselines on the tiny random SD-inpainting pipeline (few steps, CPU)."""

from __future__ import annotations

import pytest
import torch

from rtb.config import ProtectConfig
from rtb.inpainters import Inpainter
from rtb.inpainters.diffusers_inpaint import load_diffusers
from rtb.methods import photoguard_diffusion, photoguard_encoder
from tests.fixtures.tiny_diffusers import TINY_SIZE, build_tiny_inpaint_pipeline
from tests.fixtures.tiny_diffusers import tiny_batch, tiny_generators

SIZE = TINY_SIZE


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    return load_diffusers(build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny") / "sd-inpaint"))


@pytest.fixture
def fast_diffusion(monkeypatch):
    """Fewer noise draws and sampler steps so an iteration takes a fraction of a second."""
    monkeypatch.setattr(photoguard_diffusion, "NOISE_DRAWS", 2)
    monkeypatch.setattr(photoguard_diffusion, "UNROLL_STEPS", 2)



def test_encoder_pulls_latent_to_gray_within_linf(inpainter):
    x, m = tiny_batch()
    out = photoguard_encoder.run(inpainter, x, m, ProtectConfig(steps=6), tiny_generators([0, 1]))
    assert out.history.shape == (6, 2)
    assert (out.losses["encoder"] < out.history[0]).all()
    assert out.delta.abs().max() <= photoguard_encoder.DEFAULT_EPS + 1e-6
    assert (out.delta * m).abs().max() == 0
    assert (x + out.delta).min() >= 0 and (x + out.delta).max() <= 1
    # The reported loss is the latent distance at x + δ.
    with torch.no_grad():
        gray = inpainter.encode_latents(torch.full_like(x, 0.5))
        distance = (inpainter.encode_latents(x + out.delta) - gray).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(out.losses["encoder"], distance, atol=1e-6, rtol=1e-5)


def test_encoder_respects_custom_eps_and_batch_independence(inpainter):
    x, m = tiny_batch()
    config = ProtectConfig(eps=0.01, steps=3)
    both = photoguard_encoder.run(inpainter, x, m, config, tiny_generators([4, 5]))
    alone = photoguard_encoder.run(inpainter, x[1:], m[1:], config, tiny_generators([5]))
    assert both.delta.abs().max() <= 0.01 + 1e-6
    torch.testing.assert_close(both.delta[1:], alone.delta, atol=1e-6, rtol=0)


def test_diffusion_pushes_fill_to_gray_within_l2(inpainter, fast_diffusion):
    x, m = tiny_batch()
    out = photoguard_diffusion.run(inpainter, x, m, ProtectConfig(steps=3), tiny_generators([0, 1]))
    assert out.history.shape == (3, 2) and set(out.losses) == {"diffusion"}
    norms = out.delta.flatten(1).norm(dim=1)
    assert (norms <= photoguard_diffusion.DEFAULT_EPS + 1e-4).all() and (norms > 0).all()
    assert (out.delta * m).abs().max() == 0
    assert (x + out.delta).min() >= 0 and (x + out.delta).max() <= 1
    # Same sampler noises for the clean and the protected image: the fill is closer to gray after.
    gray = torch.full_like(x, 0.5)
    clean, _ = photoguard_diffusion._draws(inpainter, x, m, gray, tiny_generators([9, 10]), grad=False)
    protected, _ = photoguard_diffusion._draws(inpainter, x + out.delta, m, gray, tiny_generators([9, 10]), grad=False)
    assert (protected < clean).all()


def test_diffusion_l2_projection_binds_with_small_eps(inpainter, fast_diffusion):
    x, m = tiny_batch(1)
    out = photoguard_diffusion.run(inpainter, x, m, ProtectConfig(eps=0.3, steps=1), tiny_generators([0]))
    # The step (0.5) overshoots the ball, so δ ends on its surface (clipping to [0, 1] may shave a little).
    norm = out.delta.flatten(1).norm(dim=1)
    assert (norm <= 0.3 + 1e-5).all() and (norm > 0.29).all()


class _NoVae:
    """A minimal pixel inpainter without a VAE (like the bundled reference model)."""

    name = "reference"
    fingerprint = "0" * 64
    size_multiple = 8
    native_size = None
    has_vae = False
    device = torch.device("cpu")
    dtype = torch.float32

    def sample_noise(self, generators, height, width):
        return None

    def surrogate(self, x, m, noise=None):
        return x * (1 - m)

    def to_loss_space(self, images):
        return images

    def mask_to_loss_space(self, m):
        return m

    def edit(self, x, m, *, prompt="", steps=None, guidance=None, seed=0):
        return x * (1 - m)


@pytest.mark.parametrize("method", [photoguard_encoder, photoguard_diffusion])
def test_needs_a_vae(method):
    model = _NoVae()
    assert isinstance(model, Inpainter)
    x, m = tiny_batch(1)
    with pytest.raises(ValueError, match=f"method '{method.NAME}' needs a diffusers model with a VAE; got 'reference'"):
        method.run(model, x, m, ProtectConfig(steps=1), tiny_generators([0]))


@pytest.mark.parametrize("method", [photoguard_encoder, photoguard_diffusion])
def test_custom_targets_replace_gray(inpainter, method, fast_diffusion):
    x, m = tiny_batch(1)
    white = torch.ones_like(x)
    config = ProtectConfig(steps=1, target="custom")
    gray = method.run(inpainter, x, m, config, tiny_generators([0]))
    custom = method.run(inpainter, x, m, config, tiny_generators([0]), custom_targets=white)
    assert not torch.allclose(gray.history, custom.history)
    with pytest.raises(ValueError, match="custom_targets"):
        method.run(inpainter, x, m, config, tiny_generators([0]), custom_targets=white[..., :16])
