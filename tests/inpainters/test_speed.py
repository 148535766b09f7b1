"""The speed options of the backends: torch.compile with its eager fallback, and the channels-last layout.

Neither may change a result beyond float rounding; a compile failure must fall back to eager with a warning
naming it, and a bad input must raise as eager raises it."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

from rtb.inpainters import load_inpainter
from rtb.inpainters.speed import compile_with_fallback

pytestmark = pytest.mark.usefixtures("one_thread")

NO_COMPILER = {"cpp.cxx": ("/nonexistent/c++",)}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(4, 3, 3, padding=1)).eval().requires_grad_(False)


def inputs(n: int = 2, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, side, side, generator=generator)
    m = torch.zeros(n, 1, side, side)
    m[..., 8:20, 6:22] = 1
    return x, m


def value_and_grad(fn, x, *rest):
    x = x.clone().requires_grad_(True)
    out = fn(x, *rest)
    out.square().sum().backward()
    return out.detach(), x.grad


def test_without_a_cpp_compiler_compile_falls_back_to_eager_with_a_warning():
    net = tiny_net()
    x, _ = inputs()
    with inductor_config.patch(NO_COMPILER):
        compiled = compile_with_fallback(net, name="tiny")
        with pytest.warns(RuntimeWarning, match=r"torch.compile of tiny failed \(.*C\+\+ compiler.*\); running it eagerly"):
            out, grad = value_and_grad(compiled, x)
    assert "compiler" in compiled.failure
    expected, expected_grad = value_and_grad(net, x)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
    # From then on it runs eagerly, without trying (or warning) again.
    with inductor_config.patch(NO_COMPILER):
        again, _ = value_and_grad(compiled, x * 0.5)
    assert torch.equal(again, net(x * 0.5))


def test_a_bad_input_raises_as_eager_does_and_compilation_stays_on():
    net = tiny_net()
    compiled = compile_with_fallback(net, name="tiny", backend="eager")  # dynamo only: no C++ build in the test
    with pytest.raises(RuntimeError, match="channels"):
        compiled(torch.rand(1, 5, 8, 8))
    assert compiled.failure is None
    x, _ = inputs()
    out, grad = value_and_grad(compiled, x)
    expected, expected_grad = value_and_grad(net, x)
    assert torch.allclose(out, expected, atol=1e-6) and torch.allclose(grad, expected_grad, atol=1e-6)
    assert compiled.failure is None and len(compiled.probed) == 1


@pytest.mark.parametrize("model", ["reference"])
def test_channels_last_and_compile_options_give_the_same_inpainting(model):
    x, m = inputs(2, 64)
    plain = load_inpainter(model, device="cpu", channels_last=False)
    assert not plain.channels_last and load_inpainter(model, device="cpu").channels_last  # CPU default: on
    expected, expected_grad = value_and_grad(plain.surrogate, x, m)
    fast = load_inpainter(model, device="cpu", channels_last=True)
    out, grad = value_and_grad(fast.surrogate, x, m)
    assert out.is_contiguous()
    assert torch.allclose(out, expected, atol=1e-5) and torch.allclose(grad, expected_grad, atol=1e-5)
    # compile=True through the loader, on a machine where compilation is unavailable: same results, eagerly.
    with inductor_config.patch(NO_COMPILER):
        compiled = load_inpainter(model, device="cpu", compile=True)
        with pytest.warns(RuntimeWarning, match="running it eagerly"):
            out, grad = value_and_grad(compiled.surrogate, x, m)
    assert torch.allclose(out, expected, atol=1e-5) and torch.allclose(grad, expected_grad, atol=1e-5)


@pytest.mark.parametrize("option, value", [("channels_last", "yes"), ("compile", 1)])
def test_bad_speed_options_name_the_value(option, value):
    with pytest.raises(ValueError, match=f"{option} must be True or False, got {value!r}"):
        load_inpainter("reference", device="cpu", **{option: value})
