"""Catalog I/O without Ray: safe ids, format detection, pairs, webdataset tars and Parquet shards."""

from __future__ import annotations

import io
import tarfile

import pyarrow.parquet as pq
import pytest

from rtb import catalog


@pytest.mark.parametrize("value", ["a", "img-001", "x.y_z", "dir/sub/name", "A9"])
def test_check_id_accepts_safe_names(value):
    assert catalog.check_id(value) == value


@pytest.mark.parametrize("value", ["", "../x", "/abs", "a/../b", "a//b", ".hidden", "a/", "back\\slash", "sp ace",
                                   "new\nline", "x" * 201, None, 7])
def test_check_id_refuses_names_that_could_escape_or_break_a_prefix(value):
    with pytest.raises(ValueError, match="id"):
        catalog.check_id(value)


def test_join_keeps_the_protocol():
    assert catalog.join("s3://b/p/", "images", "a.png") == "s3://b/p/images/a.png"
    assert catalog.join("/tmp/out", "runs", "r.json") == "/tmp/out/runs/r.json"


def test_detect_format():
    assert catalog.detect_format(["s3://b/c/part-0.parquet", "s3://b/c/_SUCCESS"]) == "parquet"
    assert catalog.detect_format(["/d/shard-000.tar"]) == "webdataset"
    assert catalog.detect_format(["/d/a.jpg", "/d/a_mask.png"]) == "pairs"
    with pytest.raises(ValueError, match="found no .parquet shards"):
        catalog.detect_format(["/d/readme.md"], "/d")
    with pytest.raises(ValueError, match="parquet and webdataset"):
        catalog.detect_format(["/d/a.parquet", "/d/b.tar"], "/d")


def test_list_pairs_reports_missing_and_ambiguous_files():
    rows = {r["id"]: r for r in catalog.list_pairs(
        ["/d/a.png", "/d/a_mask.png", "/d/a.txt", "/d/b.jpg", "/d/c_mask.png", "/d/e.png", "/d/e.webp", "/d/e_mask.png"]
    )}
    assert rows["a"]["read_error"] is None and rows["a"]["prompt_path"] == "/d/a.txt"
    assert "missing mask: expected b_mask.png next to b.jpg" == rows["b"]["read_error"]
    assert "has no image" in rows["c"]["read_error"]
    assert "has 2 images" in rows["e"]["read_error"]


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_read_tar_groups_members_by_key():
    data = _tar({"k1.jpg": b"I1", "k1.mask.png": b"M1", "k1.txt": b" a prompt \n", "k2.png": b"I2",
                 "dir/k3.mask.png": b"M3", "notes.json": b"{}"})
    rows = {r["id"]: r for r in catalog.read_tar(data, "s3://b/shard.tar")}
    assert set(rows) == {"k1", "k2", "dir/k3"}
    assert (rows["k1"]["image"], rows["k1"]["mask"], rows["k1"]["prompt"], rows["k1"]["read_error"]) == (b"I1", b"M1", "a prompt", None)
    assert rows["k2"]["read_error"] == "missing mask: expected k2.mask.png in shard.tar"
    assert "has a mask but no image" in rows["dir/k3"]["read_error"]
    assert catalog.tar_ids(data) == ["k1", "k2", "dir/k3"]


def test_read_tar_turns_a_corrupt_shard_into_one_error_row():
    rows = list(catalog.read_tar(b"definitely not a tar archive" * 40, "bad.tar"))
    assert len(rows) == 1 and "not a readable tar" in rows[0]["read_error"]


def test_write_shards_round_trip_on_memory_filesystem():
    rows = [{"id": f"r{i}", "image": bytes([i]), "mask": b"m", "prompt": None if i % 2 else "p"} for i in range(5)]
    written = catalog.write_shards(iter(rows), "memory://catalog-test/shards", rows_per_shard=2)
    assert [w.rsplit("/", 1)[1] for w in written] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    fs, _ = catalog.url_to_fs("memory://catalog-test")
    tables = [pq.read_table(io.BytesIO(fs.cat_file(catalog.url_to_fs(w)[1]))) for w in written]
    assert all(t.schema.equals(catalog.CATALOG_SCHEMA) for t in tables)
    assert [r for t in tables for r in t.to_pylist()] == rows
    files = catalog.list_files("memory://catalog-test/shards")
    assert catalog.detect_format(files) == "parquet" and len(catalog.shard_files(files, "parquet")) == 3
    with pytest.raises(ValueError, match="rows_per_shard must be at least 1, got 0"):
        catalog.write_shards(rows, "memory://catalog-test/x", rows_per_shard=0)


def test_list_files_names_a_missing_input():
    with pytest.raises(ValueError, match="does not exist"):
        catalog.list_files("memory://catalog-test/nothing-here")
