"""The bundled reference inpainter: contract, recorded output, gradients, budgets and weight validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from rtb.inpainters.base import Inpainter
from rtb.inpainters.reference import PACKAGED_WEIGHTS, load_reference
from rtb.reference.model import ReferenceConfig, ReferenceNet, push_pull_fill
from rtb.storage import fingerprint
from rtb_train.data import procedural_image

# Output of the bundled weights on `fixed_input()`: hole mean per channel and the row y=32, x=20..27, channel 0
# (recorded once from rtb/weights/reference.safetensors; retraining changes them).
RECORDED_HOLE_MEAN = [0.620109, 0.848297, 0.11891]
RECORDED_ROW = [0.58518, 0.584815, 0.590762, 0.593516, 0.598427, 0.60061, 0.614042, 0.618134]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inpainter():
    return load_reference()


def fixed_input() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×3×64×64 procedural catalog image and a 24×20 box hole."""
    image = procedural_image(np.random.default_rng(7), 64)
    x = torch.from_numpy(image.transpose(2, 0, 1)).unsqueeze(0)
    m = torch.zeros(1, 1, 64, 64)
    m[..., 20:44, 18:38] = 1.0
    return x, m


def test_satisfies_the_contract(inpainter):
    assert isinstance(inpainter, Inpainter)
    assert inpainter.name == "reference"
    assert inpainter.fingerprint == fingerprint(PACKAGED_WEIGHTS)
    assert (inpainter.size_multiple, inpainter.native_size, inpainter.has_vae) == (16, 256, False)
    assert inpainter.sample_noise([torch.Generator()], 64, 64) is None
    x, m = fixed_input()
    assert torch.equal(inpainter.to_loss_space(x), x) and torch.equal(inpainter.mask_to_loss_space(m), m)


def test_bundled_weights_give_the_recorded_output(inpainter):
    x, m = fixed_input()
    out = inpainter.edit(x, m)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out * (1 - m), x * (1 - m)), "outside the hole the output is the input"
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    hole_mean = (out * m).sum(dim=(0, 2, 3)) / m.sum()
    torch.testing.assert_close(hole_mean, torch.tensor(RECORDED_HOLE_MEAN), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, 0, 32, 20:28], torch.tensor(RECORDED_ROW), atol=1e-4, rtol=0)


def test_surrogate_is_differentiable_in_the_image(inpainter):
    x, m = fixed_input()
    x = x.clone().requires_grad_(True)
    out = inpainter.surrogate(x, m)
    (out * m).square().sum().backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # The network never reads pixels under the hole: their gradient comes only from the composite, which is 0.
    assert float((grad * m).abs().max()) == 0.0


def test_float64_matches_float32_and_batches_do_not_mix():
    x, m = fixed_input()
    single = load_reference(dtype=torch.float32).edit(x, m)
    inpainter = load_reference(dtype=torch.float64)
    x64, m64 = x.double(), m.double()
    alone = inpainter.edit(x64, m64)
    assert alone.dtype == torch.float64
    torch.testing.assert_close(alone.float(), single, atol=1e-4, rtol=0)
    other = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    batch = inpainter.edit(torch.cat([other, x64]), torch.cat([m64.flip(-1).expand(2, -1, -1, -1), m64]))
    torch.testing.assert_close(batch[2:], alone, atol=1e-10, rtol=0)


def test_rejects_bad_shapes(inpainter):
    with pytest.raises(ValueError, match="multiples of 16"):
        inpainter.edit(torch.rand(1, 3, 40, 64), torch.zeros(1, 1, 40, 64))


def test_budget_flops_and_size():
    net = ReferenceNet(ReferenceConfig())
    with FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 3, 256, 256), torch.zeros(1, 1, 256, 256))
    assert counter.get_total_flops() <= 1.5e9
    assert PACKAGED_WEIGHTS.stat().st_size <= 10 * 2**20


def test_rejects_truncated_weights(tmp_path):
    path = tmp_path / "truncated.safetensors"
    data = PACKAGED_WEIGHTS.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        load_reference(path)


def test_rejects_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="garbage.safetensors"):
        load_reference(path)


def test_rejects_wrong_tensor_shapes(tmp_path):
    path = tmp_path / "wrong.safetensors"
    tensors = ReferenceNet(ReferenceConfig(widths=(8, 16, 32, 64))).state_dict()
    save_file(dict(tensors), str(path), metadata={"config": json.dumps(ReferenceConfig().to_dict())})
    with pytest.raises(ValueError, match=r"wrong.safetensors.*shape"):
        load_reference(path)


def test_rejects_missing_file(tmp_path):
    with pytest.raises(ValueError, match="absent.safetensors"):
        load_reference(tmp_path / "absent.safetensors")


def test_push_pull_keeps_known_pixels_and_fills_constants():
    x = torch.full((1, 3, 32, 48), 0.3)
    m = torch.zeros(1, 1, 32, 48)
    m[..., 5:20, 10:40] = 1
    noisy = x + m * torch.rand(1, 3, 32, 48)  # hole content must not leak into the fill
    torch.testing.assert_close(push_pull_fill(noisy * (1 - m), m), x)
