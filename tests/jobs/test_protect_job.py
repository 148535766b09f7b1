"""The protection job end to end on a local Ray, against the loopback S3 server and the local filesystem."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.protect import JobConfig, JobError, run
from rtb import catalog
from jobs.rows import ERRORS_SCHEMA, METRICS_SCHEMA
from tests.fixtures.catalogs import EPS, LEVELS, good_rows, make_image, make_mask, png

pytestmark = pytest.mark.usefixtures("ray_session")


def read_parquet_dir(fs, folder: str, run_id: str) -> pa.Table | None:
    paths = sorted(fs.glob(f"{folder}/{run_id}-*.parquet"))
    if not paths:
        return None
    return pa.concat_tables([pq.read_table(io.BytesIO(fs.cat_file(p))) for p in paths])


def check_protected(fs, out_path: str, rows: list[dict], manifest: dict, run_id: str) -> None:
    """Byte-level checks of images/, metrics/ and the manifest for rows that were all protected."""
    sources = {r["id"]: r for r in rows}
    metrics = read_parquet_dir(fs, f"{out_path}/metrics", run_id)
    assert metrics.schema.equals(METRICS_SCHEMA)
    assert sorted(metrics.column("id").to_pylist()) == sorted(sources)
    for row in metrics.to_pylist():
        # Every figure is there; grey_preserved only for a grey source (null for a colour one).
        assert all(value is not None for key, value in row.items() if key != "grey_preserved"), row
        assert (row["grey_preserved"] is None) == (not row["source_grey"]), row
        assert (row["run_id"], row["status"], row["method"], row["steps"]) == (run_id, "ok", "rtb", 2)
        assert row["eps"] == pytest.approx(EPS)
        assert row["model_fingerprint"] == manifest["model_fingerprint"]
        assert row["config_hash"] == manifest["config_hash"]
        source_bytes = sources[row["id"]]["image"]
        assert row["source_sha256"] == hashlib.sha256(source_bytes).hexdigest()
        data = fs.cat_file(catalog.url_to_fs(row["protected_path"])[1])
        assert row["protected_path"].endswith(f"/images/{row['id']}.png")
        assert row["protected_sha256"] == hashlib.sha256(data).hexdigest()
        protected = Image.open(io.BytesIO(data))
        assert protected.format == "PNG"
        source = Image.open(io.BytesIO(source_bytes))
        assert protected.size == source.size == (row["width"], row["height"])
        assert protected.mode == source.mode == row["mode"]
        diff = np.abs(np.asarray(protected, np.int16) - np.asarray(source, np.int16))
        if source.mode == "RGBA":
            assert np.array_equal(diff[..., 3], np.zeros_like(diff[..., 3])), "alpha must be kept exactly"
        assert diff.max() <= LEVELS
        assert row["linf"] <= EPS + 1e-6
        assert 0 < row["mask_fraction"] < 1
        assert np.isfinite([row["psnr"], row["ssim"], row["loss_implant"], row["loss_hide"], row["seconds"]]).all()
    counts = manifest["counts"]
    assert (counts["read"], counts["protected"], counts["failed"]) == (len(rows), len(rows), 0)
    stored = json.loads(fs.cat_file(f"{out_path}/runs/{run_id}.json"))
    assert stored["counts"] == counts and stored["run_id"] == run_id
    assert stored["versions"]["ray"] and (stored["images_per_second"] > 0) == (counts["protected_now"] > 0)
    assert read_parquet_dir(fs, f"{out_path}/errors", run_id) is None


def test_parquet_catalog_on_s3(s3_bucket, tiny_model):
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    rows = good_rows(4)
    catalog.write_shards(rows, f"s3://{bucket}/catalog", rows_per_shard=3, storage_options=options)
    manifest = run(JobConfig(input=f"s3://{bucket}/catalog/", output=f"s3://{bucket}/out", model=tiny_model,
                             steps=2, batch_size=2, run_id="pq", s3_endpoint=options["client_kwargs"]["endpoint_url"]))
    assert manifest["format"] == "parquet"
    check_protected(fs, f"{bucket}/out", rows, manifest, "pq")


def test_webdataset_catalog_on_s3_with_limit(s3_bucket, tiny_model):
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    rows = good_rows(4, prefix="wds")
    for shard in range(2):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for row in rows[2 * shard: 2 * shard + 2]:
                for name, payload in ((f"{row['id']}.png", row["image"]), (f"{row['id']}.mask.png", row["mask"]),
                                      (f"{row['id']}.txt", row["prompt"].encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
        fs.pipe_file(f"{bucket}/wds/shard-{shard:03d}.tar", buffer.getvalue())
    manifest = run(JobConfig(input=f"s3://{bucket}/wds", output=f"s3://{bucket}/out", model=tiny_model,
                             steps=2, batch_size=2, run_id="wds", limit=3, augment_holes=2))
    assert manifest["format"] == "webdataset"
    assert manifest["protect_config"]["augment_holes"] == 2  # the lever reaches the actors' config
    check_protected(fs, f"{bucket}/out", rows[:3], manifest, "wds")


def test_pairs_catalog_on_s3_and_rerun_resumes_without_redoing(s3_bucket, tiny_model):
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    rows = good_rows(3, prefix="pair")
    for row in rows:
        fs.pipe_file(f"{bucket}/pairs/{row['id']}.png", row["image"])
        fs.pipe_file(f"{bucket}/pairs/{row['id']}_mask.png", row["mask"])
    config = JobConfig(input=f"s3://{bucket}/pairs", output=f"s3://{bucket}/out", model=tiny_model, steps=2,
                       batch_size=2, run_id="pairs")
    first = run(config)
    assert first["format"] == "pairs"
    check_protected(fs, f"{bucket}/out", rows, first, "pairs")
    images = {p: fs.cat_file(p) for p in fs.find(f"{bucket}/out/images")}
    second = run(config)  # same run id: everything was committed, so nothing is redone or duplicated
    check_protected(fs, f"{bucket}/out", rows, second, "pairs")
    assert (second["counts"]["resumed"], second["counts"]["protected_now"]) == (3, 0)
    assert {p: fs.cat_file(p) for p in fs.find(f"{bucket}/out/images")} == images  # deterministic bytes


def test_mixed_catalog_accounts_for_every_id(tmp_path, tiny_model):
    size = (56, 48)
    good = good_rows(2, prefix="good")
    rows = good + [
        {"id": "bad-bytes", "image": b"this is not an image", "mask": png(make_mask(size)), "prompt": None},
        {"id": "wrong-size", "image": png(make_image(5, size)), "mask": png(make_mask((32, 32))), "prompt": None},
        {"id": "empty-mask", "image": png(make_image(6, size)), "mask": png(Image.new("L", size, 0)), "prompt": None},
        {"id": "no-mask", "image": png(make_image(7, size)), "mask": None, "prompt": None},
        {"id": "dup", "image": png(make_image(8, size)), "mask": png(make_mask(size)), "prompt": None},
        {"id": "dup", "image": png(make_image(9, size)), "mask": png(make_mask(size)), "prompt": None},
        {"id": "../x", "image": png(make_image(10, size)), "mask": png(make_mask(size)), "prompt": None},
        {"id": "/abs", "image": png(make_image(11, size)), "mask": png(make_mask(size)), "prompt": None},
    ]
    catalog.write_shards(rows, str(tmp_path / "in"), rows_per_shard=4)
    out = tmp_path / "deep" / "out"
    config = JobConfig(input=str(tmp_path / "in"), output=str(out), model=tiny_model, steps=2, batch_size=3, run_id="mixed")
    for attempt in range(2):  # the second run with the same run id must not duplicate anything
        manifest = run(config)
        fs = catalog.url_to_fs(str(out))[0]
        metrics = read_parquet_dir(fs, str(out / "metrics"), "mixed")
        errors = read_parquet_dir(fs, str(out / "errors"), "mixed")
        assert errors.schema.equals(ERRORS_SCHEMA)
        ids = metrics.column("id").to_pylist() + errors.column("id").to_pylist()
        assert sorted(ids) == sorted({r["id"] for r in rows}), "every distinct id exactly once"
        assert sorted(metrics.column("id").to_pylist()) == ["good-0", "good-1"]
        reasons = {r["id"]: (r["stage"], r["error"]) for r in errors.to_pylist()}
        assert "not a decodable image" in reasons["bad-bytes"][1]
        assert "mask is 32×32 but image is 56×48" in reasons["wrong-size"][1]
        assert "mask is empty" in reasons["empty-mask"][1]
        assert "missing mask" in reasons["no-mask"][1]
        assert "occurs 2 times" in reasons["dup"][1]
        assert "not a safe object name" in reasons["../x"][1] and "not a safe object name" in reasons["/abs"][1]
        assert {r["run_id"] for r in errors.to_pylist()} == {"mixed"}
        counts = manifest["counts"]
        assert counts == {"read": 10, "ids": 9, "protected": 2, "failed": 7, "unchanged": 0, "missing": 0, "pruned": 0,
                          "resumed": 0 if attempt == 0 else 8, "protected_now": 2 if attempt == 0 else 0,
                          "duplicate_ids": 1, "duplicate_rows": 2}
    written = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, files in os.walk(tmp_path) for f in files)
    outside = [p for p in written if not p.startswith(("in/", "deep/out/"))]
    assert outside == [], f"written outside --output: {outside}"
    assert sorted(os.listdir(out / "images")) == ["good-0.png", "good-1.png"]


def test_model_that_does_not_load_fails_with_one_line(tmp_path):
    from click.testing import CliRunner

    from jobs.cli import cli

    catalog.write_shards(good_rows(1), str(tmp_path / "in"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torchscript archive")
    result = CliRunner().invoke(cli, ["protect", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                      "--model", str(broken), "--steps", "1"])
    assert result.exit_code == 2
    message = [line for line in result.output.splitlines() if line.startswith("rtb protect: error:")]
    assert len(message) == 1 and "does not load" in message[0] and "not a loadable TorchScript inpainter" in message[0]
    assert "Traceback" not in result.output


def test_cli_refuses_bad_arguments_and_missing_input(tmp_path, tiny_model):
    from click.testing import CliRunner

    from jobs.cli import cli

    runner = CliRunner()
    missing = runner.invoke(cli, ["protect", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in missing.output and "Traceback" not in missing.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no catalog here")
    unknown = runner.invoke(cli, ["protect", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
    assert unknown.exit_code == 2 and "cannot tell the input format" in unknown.output
    bad = runner.invoke(cli, ["protect", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o"),
                              "--batch-size", "0", "--model", tiny_model])
    assert bad.exit_code == 2 and "--batch-size must be at least 1, got 0" in bad.output
    inside = runner.invoke(cli, ["protect", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "empty" / "out")])
    assert inside.exit_code == 2 and "must not be --input or inside it" in inside.output
    catalog.write_shards(good_rows(1), str(tmp_path / "in"))
    vae = runner.invoke(cli, ["protect", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                              "--method", "photoguard-encoder", "--model", tiny_model])
    assert vae.exit_code == 2 and "needs a diffusers model directory" in vae.output
    method = runner.invoke(cli, ["protect", "--input", "x", "--output", "y", "--method", "magic"])
    assert method.exit_code == 2 and "magic" in method.output
    augment = runner.invoke(cli, ["protect", "--input", "x", "--output", "y", "--augment-holes", "17"])
    assert augment.exit_code == 2 and "--augment-holes" in augment.output and "17" in augment.output
    with pytest.raises(JobError, match="--augment-holes must be an integer in \\[0, 16\\], got -1"):
        run(JobConfig(input=str(tmp_path / "in"), output=str(tmp_path / "o"), augment_holes=-1))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("output_format", ["png", "jpeg:90"])
def test_grey_photos_stay_grey_and_every_row_says_how_visible_its_protection_is(tmp_path, tiny_model, output_format):
    """The defaults (--budget jnd --colour luma-chroma): a grey photo, stored as L or as RGB with R = G = B, comes back
    exactly grey; every metrics row carries the CIEDE2000 figures and the grey flags (docs/imperceptibility.md)."""
    grey = make_image(3, (48, 48)).convert("L")
    mask = png(make_mask((48, 48)))
    rows = [{"id": "grey-l", "image": png(grey), "mask": mask, "prompt": None},
            {"id": "grey-rgb", "image": png(grey.convert("RGB")), "mask": mask, "prompt": None},
            {"id": "colour", "image": png(make_image(4, (48, 48))), "mask": mask, "prompt": None}]
    catalog.write_shards(rows, str(tmp_path / "in"))
    manifest = run(JobConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=tiny_model, steps=2,
                             run_id="grey", output_format=output_format))
    assert manifest["counts"]["protected"] == 3
    metrics = {r["id"]: r for r in pq.read_table(str(tmp_path / "out" / "metrics")).to_pylist()}
    for image_id in ("grey-l", "grey-rgb"):
        stored = np.asarray(Image.open(metrics[image_id]["protected_path"]).convert("RGB")).astype(int)
        assert (stored[..., 0] == stored[..., 1]).all() and (stored[..., 1] == stored[..., 2]).all(), image_id
        assert metrics[image_id]["source_grey"] and metrics[image_id]["grey_preserved"]
    assert not metrics["colour"]["source_grey"] and metrics["colour"]["grey_preserved"] is None
    for row in metrics.values():
        assert 0 < row["bound_mean"] <= EPS and 0 <= row["delta_e_mean"] <= row["delta_e_p95"]
        assert 0 <= row["delta_e_above_jnd"] <= 1
