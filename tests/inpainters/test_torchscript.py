import s3fs
import pytest
import torch

from rtb import load_inpainter
from rtb.inpainters import Inpainter
from tests.fixtures.inpainters import build_tiny_torchscript


def test_loads_from_local_file_and_from_s3_with_same_fingerprint(tmp_path, s3_bucket):
    path = build_tiny_torchscript(tmp_path / "lama-like.pt")
    local = load_inpainter(path, device="cpu")
    assert isinstance(local, Inpainter) and local.size_multiple == 8 and not local.has_vae

    bucket, options = s3_bucket
    s3fs.S3FileSystem(**options).put(str(path), f"{bucket}/models/lama-like.pt")
    remote = load_inpainter(f"s3://{bucket}/models/lama-like.pt", device="cpu", cache_dir=tmp_path / "cache",
                            storage_options=options)
    assert remote.fingerprint == local.fingerprint
    assert remote.name == f"torchscript:s3://{bucket}/models/lama-like.pt"

    x = torch.rand(2, 3, 32, 32)
    m = torch.zeros(2, 1, 32, 32)
    m[:, :, 8:20, 8:20] = 1
    assert torch.equal(local.surrogate(x, m), remote.surrogate(x, m))


def test_output_is_composited_and_differentiable_in_the_context(tmp_path):
    model = load_inpainter(build_tiny_torchscript(tmp_path / "m.pt"), device="cpu")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    m = torch.zeros(1, 1, 32, 32)
    m[:, :, 10:20, 10:20] = 1
    out = model.surrogate(x, m)
    assert torch.equal(out.detach() * (1 - m), x.detach() * (1 - m))
    (out * m).sum().backward()
    assert x.grad[..., 5:9, 10:20].abs().sum() > 0  # context above the hole steers the fill
    assert x.grad[..., 12:18, 12:18].abs().sum() == 0  # the hidden pixels never reach the model


def test_refuses_a_file_that_is_not_torchscript(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="broken.pt"):
        load_inpainter(bad, device="cpu")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(ValueError, match="neither 'reference'"):
        load_inpainter(onnx)
