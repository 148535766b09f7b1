"""benchmarks/gpu.py and benchmarks/build_sd15_inpaint.py on CPU with the tiny built model; the diffusers speed options."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from rtb import load_inpainter
from rtb.storage import fingerprint

REPO = Path(__file__).resolve().parents[2]
# The tiny model's image side (UNet sample_size 8 × VAE scale factor 8).
SIZE = 64

pytestmark = pytest.mark.usefixtures("one_thread")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builder():
    return load_script("build_sd15_inpaint")


@pytest.fixture(scope="module")
def tiny_dir(builder, tmp_path_factory):
    path = tmp_path_factory.mktemp("sd15") / "tiny"
    builder.main([str(path), "--size", "tiny"])
    return path


def batch(n: int = 2):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, SIZE, SIZE, generator=generator)
    m = torch.zeros(n, 1, SIZE, SIZE)
    m[..., 16:48, 20:44] = 1
    return x, m


def test_tiny_build_is_a_9_channel_inpainting_pipeline_the_loader_reads(builder, tiny_dir, tmp_path):
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert not list(tiny_dir.rglob("*.bin")) and list(tiny_dir.rglob("*.safetensors"))
    inp = load_inpainter(tiny_dir, surrogate="pixel-x0")
    assert inp.pipe.unet.config.in_channels == 9 and inp.native_size == SIZE and inp.size_multiple == 8
    assert len(inp.pipe.unet.config.block_out_channels) == 4 and len(inp.pipe.vae.config.block_out_channels) == 4
    schedule = inp.pipe.scheduler.config
    assert type(inp.pipe.scheduler).__name__ == "PNDMScheduler"
    assert (schedule.beta_start, schedule.beta_end, schedule.beta_schedule, schedule.num_train_timesteps,
            schedule.prediction_type) == (0.00085, 0.012, "scaled_linear", 1000, "epsilon")
    assert inp.pipe.vae.config.scaling_factor == 0.18215
    x, m = batch()
    out = inp.surrogate(x, m)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # The seed decides the weights.
    assert fingerprint(builder.build(tmp_path / "again", "tiny", seed=0)) == fingerprint(tiny_dir)
    assert fingerprint(builder.build(tmp_path / "other", "tiny", seed=1)) != fingerprint(tiny_dir)
    with pytest.raises(ValueError, match="'huge'"):
        builder.build(tmp_path / "bad", "huge")


def test_full_size_configs_give_the_published_parameter_counts(builder):
    with torch.device("meta"):
        components = builder.build_components(builder.FULL)
    counts = builder.parameter_counts(components)
    # SD 1.5 inpainting: UNet 859.5 M (9 input channels), KL-f8 VAE 83.7 M, CLIP ViT-L/14 text encoder 123.1 M.
    assert counts["unet"] == pytest.approx(859.54e6, abs=0.05e6)
    assert counts["vae"] == pytest.approx(83.65e6, abs=0.05e6)
    assert counts["text_encoder"] == pytest.approx(123.06e6, abs=0.05e6)
    assert components["unet"].config.in_channels == 9
    assert components["text_encoder"].config.hidden_act == "quick_gelu"


def test_gpu_benchmark_prints_every_surrogate_and_a_final_speedup(tiny_dir, capsys):
    gpu = load_script("gpu")
    gpu.main(["--model", str(tiny_dir), "--sizes", str(SIZE), "--batches", "1,2", "--steps", "1",
              "--unroll-steps", "1", "--threads", "1"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    for name in ("rtb latent-x0", "rtb pixel-x0", "rtb unrolled", "photoguard-encoder"):
        summary = [line for line in lines if line.startswith(name) and "best batch" in line]
        assert len(summary) == 1, name
        assert re.search(r"best batch [12]: [0-9.]+ images/s", summary[0])
        assert "MFU n/a" in summary[0]  # CPU: no peak FLOP/s to divide by
        assert any(line.startswith(f"== {'diffusers:'}") and f"| {name} |" in line for line in lines)
    # The loop gets the batched optimizer's per-image surrogate draws, so on the default (latent-x0) surrogate
    # the final losses agree.
    assert any(line.startswith("authors' per-image loop (rtb latent-x0") for line in lines)
    assert any(line.startswith("equal final losses (±10%): yes") for line in lines)
    last = re.fullmatch(r"speedup: (\S+)", lines[-1])
    assert last and math.isfinite(float(last.group(1))) and float(last.group(1)) > 0


def test_gpu_benchmark_levers_ladder_one_row_per_rung(tiny_dir, capsys):
    gpu = load_script("gpu")
    gpu.main(["--model", str(tiny_dir), "--sizes", str(SIZE), "--batches", "1", "--steps", "1",
              "--unroll-steps", "1", "--methods", "rtb:unrolled", "--levers", "--skip", "+compile",
              "--speedup-surrogate", "unrolled"])
    lines = capsys.readouterr().out.splitlines()
    rungs = [line for line in lines if line.startswith("rung ")]
    assert [line.split(":")[0] for line in rungs] == [
        "rung baseline fp32", "rung +bf16", "rung +SDPA", "rung +channels-last", "rung +checkpointing"]
    assert "first rung" in rungs[0]
    assert all(re.search(r"×[0-9.]+ on the previous rung", line) for line in rungs[1:])
    assert re.fullmatch(r"speedup: [0-9.]+", lines[-1])


@pytest.mark.parametrize("mode", ["pixel-x0", "unrolled"])
def test_speed_options_change_speed_not_results(tiny_dir, mode):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    x, m = batch()

    def surrogate_and_gradient(inp):
        noise = inp.sample_noise([torch.Generator().manual_seed(s) for s in (0, 1)], SIZE, SIZE)
        images = x.clone().requires_grad_(True)
        out = inp.surrogate(images, m, noise)
        (out * inp.mask_to_loss_space(m)).square().sum().backward()
        return out.detach(), images.grad

    default = load_inpainter(tiny_dir, surrogate=mode, unroll_steps=2)
    assert {type(p) for p in default.pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    reference = surrogate_and_gradient(default)
    assert reference[1].abs().sum() > 0
    for options in ({"channels_last": True}, {"gradient_checkpointing": True}, {"attention": "classic"}):
        inp = load_inpainter(tiny_dir, surrogate=mode, unroll_steps=2, **options)
        for got, want in zip(surrogate_and_gradient(inp), reference):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"{options}")
    classic = load_inpainter(tiny_dir, surrogate=mode, attention="classic")
    assert {type(p) for p in classic.pipe.unet.attn_processors.values()} == {AttnProcessor}
    assert {type(p) for p in classic.pipe.vae.attn_processors.values()} == {AttnProcessor}
    last = load_inpainter(tiny_dir, surrogate=mode, channels_last=True)
    assert last.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert load_inpainter(tiny_dir, gradient_checkpointing=True).pipe.unet.is_gradient_checkpointing


def test_compile_falls_back_to_eager_with_the_same_results(tiny_dir, monkeypatch):
    x, m = batch()
    noise = None
    default = load_inpainter(tiny_dir, surrogate="unrolled", unroll_steps=2)
    noise = default.sample_noise([torch.Generator().manual_seed(s) for s in (0, 1)], SIZE, SIZE)
    want = default.surrogate(x, m, noise)

    def broken_compile(module, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    inp = load_inpainter(tiny_dir, surrogate="unrolled", unroll_steps=2, compile=True)
    images = x.clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here"):
        got = inp.surrogate(images, m, noise)
    got.square().sum().backward()
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)
    assert images.grad.abs().sum() > 0
    assert "no C++ compiler here" in inp._unet.failure


@pytest.mark.parametrize("option, value", [
    ("attention", "flash"), ("channels_last", "yes"), ("compile", 1), ("gradient_checkpointing", None),
])
def test_bad_speed_options_raise_naming_the_value(tiny_dir, option, value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        load_inpainter(tiny_dir, **{option: value})
