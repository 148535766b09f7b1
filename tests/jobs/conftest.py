"""Fixtures for the job tests: a tiny TorchScript model, one local Ray per module, tiny catalogs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.tiny_models import build_tiny_torchscript

EPS = 0.025
LEVELS = int(np.ceil(EPS * 255))  # the L∞ bound in 8-bit levels after the PNG round trip


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random inpainter saved as TorchScript (loaded through the real ``--model FILE.pt`` path)."""
    return str(build_tiny_torchscript(tmp_path_factory.mktemp("model") / "tiny.pt"))


@pytest.fixture(scope="module")
def ray_session(s3_server):
    """One local Ray for the module (started after the S3 env is set, so workers inherit it too)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_image(seed: int, size=(56, 48), mode: str = "RGB") -> Image.Image:
    """A smooth random picture (width×height = ``size``) with a drawn shape, in ``mode``."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    rgb = np.stack([(base[c] + 80 * np.sin(x / (5 + c) + y / 7 + seed)) % 256 for c in range(3)], -1).astype(np.uint8)
    image = Image.fromarray(rgb)
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, w // 2, h // 2), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    if mode == "RGBA":
        image = image.convert("RGBA")
        alpha = np.full((h, w), 255, np.uint8)
        alpha[: h // 3, : w // 3] = 40
        image.putalpha(Image.fromarray(alpha))
    return image


def make_mask(size=(56, 48), box=None) -> Image.Image:
    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box or (w // 4, h // 4, w // 2 + 4, h // 2 + 4), fill=255)
    return mask


def good_rows(count: int = 4, prefix: str = "img") -> list[dict]:
    """Catalog rows with PNG images of a few sizes (one RGBA) and rectangle masks."""
    sizes = [(56, 48), (48, 48), (64, 40), (40, 56)]
    rows = []
    for i in range(count):
        size = sizes[i % len(sizes)]
        mode = "RGBA" if i == 1 else "RGB"
        rows.append({"id": f"{prefix}-{i}", "image": png(make_image(i, size, mode)), "mask": png(make_mask(size)),
                     "prompt": f"prompt {i}"})
    return rows
