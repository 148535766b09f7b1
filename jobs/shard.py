"""``rtb shard``: turn a folder of image/mask pairs into Parquet catalog shards (the canonical input format).

    rtb shard --input ./photos/ --output s3://bucket/catalog/ --rows-per-shard 1000

Runs on one machine (no Ray): it streams the pairs in name order and keeps one shard in memory at a time.
A pair with a missing mask or an unreadable file is still written (``mask`` null), so the protection job
accounts for it as an error row instead of it vanishing here.
"""

from __future__ import annotations

from rtb import catalog


def shard(input_uri: str, output_uri: str, rows_per_shard: int = 1000, s3_endpoint: str | None = None) -> list[str]:
    """Write the pairs under ``input_uri`` as ``part-NNNNN.parquet`` under ``output_uri``; returns the URIs."""
    from jobs import reader
    from jobs.runtime import storage_options_for

    # 1. Check inputs.
    if rows_per_shard < 1:
        raise ValueError(f"--rows-per-shard must be at least 1, got {rows_per_shard}")
    in_options = storage_options_for(input_uri, s3_endpoint)
    out_options = storage_options_for(output_uri, s3_endpoint)
    source = reader.open_catalog(input_uri, "pairs", in_options)
    # 2. Stream pairs into shards, in id order.
    return catalog.write_shards(reader.iter_rows(source, in_options), output_uri, rows_per_shard, out_options)
