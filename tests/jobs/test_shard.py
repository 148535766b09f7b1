"""``rtb shard``: a folder of pairs becomes Parquet catalog shards (no Ray)."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
from click.testing import CliRunner

from jobs.cli import cli
from rtb import catalog
from tests.fixtures.catalogs import good_rows


def test_shard_turns_pairs_into_parquet_and_keeps_broken_pairs(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    rows = good_rows(5, prefix="p")
    folder = tmp_path / "pairs"
    folder.mkdir()
    for row in rows:
        (folder / f"{row['id']}.png").write_bytes(row["image"])
        (folder / f"{row['id']}_mask.png").write_bytes(row["mask"])
        (folder / f"{row['id']}.txt").write_text(row["prompt"] + "\n")
    (folder / "orphan.jpg").write_bytes(rows[0]["image"])  # no mask: kept with a null mask

    result = CliRunner().invoke(cli, ["shard", "--input", str(folder), "--output", f"s3://{bucket}/cat", "--rows-per-shard", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 shard(s)" in result.output

    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    paths = sorted(fs.find(f"{bucket}/cat"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["part-00000.parquet", "part-00001.parquet"]
    table = [r for p in paths for r in pq.read_table(io.BytesIO(fs.cat_file(p))).to_pylist()]
    by_id = {r["id"]: r for r in table}
    assert sorted(by_id) == ["orphan"] + [r["id"] for r in rows]
    for row in rows:
        assert (by_id[row["id"]]["image"], by_id[row["id"]]["mask"], by_id[row["id"]]["prompt"]) == (row["image"], row["mask"], row["prompt"])
    assert by_id["orphan"]["mask"] is None and by_id["orphan"]["image"] == rows[0]["image"]


def test_shard_names_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("nothing")
    result = CliRunner().invoke(cli, ["shard", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no image/mask pairs" in result.output
