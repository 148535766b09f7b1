"""The demo's malicious edits and contact sheet, on two small samples and the tiny sensitive network (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jobs.demo import SAMPLES, demo_sheet, malicious_edits, read_samples
from rtb.evaluation.sheets import DEMO_LAYOUT, small_copy

SHEET_FOOTER, SHEET_GAP, SHEET_HEADER, SHEET_LABEL_WIDTH = (DEMO_LAYOUT.footer, DEMO_LAYOUT.gap, DEMO_LAYOUT.header,
                                                            DEMO_LAYOUT.label_width)
from rtb import ProtectConfig, load_inpainter, protect
from tests.fixtures.samples import small_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def test_contact_sheet_of_the_malicious_edits(tiny_model, tmp_path):
    # 1. A pairs catalog of two downscaled samples (different heights) and their RTB-protected images.
    images, masks, ids = small_samples(ids=("cameraman", "coffee"), side=96)
    (tmp_path / "catalog").mkdir()
    for image, mask, image_id in zip(images, masks, ids):
        image.save(tmp_path / "catalog" / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "catalog" / f"{image_id}_mask.png")
    editor = load_inpainter(tiny_model, device="cpu")
    result = protect(images, masks, model=editor, config=ProtectConfig(eps=0.025, steps=10))
    (tmp_path / "out" / "images").mkdir(parents=True)
    for image, image_id in zip(result.images, ids):
        image.save(tmp_path / "out" / "images" / f"{image_id}.png")

    # 2. The edits: same hole and seed for both; on this sensitive network the protected edit differs.
    rows = malicious_edits(editor, read_samples(tmp_path / "catalog", tmp_path / "out", ids))
    assert [r["id"] for r in rows] == ids
    for row, mask in zip(rows, masks):
        assert np.array_equal(row["hole"].numpy() > 0.5, mask)
        outside = ~mask
        assert np.allclose(row["clean_edit"].numpy()[:, outside], row["source"].numpy()[:, outside])  # composited
        assert row["hole_ssim"] < 0.99
    again = malicious_edits(editor, read_samples(tmp_path / "catalog", tmp_path / "out", ids))
    assert all(a["hole_ssim"] == b["hole_ssim"] for a, b in zip(rows, again))

    # 3. The sheet: one row per sample (each at its own height), five columns, labels, yellow hole outlines.
    sheet = demo_sheet(rows, footer="editor: tiny")
    heights = [r["source"].shape[-2] for r in rows]
    left = SHEET_LABEL_WIDTH
    assert sheet.width == left + 5 * (96 + SHEET_GAP)
    assert sheet.height == SHEET_HEADER + sum(heights) + SHEET_GAP * len(rows) + SHEET_FOOTER
    pixels = np.asarray(sheet)
    assert (pixels[:SHEET_HEADER, left:] < 128).any()  # column labels
    assert (pixels[SHEET_HEADER:, :left] < 128).any()  # row labels
    yellow = (pixels == (255, 255, 0)).all(axis=-1)
    edits = left + 3 * (96 + SHEET_GAP)
    assert yellow[:, edits:].sum() > 2 * yellow[:, :edits].sum()  # outlines on the two edits

    # 4. The small copy for docs: downscaled, palette PNG.
    small_copy(sheet, tmp_path / "small.png", scale=0.5)
    with Image.open(tmp_path / "small.png") as small:
        assert small.mode == "P" and small.size == (round(sheet.width / 2), round(sheet.height / 2))


def test_demo_reads_the_bundled_samples():
    assert {p.name for p in SAMPLES.glob("*_mask.png")} >= {"astronaut_mask.png", "poster_mask.png"}
