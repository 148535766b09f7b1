"""benchmarks/reference_quality.py: hole PSNR and texture of an inpainter on held-out images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from rtb.reference.lama import LamaConfig, LamaGenerator, save_lama_weights

REPO = Path(__file__).resolve().parents[2]
# A generator small enough for a CPU test: 1/4 resolution, one FFC block.
TINY = LamaConfig(stem_width=8, down_widths=(16, 32), blocks=1)


def test_benchmark_reports_psnr_and_texture(tmp_path, capsys):
    net = LamaGenerator(TINY).eval()
    weights = tmp_path / "tiny.safetensors"
    save_lama_weights(net, weights)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(images / f"{i}.png")
    spec = importlib.util.spec_from_file_location("reference_quality", REPO / "benchmarks" / "reference_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--images", str(images), "--size", "64", "--model", str(weights)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"hole PSNR: {weights} ") and lines[-1].endswith("(2 images)")
    assert lines[-2].startswith(f"texture (fill gradient / truth gradient): {weights} ")
    # The texture figure of mean fill is well below 1 (a flat fill); the ground truth against itself would be 1.
    assert float(lines[-2].split("mean-fill ")[1]) < 0.8
