"""``rtb check-editor`` through click: a verdict for a sensitive and a robust editor, one-line errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jobs.check_editor import check_editor, main
from tests.fixtures.samples import small_samples

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A pairs folder with two downscaled samples and an image without its mask (skipped, not fatal)."""
    folder = tmp_path_factory.mktemp("pairs")
    images, masks, ids = small_samples()
    for image, mask, image_id in zip(images, masks, ids):
        image.save(folder / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{image_id}_mask.png")
    images[0].save(folder / "aaa-nomask.png")
    return folder


def invoke(*args: str):
    return CliRunner().invoke(check_editor, list(args))


def test_tiny_sensitive_network_is_steerable(pairs, tiny_model):
    result = invoke("--model", tiny_model, "--images", str(pairs), "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("skipped aaa-nomask: missing mask") for line in lines)
    assert [line.split()[0] for line in lines if line.startswith(("cameraman", "coffee", "median"))] == [
        "cameraman", "coffee", "median"]
    verdict = [line for line in lines if line.startswith("verdict:")]
    assert len(verdict) == 1 and verdict[0].startswith("verdict: steerable — RTB gain "), result.output
    assert "ε 0.025, 20 RTB steps, seed 0" in lines[0]


def test_mse_reference_model_is_not_steerable(pairs):
    result = invoke("--model", "reference", "--images", str(pairs), "--limit", "1", "--steps", "10")
    assert result.exit_code == 0, result.output
    assert "verdict: not steerable — RTB gain " in result.stdout
    assert "  because RTB gain " in result.stdout and "1 image(s)" in result.stdout


def test_default_images_are_the_bundled_samples(tiny_model):
    result = invoke("--model", tiny_model, "--limit", "1", "--steps", "1")
    assert result.exit_code == 0, result.output
    assert "1 image(s) from the bundled samples;" in result.stdout.splitlines()[0]
    assert any(line.startswith("astronaut ") for line in result.stdout.splitlines())


def test_parquet_catalog(pairs, tiny_model, tmp_path):
    from jobs.shard import shard

    shard(str(pairs), str(tmp_path / "shards"))
    result = invoke("--model", tiny_model, "--images", str(tmp_path / "shards"), "--limit", "1", "--steps", "1")
    assert result.exit_code == 0, result.output
    assert any(line.startswith("cameraman ") for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "0"], "--eps: eps 0.0 is out of range"),
        (["--eps", "-0.1"], "--eps: eps -0.1 is out of range"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--model", "/nonexistent/editor.pt"], "--model '/nonexistent/editor.pt' does not load: model path"),
        (["--images", "/nonexistent/catalog"], "cannot read --images '/nonexistent/catalog'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tiny_model):
    result = invoke("--model", tiny_model, *args) if "--model" not in args else invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"rtb check-editor: error: {message}"), result.stderr


def test_no_usable_pair_exits_2(tmp_path, tiny_model):
    Image.new("RGB", (64, 64)).save(tmp_path / "lonely.png")
    result = invoke("--model", tiny_model, "--images", str(tmp_path))
    assert result.exit_code == 2
    assert "has no usable image/mask pair (first: lonely: missing mask" in result.stderr


def test_a_model_that_fails_is_one_line(tmp_path, pairs):
    import torch

    class NotAnInpainter(torch.nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image[:, :2]  # two channels: the editor's output is unusable

    path = tmp_path / "broken.pt"
    torch.jit.script(NotAnInpainter()).save(str(path))
    result = invoke("--model", str(path), "--images", str(pairs), "--limit", "1", "--steps", "1")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"rtb check-editor: error: the check failed on --model '{path}': ")
    assert result.stderr.count("\n") == 1


def test_main_returns_after_a_verdict(pairs, tiny_model, capsys):
    main(["--model", tiny_model, "--images", str(pairs), "--limit", "1", "--steps", "1"])
    assert "verdict: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--eps", "0"])
    assert exit_info.value.code == 2


def test_images_from_s3(pairs, tiny_model, s3_bucket):
    import s3fs

    bucket, options = s3_bucket
    s3fs.S3FileSystem(**options).put(str(pairs), f"{bucket}/pairs", recursive=True)
    result = invoke("--model", tiny_model, "--images", f"s3://{bucket}/pairs", "--limit", "1", "--steps", "1",
                    "--s3-endpoint", options["client_kwargs"]["endpoint_url"])
    assert result.exit_code == 0, result.output
    assert f"1 image(s) from s3://{bucket}/pairs;" in result.stdout and "verdict: " in result.stdout
