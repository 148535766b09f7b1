"""The job's stages called directly, without Ray: decode/validate → Protector(...)(batch) → write_images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pyarrow as pa
from PIL import Image

from jobs.rows import DECODED_SCHEMA, PROTECTED_SCHEMA, RESULT_SCHEMA
from jobs.stages import Protector, decode_and_validate
from jobs.writer import split_results, write_images
from rtb import ProtectConfig
from rtb.catalog import CATALOG_SCHEMA
from tests.fixtures.catalogs import LEVELS, good_rows, make_image, make_mask, png


def test_stages_without_ray(tmp_path, tiny_model):
    rows = good_rows(3) + [{"id": "broken", "image": b"\x89PNG garbage", "mask": png(make_mask()), "prompt": None},
                           {"id": "small-mask", "image": png(make_image(1)), "mask": png(make_mask((10, 10))), "prompt": None},
                           {"id": "twice", "image": png(make_image(2)), "mask": png(make_mask()), "prompt": None}]
    table = pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)

    decoded = decode_and_validate(table, duplicates=frozenset({"twice"}))
    assert decoded.schema.equals(DECODED_SCHEMA)
    assert decoded.column("id").to_pylist() == ["img-0", "img-1", "img-2", "broken", "small-mask"]
    assert decoded.column("status").to_pylist() == ["ok", "ok", "ok", "error", "error"]

    protector = Protector(model=tiny_model, config=ProtectConfig(steps=2, batch_size=2), device="cpu")
    protected = protector(decoded)
    assert protected.schema.equals(PROTECTED_SCHEMA)
    assert protected.column("status").to_pylist() == ["ok", "ok", "ok", "error", "error"]
    assert protected.column("model_fingerprint").to_pylist()[:3] == [protector.inpainter.fingerprint] * 3

    results = write_images(protected, output=str(tmp_path / "out"))
    assert results.schema.equals(RESULT_SCHEMA)
    metrics, errors = split_results(results, "r1")
    assert metrics.column("id").to_pylist() == ["img-0", "img-1", "img-2"]
    assert {e["id"]: e["stage"] for e in errors.to_pylist()} == {"broken": "validate", "small-mask": "validate"}
    assert "mask is 10×10 but image is 56×48" in errors.column("error").to_pylist()[1]
    for row, source in zip(metrics.to_pylist(), rows):
        out = Image.open(row["protected_path"])
        original = Image.open(io.BytesIO(source["image"]))
        assert out.size == original.size and out.mode == original.mode
        assert np.abs(np.asarray(out, np.int16) - np.asarray(original, np.int16)).max() <= LEVELS


def test_protector_records_a_failing_row_instead_of_raising(tiny_model):
    rows = good_rows(2)
    decoded = decode_and_validate(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA))
    # Corrupt one row's pixels after validation: the batch fails, the retry alone isolates that row.
    broken = decoded.to_pylist()
    broken[0]["pixels"] = broken[0]["pixels"][:10]
    protected = Protector(model=tiny_model, config=ProtectConfig(steps=1), device="cpu")(pa.Table.from_pylist(broken, schema=DECODED_SCHEMA))
    status = protected.to_pylist()
    assert [r["status"] for r in status] == ["error", "ok"]
    assert status[0]["stage"] == "protect" and "ValueError" in status[0]["error"]


def test_s3_retries_are_bounded_and_a_bad_setting_is_named(monkeypatch):
    from jobs.runtime import S3_ATTEMPTS, storage_options_for

    options = storage_options_for("s3://bucket/x", "http://127.0.0.1:9")
    assert options["config_kwargs"]["retries"] == {"max_attempts": S3_ATTEMPTS, "mode": "standard"}
    assert options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert storage_options_for("/local/path", None) == {}
    monkeypatch.setenv("RTB_S3_ATTEMPTS", "3")
    assert storage_options_for("s3://bucket/x", None)["config_kwargs"]["retries"]["max_attempts"] == 3
    monkeypatch.setenv("RTB_S3_ATTEMPTS", "many")
    with pytest.raises(ValueError, match="RTB_S3_ATTEMPTS must be a whole number of at least 1, got 'many'"):
        storage_options_for("s3://bucket/x", None)
