"""Loading the reference inpainters: both architectures through ``load_inpainter``, the packaged
``reference-gan`` (missing until trained on a GPU), fp16 storage and corrupted weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import rtb.inpainters.reference as backend
from rtb.inpainters import Inpainter, load_inpainter
from rtb.reference.lama import LamaConfig, LamaGenerator, save_lama_weights
from rtb.reference.model import ReferenceConfig, ReferenceNet, save_weights
from rtb.storage import fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = LamaConfig(stem_width=8, down_widths=(16, 32), blocks=1)


def tiny_generator() -> LamaGenerator:
    """A tiny generator whose BatchNorm statistics are not the initial ones."""
    torch.manual_seed(0)
    net = LamaGenerator(TINY).train()
    with torch.no_grad():
        net(torch.rand(4, 3, 32, 32), torch.zeros(4, 1, 32, 32))
    return net.eval()


@pytest.fixture
def gan_weights(tmp_path):
    path = tmp_path / "gan.safetensors"
    save_lama_weights(tiny_generator(), path, record={"note": "test"})
    return path


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:20, 10:24] = 1
    return x, m


def test_a_gan_file_loads_through_load_inpainter(gan_weights):
    inpainter = load_inpainter(gan_weights, device="cpu")
    assert isinstance(inpainter, Inpainter)
    assert inpainter.name == "reference-gan" and inpainter.size_multiple == 4 and inpainter.native_size == 256
    assert inpainter.fingerprint == fingerprint(gan_weights) and inpainter.sample_noise([], 32, 32) is None
    x, m = inputs()
    expected = composite_of(tiny_generator(), x, m)
    torch.testing.assert_close(inpainter.edit(x, m), expected, atol=1e-6, rtol=0)
    x = x.clone().requires_grad_(True)
    out = inpainter.surrogate(x, m)
    (out * m).sum().backward()
    assert float((x.grad * m).abs().max()) == 0.0 and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="multiples of 4"):
        inpainter.edit(torch.rand(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))
    double = load_inpainter(gan_weights, device="cpu", dtype=torch.float64)
    torch.testing.assert_close(double.edit(x.detach().double(), m.double()).float(), expected, atol=1e-5, rtol=0)


def composite_of(net, x, m):
    with torch.no_grad():
        return x * (1 - m) + net(x, m).clamp(0, 1) * m


def test_a_reference_file_still_loads_as_reference(tmp_path):
    path = tmp_path / "ref.safetensors"
    save_weights(ReferenceNet(ReferenceConfig(widths=(8, 8, 8, 8))), path)
    inpainter = load_inpainter(path, device="cpu")
    assert inpainter.name == "reference" and inpainter.size_multiple == 16


def test_fp16_stored_weights_load_and_compute_in_fp32(tmp_path, gan_weights):
    path = tmp_path / "half.safetensors"
    save_lama_weights(tiny_generator(), path, dtype=torch.float16)
    assert path.stat().st_size < gan_weights.stat().st_size
    half = load_inpainter(path, device="cpu")
    assert all(p.dtype == torch.float32 for p in half.net.parameters())
    x, m = inputs()
    out = half.edit(x, m)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, load_inpainter(gan_weights, device="cpu").edit(x, m), atol=5e-3, rtol=0)


def test_packaged_reference_gan_missing_says_how_to_train(tmp_path, monkeypatch):
    missing = tmp_path / "weights" / "reference-gan.safetensors"
    monkeypatch.setattr(backend, "PACKAGED_GAN_WEIGHTS", missing)
    with pytest.raises(ValueError, match=r"reference-gan\.safetensors.*missing.*rtb_train\.lama_gan"):
        load_inpainter("reference-gan")


def test_packaged_reference_gan_loads_with_its_fingerprint(gan_weights, monkeypatch):
    monkeypatch.setattr(backend, "PACKAGED_GAN_WEIGHTS", gan_weights)
    inpainter = load_inpainter("reference-gan", device="cpu")
    assert inpainter.name == "reference-gan" and inpainter.fingerprint == fingerprint(gan_weights)


def test_reference_gan_rejects_weights_of_the_other_architecture(tmp_path, monkeypatch):
    path = tmp_path / "reference-gan.safetensors"
    save_weights(ReferenceNet(ReferenceConfig(widths=(8, 8, 8, 8))), path)
    monkeypatch.setattr(backend, "PACKAGED_GAN_WEIGHTS", path)
    with pytest.raises(ValueError, match="reference-gan.safetensors.*not of the LaMa-style"):
        load_inpainter("reference-gan")


# ---------------------------------------------------------------------------------------------------------
# Corrupted weights: every error is a ValueError naming the file.


def test_truncated_and_garbage_files(tmp_path, gan_weights):
    truncated = tmp_path / "truncated.safetensors"
    data = gan_weights.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        load_inpainter(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="garbage.safetensors"):
        load_inpainter(garbage)


def lama_tensors() -> dict[str, torch.Tensor]:
    return {k: v for k, v in tiny_generator().state_dict().items() if not k.endswith("num_batches_tracked")}


def lama_metadata(config: LamaConfig = TINY) -> dict[str, str]:
    return {"format": "rtb-lama", "config": json.dumps(config.to_dict())}


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("renamed", r"renamed.safetensors.*do not match"),
        ("missing", r"missing.safetensors.*do not match"),
        ("shapes", r"shapes.safetensors.*shape"),
        ("nan", r"nan.safetensors.*not finite"),
        ("unknown-format", r"unknown-format.safetensors.*unknown architecture"),
        ("bad-config", r"bad-config.safetensors.*invalid config"),
        ("no-config", r"no-config.safetensors.*invalid config"),
        ("lama-as-reference", r"lama-as-reference.safetensors.*do not match"),
        ("reference-as-lama", r"reference-as-lama.safetensors"),
    ],
)
def test_corrupted_weights_name_the_file(tmp_path, case, pattern):
    path = tmp_path / f"{case}.safetensors"
    tensors, metadata = lama_tensors(), lama_metadata()
    if case == "renamed":
        key = next(iter(tensors))
        tensors["x" + key] = tensors.pop(key)
    elif case == "missing":
        tensors.pop(next(iter(tensors)))
    elif case == "shapes":
        metadata = lama_metadata(LamaConfig(stem_width=6, down_widths=(16, 32), blocks=1))
    elif case == "nan":
        key = next(k for k in tensors if k.endswith("weight"))
        tensors[key] = torch.full_like(tensors[key], float("nan"))
    elif case == "unknown-format":
        metadata["format"] = "rtb-transformer"
    elif case == "bad-config":
        metadata["config"] = json.dumps({"stem_width": 8, "down_widths": [16], "blocks": 1, "global_ratio": 0.75,
                                         "outer_kernel": 7})
    elif case == "no-config":
        del metadata["config"]
    elif case == "lama-as-reference":
        metadata = {"format": "rtb-reference", "config": json.dumps(ReferenceConfig().to_dict())}
    elif case == "reference-as-lama":
        tensors = ReferenceNet(ReferenceConfig(widths=(8, 8, 8, 8))).state_dict()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=pattern):
        load_inpainter(path)
