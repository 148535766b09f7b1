"""The LaMa-style generator (``reference-gan``): FFC blocks, hole gradients, independence and budgets (its
training: tests/rtb_train/test_lama_gan.py)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rtb.inpainters import load_inpainter
from rtb.inpainters.reference import PACKAGED_GAN_WEIGHTS
from rtb.reference.lama import FFC, FFCResBlock, FourierUnit, LamaConfig, LamaGenerator, save_lama_weights
from rtb.reference.model import composite

pytestmark = pytest.mark.usefixtures("one_thread")

# A generator small enough for a CPU test: 1/4 resolution, one FFC block.
TINY = LamaConfig(stem_width=8, down_widths=(16, 32), blocks=1)


def holes(n: int, size: int) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size)
    m[..., size // 4 : size // 2 + 3, size // 5 : size // 2 + 5] = 1.0
    return m


def test_ffc_shapes():
    fu = FourierUnit(6)
    assert fu(torch.rand(2, 6, 12, 20)).shape == (2, 6, 12, 20)  # odd half-spectrum width, non-square
    ffc = FFC(4, 12)
    local, global_ = ffc((torch.rand(2, 4, 16, 24), torch.rand(2, 12, 16, 24)))
    assert local.shape == (2, 4, 16, 24) and global_.shape == (2, 12, 16, 24)
    block = FFCResBlock(4, 12)
    local, global_ = block((torch.rand(1, 4, 8, 8), torch.rand(1, 12, 8, 8)))
    assert local.shape == (1, 4, 8, 8) and global_.shape == (1, 12, 8, 8)
    net = LamaGenerator(TINY)
    m = torch.zeros(2, 1, 32, 48)
    m[..., 5:20, 10:40] = 1
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 48), m)
    assert out.shape == (2, 3, 32, 48) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert TINY.size_multiple == 4 and LamaConfig().size_multiple == 8
    assert LamaConfig.from_dict(json.loads(json.dumps(LamaConfig().to_dict()))) == LamaConfig()
    with pytest.raises(ValueError):
        LamaConfig(down_widths=(16,))


def test_the_spectral_branch_runs_in_float32_under_bf16_autocast():
    net = LamaGenerator(TINY).eval()
    seen = []
    conv = net.blocks[0].ffc1.global_to_global.fourier.conv
    conv.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    x, m = torch.rand(1, 3, 32, 32), holes(1, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, m)
    assert seen == [torch.float32]
    assert torch.isfinite(out.float()).all()


def test_gradient_is_zero_inside_the_hole():
    net = LamaGenerator(TINY).eval()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    m = holes(1, 32)
    out = composite(x, m, net(x, m))
    (out * m).square().sum().backward()
    grad = x.grad
    assert torch.isfinite(grad).all() and float((grad * (1 - m)).abs().sum()) > 0, "the fill depends on the context"
    assert float((grad * m).abs().max()) == 0.0, "pixels under the hole are never read"


def test_eval_output_is_independent_of_batch_companions():
    net = LamaGenerator(TINY)
    net.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        net(torch.rand(4, 3, 32, 32), holes(4, 32))
    net = net.eval().double()
    x, m = torch.rand(1, 3, 32, 32, dtype=torch.float64), holes(1, 32).double()
    alone = net(x, m)
    others = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    batch = net(torch.cat([others, x]), torch.cat([m.flip(-1).expand(2, -1, -1, -1), m]))
    torch.testing.assert_close(batch[2:], alone, atol=1e-10, rtol=0)
    torch.testing.assert_close(net(x, m), alone, atol=0, rtol=0)  # deterministic


def test_budget_of_the_default_config(tmp_path):
    net = LamaGenerator(LamaConfig()).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 3, 256, 256), torch.zeros(1, 1, 256, 256))
    assert 4.5e9 <= counter.get_total_flops() <= 6e9, "≤ 6 GFLOP at 256², and the budget mostly used"
    path = tmp_path / "default.safetensors"
    save_lama_weights(net, path)
    assert path.stat().st_size <= 25 * 2**20
    if PACKAGED_GAN_WEIGHTS.is_file():  # once trained, the shipped file keeps the budget too
        assert PACKAGED_GAN_WEIGHTS.stat().st_size <= 25 * 2**20
        shipped = load_inpainter("reference-gan", device="cpu").net
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            shipped(torch.rand(1, 3, 256, 256), torch.zeros(1, 1, 256, 256))
        assert counter.get_total_flops() <= 6e9
