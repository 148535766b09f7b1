"""The protection job's stages: plain functions and one class, each runnable without Ray on a pyarrow table.

    decode_and_validate (CPU) → Protector (actor pool) → write_images (CPU)

Every row carries its status from stage to stage, so that no id is ever lost: ``ok`` (protected, or to be
protected), ``error`` (with the stage and the reason), ``unchanged`` (its current protection was made for this
content key: skipped), ``committed`` (this run already committed it before it was interrupted: skipped),
``missing`` (in the state but no longer in the catalog) and ``pruned`` (missing, and its outputs deleted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os

import numpy as np
import pyarrow as pa
from PIL import Image

from rtb import catalog
from rtb.catalog import METRICS_SCHEMA

# What the driver's join attaches to each catalog row: the id's current record (state) or what this run
# already committed (see jobs/state.py). All null for an id seen for the first time.
PRIOR_FIELDS = [
    ("prior_status", pa.string()),  # "ok" (protection stands), "committed" / "committed-error" (this run)
    ("prior_key", pa.string()),  # content key of that protection
    ("prior_path", pa.string()),
    ("prior_sha256", pa.string()),
    ("prior_run_id", pa.string()),
]
BOOKKEEPING = [
    ("id", pa.string()),
    ("status", pa.string()),  # ok, error, unchanged, committed, missing, pruned
    ("stage", pa.string()),  # where an error happened: read, validate, protect, write
    ("error", pa.string()),
    ("content_key", pa.string()),
    ("source_sha256", pa.string()),
    ("mask_sha256", pa.string()),
    *PRIOR_FIELDS,
]
# Rows between the stages. Explicit schemas keep blocks of only-error rows type-compatible with the rest.
DECODED_SCHEMA = pa.schema(
    [
        *BOOKKEEPING,
        ("prompt", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("pixel_mode", pa.string()),  # mode of the raw pixels below: L, RGB or RGBA
        ("pixels", pa.binary()),  # Image.tobytes() of the decoded image
        ("mask", pa.binary()),  # np.packbits of the H×W boolean mask
    ]
)
_BOOK_NAMES = {name for name, _ in BOOKKEEPING}
RESULT_SCHEMA = pa.schema(
    [*BOOKKEEPING, *(f for f in METRICS_SCHEMA if f.name != "run_id" and f.name not in _BOOK_NAMES)]
)
# Protected pixels, and the source's (only for a lossy output format, whose stored bound is measured).
PROTECTED_SCHEMA = pa.schema([*RESULT_SCHEMA, ("pixels", pa.binary()), ("source_mode", pa.string()),
                              ("source_pixels", pa.binary())])
IMAGE_EXTENSIONS = ("png", "jpg", "webp")

# Test-only fault hook: when this variable names a file that does not exist yet, the first Protector call
# creates it and kills its own process (an actor dying mid-batch); Ray restarts the actor and retries.
EXIT_ONCE_ENV = "RTB_TEST_ACTOR_EXIT_ONCE"


def content_key(source_sha256: str, mask_sha256: str, key_salt: str) -> str:
    """sha256 of the image bytes' and mask bytes' hashes and the salt (config hash and model fingerprint)."""
    return hashlib.sha256(f"{source_sha256}:{mask_sha256}:{key_salt}".encode()).hexdigest()


def _row(schema: pa.Schema, row: dict, **values) -> dict:
    """A row of ``schema``: the bookkeeping of ``row`` carried over, then ``values``, the rest null."""
    out = {name: None for name in schema.names}
    out.update({name: row.get(name) for name in _BOOK_NAMES if name in row})
    out.update(values)
    return out


def _error_row(row: dict, stage: str, error: str, schema: pa.Schema) -> dict:
    row_id = row.get("id")
    return _row(schema, row, id=None if row_id is None else str(row_id), status="error", stage=stage, error=error)


def _sha(data) -> str | None:
    return None if data is None else catalog.sha256_hex(bytes(data))


def decode_and_validate(batch: pa.Table, duplicates: frozenset[str] = frozenset(), max_mask_fraction: float = 0.9,
                        key_salt: str = "", force: bool = False) -> pa.Table:
    """Decide, decode and check every row; a bad row becomes an error row, never an exception.

    Rows whose id is in ``duplicates`` are dropped here (the driver writes one error row per such id). Rows
    of the join that have no catalog side (``in_catalog`` null) are ids of the state that left the catalog.
    """
    from rtb.images import check_pair, decode_image, decode_mask

    has_catalog_flag = "in_catalog" in batch.column_names
    out = []
    for row in batch.to_pylist():
        row_id = row.get("id")
        if row_id is not None and str(row_id) in duplicates:
            continue
        # 1. An id of the state that is no longer in the catalog.
        if has_catalog_flag and not row.get("in_catalog"):
            out.append(_row(DECODED_SCHEMA, row, id=str(row_id), status="missing"))
            continue
        # 2. Committed by an earlier attempt of this run: not redone, not counted twice.
        if row.get("prior_status") in ("committed", "committed-error"):
            out.append(_row(DECODED_SCHEMA, row, id=str(row_id), status="committed"))
            continue
        # 3. The id must be a safe object name.
        try:
            catalog.check_id(row_id)
        except ValueError as error:
            out.append(_error_row(row, "validate", str(error), DECODED_SCHEMA))
            continue
        # 4. The reader may already have found the row broken (missing mask, unreadable file).
        if row.get("read_error"):
            out.append(_error_row(row, "read", row["read_error"], DECODED_SCHEMA))
            continue
        if row.get("image") is None:
            out.append(_error_row(row, "read", "image bytes are missing (null)", DECODED_SCHEMA))
            continue
        if row.get("mask") is None:
            out.append(_error_row(row, "read", "missing mask: the mask column is null", DECODED_SCHEMA))
            continue
        # 5. Unchanged: its current protection was made from these bytes, this config and this model.
        source_sha, mask_sha = _sha(row["image"]), _sha(row["mask"])
        key = content_key(source_sha, mask_sha, key_salt)
        keys = {"content_key": key, "source_sha256": source_sha, "mask_sha256": mask_sha}
        if not force and row.get("prior_status") == "ok" and row.get("prior_key") == key:
            out.append(_row(DECODED_SCHEMA, row, status="unchanged", **keys))
            continue
        # 6. Decode and check the pair.
        try:
            image = decode_image(row["image"])
            try:
                mask = decode_mask(row["mask"])
            except ValueError as error:
                raise ValueError(f"mask: {error}") from None
            check_pair(image, mask, max_mask_fraction)
        except ValueError as error:
            out.append(_row(DECODED_SCHEMA, row, status="error", stage="validate", error=str(error), **keys))
            continue
        # 7. Keep raw pixels (no re-decode on the accelerator); palette and exotic modes become RGB(A).
        if image.mode not in ("L", "RGB", "RGBA"):
            has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        out.append(
            _row(DECODED_SCHEMA, row, status="ok", stage=None, error=None, **keys, prompt=row.get("prompt"),
                 width=image.width, height=image.height, pixel_mode=image.mode, pixels=image.tobytes(),
                 mask=np.packbits(mask).tobytes())
        )
    return pa.Table.from_pylist(out, schema=DECODED_SCHEMA)


def _non_finite(stats) -> str | None:
    """The name of the first non-finite figure of a result, or None."""
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            return field.name
        if isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, float) and not math.isfinite(item):
                    return f"{field.name}.{name}"
    return None


class Protector:
    """Actor stage: loads the model once, then protects batches of decoded rows.

    Usable without Ray: ``Protector(model="reference", config=ProtectConfig(...))(decoded_table)``.
    """

    def __init__(self, model: str = "reference", method: str = "rtb", config=None, storage_options: dict | None = None,
                 threads: int | None = None, device: str | None = None, keep_source: bool = False):
        import torch

        from rtb import ProtectConfig, config_hash, load_inpainter

        # 1. Threads: a CPU actor uses exactly its share of the cores (see jobs.protect.cpu_threads).
        if threads:
            torch.set_num_threads(threads)
        # 2. Load the model once per actor (a restart reruns this).
        self.inpainter = load_inpainter(model, device=device, storage_options=storage_options)
        self.method = method
        self.config = config if config is not None else ProtectConfig()
        self.config_hash = config_hash(self.config, method)
        # 3. Pass the source pixels on when the writer must measure a lossy file against them.
        self.keep_source = keep_source

    def _protect(self, rows: list[dict]):
        from rtb import protect

        images = [Image.frombytes(r["pixel_mode"], (r["width"], r["height"]), r["pixels"]) for r in rows]
        masks = [
            np.unpackbits(np.frombuffer(r["mask"], np.uint8), count=r["width"] * r["height"])
            .reshape(r["height"], r["width"]).astype(bool)
            for r in rows
        ]
        return protect(images, masks, model=self.inpainter, method=self.method, config=self.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        marker = os.environ.get(EXIT_ONCE_ENV)
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        rows = batch.to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        results: dict[int, tuple] = {}
        # 1. The whole batch at once; if it fails, each row alone so that one bad row fails only itself.
        try:
            result = self._protect(ok) if ok else None
            for i, row in enumerate(ok):
                results[id(row)] = (result.images[i], result.stats[i], None)
        except Exception:  # noqa: BLE001 - not swallowed: every row is retried alone and its own error recorded
            for row in ok:
                try:
                    single = self._protect([row])
                    results[id(row)] = (single.images[0], single.stats[0], None)
                except Exception as row_error:  # noqa: BLE001
                    results[id(row)] = (None, None, f"{type(row_error).__name__}: {row_error}")
        # 2. Rows out: stats for protected ones; errors and skipped rows passed through.
        out = []
        for row in rows:
            if row["status"] != "ok":
                out.append(_row(PROTECTED_SCHEMA, row))
                continue
            image, stats, error = results[id(row)]
            if error is None and (bad := _non_finite(stats)) is not None:
                error = f"the optimisation produced a non-finite {bad}; no image was written"
            if error is not None:
                out.append(_error_row(row, "protect", error, PROTECTED_SCHEMA))
                continue
            values = dataclasses.asdict(stats)
            out.append(
                _row(PROTECTED_SCHEMA, row,
                     **{name: values[name] for name in PROTECTED_SCHEMA.names if name in values and name not in _BOOK_NAMES},
                     status="ok", model_fingerprint=self.inpainter.fingerprint, config_hash=self.config_hash,
                     mode=image.mode, pixels=image.tobytes(),
                     source_mode=row["pixel_mode"] if self.keep_source else None,
                     source_pixels=row["pixels"] if self.keep_source else None)
            )
        return pa.Table.from_pylist(out, schema=PROTECTED_SCHEMA)


def write_images(batch: pa.Table, output: str, storage_options: dict | None = None, prune: bool = False,
                 output_format: str = "png") -> pa.Table:
    """CPU stage: PUT each protected image at ``images/<id>.<ext>`` (idempotent) and keep ``images/`` true.

    - ``output_format`` ``png`` (lossless), ``jpeg:Q`` or ``webp:Q``; the row records the format and the L∞
      bound and PSNR the stored file reaches against the source (for png: the protection's own);
    - an id that failed loses its images (an older protection, or one an interrupted attempt wrote before
      committing): ``images/`` never holds a protection of another source than the catalog's;
    - an id protected in another format than before loses its file in the old format;
    - with ``prune``, an id that left the catalog loses its image too (status ``pruned``).
    """
    from rtb.transforms import encode_output, parse_output_format

    fmt = parse_output_format(output_format)
    out = []
    for row in batch.to_pylist():
        pixels = row.pop("pixels")
        source_mode, source_pixels = row.pop("source_mode"), row.pop("source_pixels")
        safe = _safe_id(row.get("id"))
        uri = catalog.join(output, "images", f"{row['id']}.{fmt.extension}") if safe else None
        if row["status"] == "ok":
            try:
                image = Image.frombytes(row["mode"], (row["width"], row["height"]), pixels)
                if fmt.lossy:
                    source = Image.frombytes(source_mode, (row["width"], row["height"]), source_pixels)
                    encoded = encode_output(image, source, fmt)
                    data, stored_linf, stored_psnr = encoded.data, encoded.linf, encoded.psnr
                else:
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG", compress_level=6)
                    data, stored_linf, stored_psnr = buffer.getvalue(), row["linf"], row["psnr"]
                catalog.put_bytes(uri, data, storage_options)
                row.update(protected_path=uri, protected_sha256=catalog.sha256_hex(data), output_format=str(fmt),
                           stored_linf=stored_linf, stored_psnr=stored_psnr)
                if row.get("prior_path") and row["prior_path"] != uri:
                    catalog.delete(row["prior_path"], storage_options)
            except (OSError, ValueError) as error:
                row = _error_row(row, "write", f"could not write {uri}: {type(error).__name__}: {error}", RESULT_SCHEMA)
        if row["status"] == "error" and safe:
            for extension in IMAGE_EXTENSIONS:
                stale = catalog.join(output, "images", f"{row['id']}.{extension}")
                try:
                    catalog.delete(stale, storage_options)
                except OSError as error:
                    row["error"] += f" (and its earlier image {stale} could not be removed: {type(error).__name__}: {error})"
        if row["status"] == "missing" and prune:
            try:
                catalog.delete(row.get("prior_path") or uri, storage_options)
                row["status"] = "pruned"
            except OSError as error:
                row.update(status="error", stage="prune",
                           error=f"could not remove {row.get('prior_path') or uri} of an id no longer in the catalog: "
                                 f"{type(error).__name__}: {error}")
        out.append({name: row.get(name) for name in RESULT_SCHEMA.names})
    return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


def _safe_id(value) -> bool:
    try:
        catalog.check_id(value)
    except ValueError:
        return False
    return True
