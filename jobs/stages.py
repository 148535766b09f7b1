"""The protect job's stages before the writer, each runnable without Ray on a pyarrow table::

    decode_and_validate (CPU tasks) → [find_masks (CPU tasks, --masks auto)] → Protector (actor pool: the model,
    GPU when asked)

Every row carries its status from stage to stage (:mod:`jobs.rows`: the statuses, the schemas and the moves a
stage may make), so that no id is ever lost.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import time

import numpy as np
import pyarrow as pa
from PIL import Image

from jobs.rows import (
    BOOKKEEPING_NAMES,
    DECODED_SCHEMA,
    PROTECTED_SCHEMA,
    Prior,
    Status,
    check_transition,
    error_row,
    make_row,
)
from rtb import catalog

# Test-only fault hooks. EXIT_ONCE: when this variable names a file that does not exist yet, the first Protector
# call creates it and kills its own process (an actor dying mid-batch); Ray restarts the actor and retries.
# DELAY: seconds every Protector call waits first (a slow optimizer that costs no CPU), so that a test can
# kill a run whose commits come on the clock.
EXIT_ONCE_ENV = "RTB_TEST_ACTOR_EXIT_ONCE"
DELAY_ENV = "RTB_TEST_PROTECT_DELAY_S"


def content_key(source_sha256: str, mask_sha256: str, key_salt: str) -> str:
    """sha256 of the image bytes' and mask bytes' hashes and the salt (config hash and model fingerprint)."""
    return hashlib.sha256(f"{source_sha256}:{mask_sha256}:{key_salt}".encode()).hexdigest()


def decode_and_validate(batch: pa.Table, duplicates: frozenset[str] = frozenset(), max_mask_fraction: float = 0.9,
                        key_salt: str = "", force: bool = False, auto_masks: str | None = None) -> pa.Table:
    """The decide stage: every row's status, then decode and check the rows to protect; a bad row becomes an
    error row, never an exception.

    Rows whose id is in ``duplicates`` are dropped here (the driver writes one error row per such id). Rows
    of the join that have no catalog side (``in_catalog`` null) are ids of the state that left the catalog.
    With ``auto_masks`` (the detection's fingerprint, ``--masks auto``) a row without a mask, or with an empty
    one, keeps a null mask for the detect stage to find; its content key has the fingerprint where the mask's
    hash would be, so an unchanged image under unchanged detection is not searched again.
    """
    has_catalog_flag = "in_catalog" in batch.column_names
    out = []
    for row in batch.to_pylist():
        row_id = row.get("id")
        if row_id is not None and str(row_id) in duplicates:
            continue
        decided = _decide(row, has_catalog_flag, max_mask_fraction, key_salt, force, auto_masks)
        check_transition("decide", None, decided["status"])
        out.append(decided)
    return pa.Table.from_pylist(out, schema=DECODED_SCHEMA)


def _decide(row: dict, has_catalog_flag: bool, max_mask_fraction: float, key_salt: str, force: bool,
            auto_masks: str | None) -> dict:
    """One row of :func:`decode_and_validate`, in DECODED_SCHEMA."""
    from rtb.images import MIN_SIDE, check_pair, decode_image, decode_mask, to_8bit

    row_id = row.get("id")
    # 1. An id of the state that is no longer in the catalog.
    if has_catalog_flag and not row.get("in_catalog"):
        return make_row(DECODED_SCHEMA, row, id=str(row_id), status=Status.MISSING)
    # 2. Committed by an earlier attempt of this run: not redone, not counted twice.
    if row.get("prior_status") in (Prior.COMMITTED, Prior.COMMITTED_ERROR):
        return make_row(DECODED_SCHEMA, row, id=str(row_id), status=Status.COMMITTED)
    # 3. The id must be a safe object name; the reader may already have found the row broken.
    try:
        catalog.check_id(row_id)
    except ValueError as error:
        return error_row(row, "validate", str(error), DECODED_SCHEMA)
    if row.get("read_error"):
        return error_row(row, "read", row["read_error"], DECODED_SCHEMA)
    if row.get("image") is None:
        return error_row(row, "read", "image bytes are missing (null)", DECODED_SCHEMA)
    own_mask = row.get("mask") is not None and (auto_masks is None or _non_empty_mask(row["mask"]))
    if not own_mask and auto_masks is None:
        return error_row(row, "read", "missing mask: the mask column is null", DECODED_SCHEMA)
    # 4. Unchanged: its current protection was made from these bytes, this config and this model.
    source_sha = catalog.sha256_hex(bytes(row["image"]))
    mask_sha = catalog.sha256_hex(bytes(row["mask"])) if own_mask else f"auto:{auto_masks}"
    keys = {"content_key": content_key(source_sha, mask_sha, key_salt), "source_sha256": source_sha,
            "mask_sha256": mask_sha}
    if not force and row.get("prior_status") == Prior.STANDS and row.get("prior_key") == keys["content_key"]:
        return make_row(DECODED_SCHEMA, row, status=Status.UNCHANGED, **keys)
    # 5. Decode and check the pair.
    try:
        image = decode_image(row["image"])
        if own_mask:
            try:
                mask = decode_mask(row["mask"])
            except ValueError as error:
                raise ValueError(f"mask: {error}") from None
            check_pair(image, mask, max_mask_fraction)
        else:  # to be found by the detect stage, which checks the pair once it has the mask
            mask = None
            if min(image.size) < MIN_SIDE:
                raise ValueError(f"image is {image.width}×{image.height}; at least {MIN_SIDE}×{MIN_SIDE} is needed")
    except ValueError as error:
        return make_row(DECODED_SCHEMA, row, status=Status.ERROR, stage="validate", error=str(error), **keys)
    # 6. Keep raw pixels (no re-decode on the accelerator); wide grey becomes 8-bit grey as a viewer shows it,
    #    palette and exotic modes become RGB(A).
    image = to_8bit(image)
    if image.mode not in ("L", "RGB", "RGBA"):
        has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return make_row(DECODED_SCHEMA, row, status=Status.OK, stage=None, error=None, **keys, prompt=row.get("prompt"),
                    width=image.width, height=image.height, pixel_mode=image.mode, pixels=image.tobytes(),
                    mask=None if mask is None else np.packbits(mask).tobytes())


def _non_empty_mask(data: bytes) -> bool:
    """Whether a catalog mask marks any pixel (an undecodable one counts as given: its own error says why)."""
    from rtb.images import decode_mask

    try:
        return bool(decode_mask(data).any())
    except ValueError as error:
        return "empty" not in str(error)


@functools.lru_cache(maxsize=4)
def region_detector(kinds: tuple[str, ...], threads: int = 1):
    """The detector of ``kinds``, built once per worker process (Ray reuses its workers across tasks, so the models
    load once per process, not per batch), with ``threads`` threads."""
    from rtb.detection import DetectConfig, RegionDetector

    return RegionDetector(DetectConfig(kinds=kinds, threads=threads))


def find_masks(batch: pa.Table, kinds: tuple[str, ...] = ("face", "text"), max_mask_fraction: float = 0.9) -> pa.Table:
    """The detect stage (``--masks auto``): the region of each row that has no mask of its own.

    CPU tasks, not actors: they hold no CPU between batches, so next to the Protector's actors (GPU or CPU) a small
    machine never deadlocks on a detector that sits on a core, and on a GPU cluster they spread over the CPUs
    beside the GPU actors, which never wait for them. A row with faces or text gets their mask (checked as a pair
    with its image); one with nothing found becomes ``no-region`` (not protected, an errors row of stage
    ``detect``); a detector that raises fails its row only.
    """
    detector = region_detector(tuple(kinds))
    out = []
    for row in batch.to_pylist():
        found = _find_mask(detector, row, max_mask_fraction) if row["status"] == Status.OK and row["mask"] is None else row
        check_transition("detect", row["status"], found["status"])
        out.append(found)
    return pa.Table.from_pylist(out, schema=DECODED_SCHEMA)


def _find_mask(detector, row: dict, max_mask_fraction: float) -> dict:
    from rtb.images import check_pair

    image = Image.frombytes(row["pixel_mode"], (row["width"], row["height"]), row["pixels"])
    try:
        detections = detector.detect(image)
        if not detections:
            return {**row, "status": Status.NO_REGION, "stage": "detect",
                    "error": f"no region: no mask in the catalog and no {' or '.join(detector.config.kinds)} found"}
        mask = detector.mask(image, detections)
        check_pair(image, mask, max_mask_fraction)
    except Exception as error:  # noqa: BLE001 - a detector that raises fails its row only
        return error_row(row, "detect", f"{type(error).__name__}: {error}", DECODED_SCHEMA)
    return {**row, "mask": np.packbits(mask).tobytes()}


def _non_finite(stats) -> str | None:
    """The name of the first figure of a result that went NaN or infinite (a diverged optimisation), or None.

    ``None`` figures are the ones a method does not report; an infinite PSNR is an image left exactly as it was.
    """
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, float) and not math.isfinite(value) and not (field.name.endswith("psnr") and value > 0):
            return field.name
    return None


class Protector:
    """Actor stage: loads the model once, then protects batches of decoded rows.

    Usable without Ray: ``Protector(model="reference", config=ProtectConfig(...))(decoded_table)``.
    """

    def __init__(self, model: str = "reference", method: str = "rtb", config=None, storage_options: dict | None = None,
                 threads: int | None = None, device: str | None = None, keep_source: bool = False):
        import torch

        from rtb import ProtectConfig, config_hash, load_inpainter

        # 1. Threads: a CPU actor uses exactly its share of the cores (jobs.runtime.resolve_pool).
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
        if os.environ.get(DELAY_ENV):
            time.sleep(float(os.environ[DELAY_ENV]))
        rows = batch.to_pylist()
        ok = [r for r in rows if r["status"] == Status.OK]
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
        # 2. Rows out: figures and pixels for protected ones; errors and skipped rows passed through.
        out = []
        for row in rows:
            done = self._result_row(row, *results[id(row)]) if row["status"] == Status.OK else make_row(PROTECTED_SCHEMA, row)
            check_transition("protect", row["status"], done["status"])
            out.append(done)
        return pa.Table.from_pylist(out, schema=PROTECTED_SCHEMA)

    def _result_row(self, row: dict, image, stats, error: str | None) -> dict:
        """A protected row in PROTECTED_SCHEMA, or its error row (a failure, or a non-finite figure)."""
        if error is None and (bad := _non_finite(stats)) is not None:
            error = f"the optimisation produced a non-finite {bad}; no image was written"
        if error is not None:
            return error_row(row, "protect", error, PROTECTED_SCHEMA)
        values = dataclasses.asdict(stats)
        figures = {name: values[name] for name in PROTECTED_SCHEMA.names if name in values and name not in BOOKKEEPING_NAMES}
        return make_row(PROTECTED_SCHEMA, row, **figures, status=Status.OK, model_fingerprint=self.inpainter.fingerprint,
                        config_hash=self.config_hash, mode=image.mode, pixels=image.tobytes(),
                        source_mode=row["pixel_mode"] if self.keep_source else None,
                        source_pixels=row["pixels"] if self.keep_source else None)
