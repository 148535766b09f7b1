"""``rtb shard``: turn a folder of image/mask pairs into Parquet catalog shards (the canonical input format).

    rtb shard --input ./photos/ --output s3://bucket/catalog/ --rows-per-shard 1000

Runs on one machine (no Ray): it streams the pairs in name order and keeps one shard in memory at a time.
A pair with a missing mask or an unreadable file is still written (``mask`` null), so the protection job
accounts for it as an error row instead of it vanishing here.
"""

from __future__ import annotations

from collections.abc import Iterator

from rtb import catalog


def pair_rows(input_uri: str, storage_options: dict) -> Iterator[dict]:
    """Catalog rows ``{id, image, mask, prompt}`` of a pairs folder, in id order."""
    files = catalog.list_files(input_uri, storage_options)
    listed = catalog.list_pairs(files)
    if not listed:
        raise ValueError(f"no image/mask pairs (NAME.png + NAME_mask.png) under {input_uri!r}")
    for row in listed:
        yield catalog.read_pair(row, storage_options)


def shard(input_uri: str, output_uri: str, rows_per_shard: int = 1000, s3_endpoint: str | None = None) -> list[str]:
    """Write the pairs under ``input_uri`` as ``part-NNNNN.parquet`` under ``output_uri``; returns the URIs."""
    from jobs.storage import storage_options_for

    # 1. Check inputs.
    if rows_per_shard < 1:
        raise ValueError(f"--rows-per-shard must be at least 1, got {rows_per_shard}")
    in_options = storage_options_for(input_uri, s3_endpoint)
    out_options = storage_options_for(output_uri, s3_endpoint)
    # 2. Stream pairs into shards.
    return catalog.write_shards(pair_rows(input_uri, in_options), output_uri, rows_per_shard, out_options)
