"""Catalogs without masks: ``rtb masks`` and ``rtb protect --masks auto`` over the S3 API server on loopback with a
real local Ray and the real offline detectors, on a bundled photo with a known face and a drawn caption."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from jobs.cli import cli
from jobs.evaluate import main as evaluate_main
from jobs.masks import MasksConfig
from jobs.masks import run as run_masks
from jobs.protect import JobConfig, run
from rtb import catalog
from tests.fixtures.catalogs import make_mask, png
from tests.fixtures.samples import SAMPLES

pytestmark = pytest.mark.usefixtures("ray_session")
SIZE = 160


def face_photo() -> Image.Image:
    return Image.open(SAMPLES / "astronaut.png").convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)


def caption() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (236, 228, 210))
    ImageDraw.Draw(image).text((10, 60), "SALE 50%", fill=(20, 20, 20), font=ImageFont.load_default(size=34))
    return image


def plain() -> Image.Image:
    """A smooth gradient: nothing to find."""
    return Image.linear_gradient("L").resize((SIZE, SIZE)).convert("RGB")


def put_catalog(fs, prefix: str) -> None:
    """A pairs catalog: three images without masks (face, caption, plain) and one with its own mask."""
    for name, image in (("face", face_photo()), ("caption", caption()), ("plain", plain()), ("own", plain())):
        fs.pipe_file(f"{prefix}/{name}.png", png(image))
    fs.pipe_file(f"{prefix}/own_mask.png", png(make_mask((SIZE, SIZE))))


def read_folder(fs, path: str) -> list[dict]:
    return [row for f in sorted(fs.glob(f"{path}/*.parquet")) for row in pq.read_table(io.BytesIO(fs.cat_file(f))).to_pylist()]


def test_rtb_masks_writes_a_catalog_protect_reads_as_it_is(s3_bucket, tiny_model):
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    put_catalog(fs, f"{bucket}/uploads")
    manifest = run_masks(MasksConfig(input=f"s3://{bucket}/uploads", output=f"s3://{bucket}/found", actors=1))
    assert manifest["counts"] == {"read": 4, "with_region": 3, "no_region": 1, "failed": 0}

    # 1. The catalog: the image bytes untouched, the found masks; the own mask kept as it was.
    rows = {r["id"]: r for r in read_folder(fs, f"{bucket}/found/catalog")}
    assert sorted(rows) == ["caption", "face", "own"]
    assert rows["face"]["image"] == fs.cat_file(f"{bucket}/uploads/face.png")
    assert rows["own"]["mask"] == fs.cat_file(f"{bucket}/uploads/own_mask.png")
    found = np.asarray(Image.open(io.BytesIO(rows["face"]["mask"]))) > 0
    # The known face: the bundled sample's hand-drawn mask, at SIZE. A region counts as found when the mask covers
    # at least 70 % of its box (the recall rule of docs/detection.md); the mask is not the whole photo either.
    x0, y0, x1, y1 = (round(v * SIZE / 256) for v in Image.open(SAMPLES / "astronaut_mask.png").getbbox())
    assert found[y0:y1, x0:x1].mean() >= 0.7 and found.mean() < 0.5

    # 2. Detections and the id without a region, each id in exactly one of catalog/ and errors/.
    detections = read_folder(fs, f"{bucket}/found/detections")
    assert {(d["id"], d["kind"]) for d in detections} >= {("face", "face"), ("caption", "text")}
    assert all(d["detector"] and d["detector_version"] for d in detections)
    errors = read_folder(fs, f"{bucket}/found/errors")
    assert [(e["id"], e["stage"]) for e in errors] == [("plain", "detect")] and "no region" in errors[0]["error"]

    # 3. rtb protect reads it as it is.
    protected = run(JobConfig(input=f"s3://{bucket}/found/catalog", output=f"s3://{bucket}/protected",
                              model=tiny_model, steps=1, run_id="p1"))
    assert (protected["counts"]["protected"], protected["counts"]["failed"]) == (3, 0)
    # ... and rtb evaluate reads its masks like any (the face, its found mask as the malicious hole).
    evaluate_main(["--catalog", f"s3://{bucket}/found/catalog", "--protected", f"s3://{bucket}/protected",
                   "--output", f"s3://{bucket}/eval", "--model", tiny_model, "--runner", "local", "--limit", "1",
                   "--sample", "0"])
    summary = json.loads(fs.cat_file(f"{bucket}/eval/summary.json"))
    assert summary["images"] == 1 and not summary["failed_images"] and summary["arms"]["protected"]["exact"]["N"] == 1
    # 4. A second run into the same output is refused in one line.
    again = CliRunner().invoke(cli, ["masks", "--input", f"s3://{bucket}/uploads", "--output", f"s3://{bucket}/found"])
    assert again.exit_code == 2 and "is not empty" in again.output


def test_protect_with_auto_masks_finds_regions_and_accounts_for_the_row_without_one(s3_bucket, tiny_model):
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    put_catalog(fs, f"{bucket}/uploads")

    def job(run_id):
        return run(JobConfig(input=f"s3://{bucket}/uploads", output=f"s3://{bucket}/out", model=tiny_model, steps=1,
                             batch_size=4, run_id=run_id, masks="auto:faces,text"))

    counts = job("a1")["counts"]
    assert (counts["protected"], counts["no_region"], counts["failed"], counts["ids"]) == (3, 1, 0, 4)
    errors = read_folder(fs, f"{bucket}/out/errors")
    assert [(e["id"], e["stage"]) for e in errors] == [("plain", "detect")] and "no region" in errors[0]["error"]
    images = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/images"))
    assert images == ["caption.png", "face.png", "own.png"]
    # The same images and detection: nothing to find or protect again.
    again = job("a2")["counts"]
    assert (again["unchanged"], again["protected"], again["no_region"]) == (3, 0, 1)


@pytest.mark.parametrize("command", [["masks"], ["protect", "--masks", "auto:faces"]], ids=["masks", "protect"])
def test_detection_without_its_extra_fails_at_start_naming_it(tmp_path, monkeypatch, tiny_model, command):
    folder = tmp_path / "uploads"
    folder.mkdir()
    plain().save(folder / "plain.png")
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError: the extra is not installed
    result = CliRunner().invoke(cli, [*command, "--input", str(folder), "--output", str(tmp_path / "out"),
                                      *(["--model", tiny_model] if command[0] == "protect" else [])])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "needs the optional extra rtb[detect]" in line and "pip install 'rtb[detect]'" in line
    assert len(line.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_masks_flag_that_does_not_parse_is_refused_naming_it(tmp_path):
    result = CliRunner().invoke(cli, ["protect", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                      "--masks", "auto:logos"])
    assert result.exit_code == 2 and "--masks 'auto:logos'" in result.output and "'logos'" in result.output
    assert not (tmp_path / "o").exists()
