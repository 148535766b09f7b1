"""Catalogs in: the files and format at a URI, the catalog as a Ray dataset, its id column in one pass, and the
same rows as a plain iterator (no Ray) for the small commands (``rtb evaluate --runner local``, ``rtb
check-editor``, ``rtb shard``).

Rows are ``{id, image, mask, prompt[, read_error]}`` (:mod:`rtb.catalog`): a row that cannot be read keeps its id
and carries a ``read_error`` instead of failing its shard.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from jobs.runtime import arrow_filesystem, to_fs_paths
from rtb import catalog

# Columns a Parquet catalog must have to be protected; one whose masks are to be found needs no mask column.
PROTECT_COLUMNS = ("id", "image", "mask")
DETECT_COLUMNS = ("id", "image")


@dataclass(frozen=True)
class Catalog:
    """A catalog found at a URI: its files and its format."""

    # The URI given (prefix or file).
    uri: str
    # Every file under it, sorted URIs.
    files: tuple[str, ...]
    # parquet, webdataset or pairs.
    format: str

    @property
    def shards(self) -> list[str]:
        """The Parquet or tar shards (empty for pairs)."""
        return [] if self.format == "pairs" else catalog.shard_files(list(self.files), self.format)


def open_catalog(uri: str, fmt: str, storage_options: dict, columns=PROTECT_COLUMNS) -> Catalog:
    """List ``uri`` and decide its format (``fmt`` ``auto`` detects it); ``ValueError`` naming what is wrong:
    nothing there, no shards, or a Parquet shard without one of ``columns``."""
    files = catalog.list_files(uri, storage_options)
    fmt = catalog.detect_format(files, uri) if fmt == "auto" else fmt
    found = Catalog(uri=uri, files=tuple(files), format=fmt)
    if fmt in ("parquet", "webdataset") and not found.shards:
        raise ValueError(f"no {'.parquet' if fmt == 'parquet' else '.tar'} shards under {uri!r}")
    if fmt == "pairs" and not catalog.list_pairs(files):
        raise ValueError(f"no image/mask pairs (NAME.png + NAME_mask.png) under {uri!r}")
    if fmt == "parquet":
        check_parquet_columns(found.shards[0], storage_options, columns)
    return found


def check_parquet_columns(path: str, storage_options: dict, columns=PROTECT_COLUMNS) -> None:
    """``ValueError`` when a catalog shard lacks one of ``columns``."""
    import pyarrow.parquet as pq

    fs, fs_path = catalog.url_to_fs(path, storage_options)
    with fs.open(fs_path, "rb") as f:
        names = pq.read_schema(f).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"catalog shard {path!r} has no {', '.join(missing)} column (it has {', '.join(names)})")


# ----------------------------------------------------------------------------------------------------------
# With Ray
# ----------------------------------------------------------------------------------------------------------


def read_pair_rows(row: dict, storage_options: dict) -> dict:
    """Ray ``map``: a listed pair → ``{id, image, mask, prompt, read_error}`` with the bytes fetched."""
    return catalog.read_pair(row, storage_options)


def read_tar_rows(row: dict, require_mask: bool = True) -> list[dict]:
    """Ray ``flat_map``: one tar shard's bytes → one row per key."""
    return list(catalog.read_tar(row["bytes"], row["path"], require_mask=require_mask))


def read_catalog(source: Catalog, storage_options: dict, ids_only: bool = False, require_mask: bool = True):
    """The catalog as a Ray dataset of ``{id, image, mask, prompt[, read_error]}`` (or just ``{id}``); with
    ``require_mask`` False a row without a mask is no read error (its mask is null: it is to be found)."""
    import ray

    if source.format == "parquet":
        ds = ray.data.read_parquet(to_fs_paths(source.shards, storage_options),
                                   filesystem=arrow_filesystem(source.shards[0], storage_options))
        return ds.select_columns(["id"]) if ids_only else ds  # projection is pushed down into the read
    if source.format == "webdataset":
        ds = ray.data.read_binary_files(to_fs_paths(source.shards, storage_options),
                                        filesystem=arrow_filesystem(source.shards[0], storage_options), include_paths=True)
        if ids_only:
            return ds.flat_map(lambda r: [{"id": i} for i in catalog.tar_ids(r["bytes"], r["path"])])
        return ds.flat_map(read_tar_rows, fn_kwargs={"require_mask": require_mask})
    ds = ray.data.from_items(catalog.list_pairs(list(source.files), require_mask=require_mask))
    if ids_only:
        return ds.map(lambda r: {"id": r["id"]})
    return ds.map(read_pair_rows, fn_kwargs={"storage_options": storage_options})


def id_hash(value) -> int:
    """8 bytes of blake2b of an id: what the driver keeps per row to find duplicates."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")


def scan_ids(source: Catalog, storage_options: dict, limit: int | None = None) -> tuple[int, dict[str, int]]:
    """Stream the id column once: (row count, {id: occurrences} for ids seen more than once).

    The driver keeps 8 bytes per row (a hash), not the ids; a second pass resolves the few duplicated hashes. A
    pairs listing already has its ids, one per file name, so it has no duplicates.
    """
    if source.format == "pairs":
        return len(catalog.list_pairs(list(source.files))[:limit]), {}
    ids = read_catalog(source, storage_options, ids_only=True)
    if limit is not None:
        ids = ids.limit(limit)
    ids = ids.materialize()
    hashes = [np.array([id_hash(v) for v in b["id"]], dtype=np.uint64)
              for b in ids.iter_batches(batch_size=8192, batch_format="numpy")]
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    values, counts = np.unique(all_hashes, return_counts=True)
    repeated = set(values[counts > 1].tolist())
    duplicates: dict[str, int] = {}
    if repeated:
        for batch in ids.iter_batches(batch_size=8192, batch_format="numpy"):
            for value in batch["id"]:
                if id_hash(value) in repeated:
                    duplicates[str(value)] = duplicates.get(str(value), 0) + 1
    return len(all_hashes), {k: v for k, v in duplicates.items() if v > 1}


# ----------------------------------------------------------------------------------------------------------
# Without Ray
# ----------------------------------------------------------------------------------------------------------


def iter_rows(source: Catalog, storage_options: dict, wanted: set[str] | None = None,
              require_mask: bool = True) -> Iterator[dict]:
    """The catalog's rows ``{id, image, mask, prompt, read_error}`` in file order, read lazily (stop when enough);
    only the ids in ``wanted`` when it is given."""
    import pyarrow.parquet as pq

    if source.format == "pairs":
        for row in catalog.list_pairs(list(source.files), require_mask=require_mask):
            if wanted is None or row["id"] in wanted:
                yield catalog.read_pair(row, storage_options)
        return
    for shard in source.shards:
        fs, path = catalog.url_to_fs(shard, storage_options)
        with fs.open(path, "rb") as handle:
            data = handle.read()
        if source.format == "parquet":
            rows = ({"read_error": None, "prompt": None, **row} for row in pq.read_table(io.BytesIO(data)).to_pylist())
        else:
            rows = catalog.read_tar(data, shard, require_mask=require_mask)
        for row in rows:
            if wanted is None or row.get("id") in wanted:
                yield row
