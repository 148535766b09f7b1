from pathlib import Path

import pytest
import s3fs

from rtb.storage import fetch_to_cache, fingerprint


def test_fetch_to_cache_copies_a_directory_from_s3_once(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    source = tmp_path / "model"
    (source / "unet").mkdir(parents=True)
    (source / "model_index.json").write_text("{}")
    (source / "unet" / "w.safetensors").write_bytes(b"abc" * 100)
    fs = s3fs.S3FileSystem(**options)
    fs.put(str(source), f"{bucket}/models/model", recursive=True)

    cache = tmp_path / "cache"
    local = fetch_to_cache(f"s3://{bucket}/models/model", cache, options)
    assert (local / "unet" / "w.safetensors").read_bytes() == b"abc" * 100
    assert fingerprint(local) == fingerprint(source)
    # A second fetch reuses the completed copy, even after the remote is gone.
    fs.rm(f"{bucket}/models", recursive=True)
    assert fetch_to_cache(f"s3://{bucket}/models/model", cache, options) == local


def test_missing_uri_is_named(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    with pytest.raises(ValueError, match="nothing-here"):
        fetch_to_cache(f"s3://{bucket}/nothing-here", tmp_path, options)
    with pytest.raises(ValueError, match="no/such/dir"):
        fetch_to_cache(str(tmp_path / "no/such/dir"))


def test_fingerprint_changes_with_weights(tmp_path: Path):
    (tmp_path / "a.safetensors").write_bytes(b"1")
    before = fingerprint(tmp_path)
    (tmp_path / "a.safetensors").write_bytes(b"2")
    assert fingerprint(tmp_path) != before
