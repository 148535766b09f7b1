"""Image catalogs: the three input formats, safe object names, and the output layout.

A catalog is a set of rows ``{id, image, mask, prompt}``: ``image`` holds encoded bytes (PNG, JPEG or WebP),
``mask`` a PNG whose nonzero pixels mark the region to protect, ``prompt`` an optional string.

Formats (``detect_format`` picks one from what is at a URI):

- ``parquet`` (canonical): ``*.parquet`` shards under a prefix with columns ``id`` (string, unique),
  ``image`` (binary), ``mask`` (binary) and optionally ``prompt`` (string).
- ``webdataset``: ``*.tar`` shards holding ``<key>.{png,jpg,jpeg,webp}``, ``<key>.mask.png`` and optionally
  ``<key>.txt``; the id is the key.
- ``pairs``: a folder of ``NAME.<ext>`` with ``NAME_mask.png`` (and optionally ``NAME.txt``); the id is ``NAME``.

Every function here is plain Python over fsspec; the jobs call them from their readers and stages (the
output layout of ``rtb protect`` and its schemas: ``jobs/rows.py``).
A row that cannot be read keeps its id and carries a ``read_error`` string instead of failing the shard.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import tarfile
import uuid
from collections.abc import Iterable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("parquet", "webdataset", "pairs")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MASK_SUFFIX = "_mask.png"  # pairs: NAME_mask.png
TAR_MASK_SUFFIX = ".mask.png"  # webdataset: <key>.mask.png
MAX_ID_LENGTH = 200

# One path segment of an id: starts with a letter or digit, then letters, digits, '.', '_' or '-'.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

CATALOG_SCHEMA = pa.schema(
    [("id", pa.string()), ("image", pa.binary()), ("mask", pa.binary()), ("prompt", pa.string())]
)

# ----------------------------------------------------------------------------------------------------------
# Names and URIs
# ----------------------------------------------------------------------------------------------------------


def check_id(value: object) -> str:
    """Return ``value`` when it is safe as an object name under an output prefix, else raise ``ValueError``.

    An id is one or more ``/``-separated segments, each starting with a letter or digit and made of letters,
    digits, ``.``, ``_`` and ``-``; at most 200 characters. This rules out ``..``, absolute paths, empty
    segments, backslashes and control characters, so ``images/<id>.png`` can never leave the output prefix.
    """
    if not isinstance(value, str) or value == "":
        raise ValueError(f"id {value!r} is empty or not a string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"id {value[:40]!r}... is {len(value)} characters long; at most {MAX_ID_LENGTH} allowed")
    for segment in value.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"id {value!r} is not a safe object name: each '/'-separated part must start with a letter or "
                "digit and use only letters, digits, '.', '_' and '-' (no '..', no leading '/', no empty parts)"
            )
    return value


def is_remote(uri: str) -> bool:
    """True for URIs with a protocol other than ``file://`` (``s3://``, ``memory://``, ``gs://``...)."""
    return fsspec.core.split_protocol(str(uri))[0] not in (None, "file", "local")


def url_to_fs(uri: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the protocol-less path for ``uri``."""
    return fsspec.core.url_to_fs(str(uri), **(storage_options or {}))


def join(uri: str, *parts: str) -> str:
    """Join ``parts`` onto ``uri`` with ``/``, keeping the protocol (``s3://b/p`` + ``x`` -> ``s3://b/p/x``)."""
    return posixpath.join(str(uri).rstrip("/"), *parts) if str(uri).rstrip("/") else posixpath.join(*parts)


def _with_protocol(uri: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Turn a path returned by ``fs.find``/``fs.ls`` back into a URI of the same kind as ``uri``."""
    protocol = fsspec.core.split_protocol(str(uri))[0]
    if protocol in (None, "file", "local"):
        return path
    return fs.unstrip_protocol(path)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Format detection and listing
# ----------------------------------------------------------------------------------------------------------


def list_files(uri: str, storage_options: dict | None = None) -> list[str]:
    """Every file at ``uri`` (the file itself, or all files below a prefix), as sorted URIs.

    Raises ``ValueError`` naming the URI when nothing exists there.
    """
    fs, path = url_to_fs(uri, storage_options)
    path = path.rstrip("/") or path
    if fs.isfile(path):
        return [_with_protocol(uri, fs, path)]
    if not fs.exists(path):
        raise ValueError(f"input {uri!r} does not exist")
    files = sorted(fs.find(path))
    return [_with_protocol(uri, fs, f) for f in files]


def detect_format(files: list[str], uri: str = "") -> str:
    """``parquet``, ``webdataset`` or ``pairs`` from the file names under an input prefix.

    Raises ``ValueError`` when the files match none of the formats, or more than one.
    """
    names = [f.lower() for f in files]
    found = []
    if any(n.endswith(".parquet") for n in names):
        found.append("parquet")
    if any(n.endswith(".tar") for n in names):
        found.append("webdataset")
    if any(n.endswith(MASK_SUFFIX) for n in names) or any(n.endswith(IMAGE_SUFFIXES) for n in names):
        found.append("pairs")
    if len(found) != 1:
        what = "no .parquet shards, .tar shards or image/mask pairs" if not found else " and ".join(found)
        raise ValueError(f"cannot tell the input format of {uri!r}: found {what}; pass --format")
    return found[0]


def shard_files(files: list[str], fmt: str) -> list[str]:
    """The shard files of a ``parquet`` or ``webdataset`` catalog among ``files``."""
    suffix = {"parquet": ".parquet", "webdataset": ".tar"}[fmt]
    return [f for f in files if f.lower().endswith(suffix)]


def list_pairs(files: list[str], require_mask: bool = True) -> list[dict]:
    """Group a pairs folder listing into rows ``{id, image_path, mask_path, prompt_path, read_error}``.

    The id is the file name without its extension, relative to nothing (only the base name is used).
    An image without ``NAME_mask.png`` (unless ``require_mask`` is False: a catalog whose masks are to be
    found) or a mask without an image keeps a row with a ``read_error``; two images with the same NAME
    (``a.png`` and ``a.jpg``) give one row with a ``read_error``.
    """
    images: dict[str, list[str]] = {}
    masks: dict[str, str] = {}
    prompts: dict[str, str] = {}
    for f in files:
        base = posixpath.basename(f)
        lower = base.lower()
        if lower.endswith(MASK_SUFFIX):
            masks[base[: -len(MASK_SUFFIX)]] = f
        elif lower.endswith(IMAGE_SUFFIXES):
            images.setdefault(base.rsplit(".", 1)[0], []).append(f)
        elif lower.endswith(".txt"):
            prompts[base[: -len(".txt")]] = f
    rows = []
    for name in sorted(set(images) | set(masks)):
        found = images.get(name, [])
        error = None
        if not found:
            error = f"mask {posixpath.basename(masks[name])!r} has no image next to it (expected {name}.png/.jpg/.webp)"
        elif len(found) > 1:
            error = f"id {name!r} has {len(found)} images: {', '.join(posixpath.basename(f) for f in found)}"
        elif name not in masks and require_mask:
            error = f"missing mask: expected {name}{MASK_SUFFIX} next to {posixpath.basename(found[0])}"
        rows.append(
            {
                "id": name,
                "image_path": found[0] if len(found) == 1 else None,
                "mask_path": masks.get(name),
                "prompt_path": prompts.get(name),
                "read_error": error,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------


def read_pair(row: dict, storage_options: dict | None = None) -> dict:
    """Fetch the bytes of one ``list_pairs`` row: ``{id, image, mask, prompt, read_error}``.

    Whatever exists is fetched even when the row already has a ``read_error`` (an image without its mask
    keeps its image bytes), so a catalog written from it still tells what was missing.
    """
    out = {"id": row["id"], "image": None, "mask": None, "prompt": None, "read_error": row.get("read_error")}
    options = storage_options or {}
    try:
        for field, key in (("image", "image_path"), ("mask", "mask_path")):
            if row.get(key):
                with fsspec.open(row[key], "rb", **options) as handle:
                    out[field] = handle.read()
        if row.get("prompt_path"):
            with fsspec.open(row["prompt_path"], "rb", **options) as handle:
                out["prompt"] = handle.read().decode("utf-8", errors="replace").strip()
    except OSError as err:
        out["read_error"] = out["read_error"] or f"could not read {row['id']!r}: {type(err).__name__}: {err}"
    return out


def _tar_key(name: str) -> tuple[str, str] | None:
    """Split a tar member name into ``(key, field)`` where field is ``image``, ``mask`` or ``prompt``."""
    lower = name.lower()
    if lower.endswith(TAR_MASK_SUFFIX):
        return name[: -len(TAR_MASK_SUFFIX)], "mask"
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], "image"
    if lower.endswith(".txt"):
        return name[: -len(".txt")], "prompt"
    return None


def read_tar(data: bytes, shard: str = "", require_mask: bool = True) -> Iterator[dict]:
    """Rows ``{id, image, mask, prompt, read_error}`` from the bytes of one webdataset tar shard.

    The id is the member name without its suffix (``a/b.png`` -> ``a/b``). A key missing its image, or its
    mask when ``require_mask``, keeps a row with a ``read_error``; a key with two images is an error too. Members of other types are
    ignored. A tar that cannot be opened yields one row with id ``<shard>`` and the error.
    """
    samples: dict[str, dict] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                parsed = _tar_key(member.name)
                if parsed is None:
                    continue
                key, field = parsed
                sample = samples.setdefault(key, {"id": key, "image": None, "mask": None, "prompt": None, "read_error": None})
                payload = archive.extractfile(member).read()
                if field == "prompt":
                    sample["prompt"] = payload.decode("utf-8", errors="replace").strip()
                elif sample[field] is not None:
                    sample["read_error"] = f"key {key!r} has more than one {field} in {posixpath.basename(shard)}"
                else:
                    sample[field] = payload
    except (tarfile.TarError, OSError, EOFError) as err:
        yield {"id": shard, "image": None, "mask": None, "prompt": None, "read_error": f"shard {shard!r} is not a readable tar: {err}"}
        return
    for key, sample in samples.items():
        if sample["read_error"] is None and sample["image"] is None:
            sample["read_error"] = f"key {key!r} has a mask but no image in {posixpath.basename(shard)}"
        elif sample["read_error"] is None and sample["mask"] is None and require_mask:
            sample["read_error"] = f"missing mask: expected {key}{TAR_MASK_SUFFIX} in {posixpath.basename(shard)}"
        yield sample


def tar_ids(data: bytes, shard: str = "") -> list[str]:
    """The ids ``read_tar`` would yield for this shard, without keeping any payload."""
    return [row["id"] for row in read_tar(data, shard)]


# ----------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------


def put_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write ``data`` to ``uri`` (whole object; creates parent folders on local filesystems)."""
    fs, path = url_to_fs(uri, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        # An object PUT is atomic; a local file is made so by writing aside and renaming over it, so a
        # process killed mid-write never leaves a truncated file for a resumed run to read.
        partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
        return
    with fs.open(path, "wb") as handle:
        handle.write(data)


def delete(uri: str, storage_options: dict | None = None) -> bool:
    """Remove the object at ``uri`` when it exists; ``True`` when something was removed."""
    fs, path = url_to_fs(uri, storage_options)
    if not fs.exists(path):
        return False
    fs.rm(path)
    return True


def write_table(table: pa.Table, uri: str, storage_options: dict | None = None) -> None:
    """Write one Parquet file at ``uri``."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    put_bytes(uri, sink.getvalue(), storage_options)


def write_shards(
    rows: Iterable[dict], output: str, rows_per_shard: int = 1000, storage_options: dict | None = None
) -> list[str]:
    """Write catalog rows ``{id, image, mask, prompt}`` as ``part-00000.parquet``… under ``output``.

    Returns the URIs written. Raises ``ValueError`` when ``rows_per_shard`` is not positive.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    written: list[str] = []
    buffer: list[dict] = []

    def flush() -> None:
        uri = join(output, f"part-{len(written):05d}.parquet")
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in CATALOG_SCHEMA.names} for row in buffer], schema=CATALOG_SCHEMA
        )
        write_table(table, uri, storage_options)
        written.append(uri)
        buffer.clear()

    for row in rows:
        buffer.append(row)
        if len(buffer) >= rows_per_shard:
            flush()
    if buffer:
        flush()
    return written
