"""The protect job's outputs: the images (a CPU stage) and the commit of the result rows (on the driver).

    write_images (CPU tasks: PUT images/<id>.<ext>, keep images/ true) → rows back to the driver → Committer

The commit runs on the driver, not in Ray write tasks: Ray Data gathers a write task's whole input before the
task starts, so a write task cannot commit on a clock, and one that waits for ``--commit-rows`` rows commits
nothing for hours when the optimizer is slow. The result rows are small (no pixels), so the driver streams them
and commits when ``commit_rows`` rows have come back or ``commit_seconds`` have passed since the last commit,
whichever is first: a crash of any part loses at most that much work, and a crash of a worker loses nothing
(Ray retries its block, and a block's rows reach the driver once).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import pyarrow as pa
from PIL import Image

from jobs.rows import (
    ERRORS_SCHEMA,
    METRICS_SCHEMA,
    MISSING_SCHEMA,
    RESULT_SCHEMA,
    Prior,
    Status,
    check_transition,
    commit_file_name,
    error_row,
)
from jobs.state import state_rows
from rtb import catalog

# Extensions an image of an id may have under images/ (png, and the lossy output formats).
IMAGE_EXTENSIONS = ("png", "jpg", "webp")


def image_uri(output: str, image_id: str, extension: str) -> str:
    return catalog.join(output, "images", f"{image_id}.{extension}")


def remove_images(output: str, image_id: str, storage_options: dict | None) -> list[str]:
    """Delete ``images/<id>.*`` in every output format (an id that failed or is duplicated must not look
    protected, whatever format an earlier run stored it in); returns why each file that is left could not go."""
    left = []
    for extension in IMAGE_EXTENSIONS:
        uri = image_uri(output, image_id, extension)
        try:
            catalog.delete(uri, storage_options)
        except OSError as error:
            left.append(f"its earlier image {uri} could not be removed: {type(error).__name__}: {error}")
    return left


def _safe_id(value) -> bool:
    try:
        catalog.check_id(value)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Images (CPU stage)
# ----------------------------------------------------------------------------------------------------------


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
    from rtb.transforms import parse_output_format

    fmt = parse_output_format(output_format)
    out = []
    for row in batch.to_pylist():
        before = row["status"]
        pixels, source_mode, source_pixels = row.pop("pixels"), row.pop("source_mode"), row.pop("source_pixels")
        safe = _safe_id(row.get("id"))
        if before == Status.OK:
            row = _store(row, output, fmt, pixels, source_mode, source_pixels, storage_options)
        if row["status"] in (Status.ERROR, Status.NO_REGION) and safe:
            for reason in remove_images(output, row["id"], storage_options):
                row["error"] += f" (and {reason})"
        if before == Status.MISSING and prune:
            row = _prune(row, output, fmt, storage_options)
        check_transition("write", before, row["status"])
        out.append({name: row.get(name) for name in RESULT_SCHEMA.names})
    return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


def _store(row: dict, output: str, fmt, pixels: bytes, source_mode, source_pixels, storage_options) -> dict:
    """Encode and PUT one protected image; the row with where it went, or its write error."""
    from rtb.transforms import encode_output

    uri = image_uri(output, row["id"], fmt.extension)
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
        if row.get("prior_path") and row["prior_path"] != uri:
            catalog.delete(row["prior_path"], storage_options)
    except (OSError, ValueError) as error:
        return error_row(row, "write", f"could not write {uri}: {type(error).__name__}: {error}", RESULT_SCHEMA)
    return {**row, "protected_path": uri, "protected_sha256": catalog.sha256_hex(data), "output_format": str(fmt),
            "stored_linf": stored_linf, "stored_psnr": stored_psnr}


def _prune(row: dict, output: str, fmt, storage_options) -> dict:
    """Delete the image of an id that left the catalog: status pruned, or a prune error."""
    uri = row.get("prior_path") or image_uri(output, row["id"], fmt.extension)
    try:
        catalog.delete(uri, storage_options)
    except OSError as error:
        return {**row, "status": Status.ERROR, "stage": "prune",
                "error": f"could not remove {uri} of an id no longer in the catalog: {type(error).__name__}: {error}"}
    return {**row, "status": Status.PRUNED}


def write_duplicates(output: str, run_id: str, duplicates: dict[str, int], storage_options: dict) -> str | None:
    """One error row per duplicated id (a fixed name: an attempt overwrites it), and no image of it in any format."""
    if not duplicates:
        return None
    uri = catalog.join(output, "errors", f"{run_id}-duplicates.parquet")
    rows = [{"id": i, "run_id": run_id, "stage": "read",
             "error": f"id {i!r} occurs {n} times in the input; ids must be unique, so none of its rows was protected"}
            for i, n in sorted(duplicates.items())]
    catalog.write_table(pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA), uri, storage_options)
    for image_id in duplicates:
        if _safe_id(image_id) and (left := remove_images(output, image_id, storage_options)):
            raise OSError(f"duplicated id {image_id!r}: {left[0]}")
    return uri


# ----------------------------------------------------------------------------------------------------------
# The commit (driver)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CommitSummary:
    """What an attempt committed, by the final status of each row (:mod:`jobs.rows`), and the files it wrote."""

    # Rows protected by this attempt (one metrics row each).
    protected: int = 0
    # Rows that failed in this attempt (one errors row each).
    failed: int = 0
    # Rows without a mask where detection found nothing (--masks auto; one errors row each, stage detect).
    no_region: int = 0
    # Rows whose protection is current: no row this run, an earlier run's metrics row is their record.
    unchanged: int = 0
    # Rows an earlier attempt of this run committed, as a metrics row (resumed_ok) or an errors row.
    resumed_ok: int = 0
    resumed_failed: int = 0
    # Ids of the state no longer in the catalog (missing counts the pruned ones too).
    missing: int = 0
    pruned: int = 0
    # metrics/ and errors/, state/ and missing/ files written.
    files: list[str] = field(default_factory=list)
    state_files: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    # Model fingerprints and devices of the protected rows; up to 20 missing ids.
    fingerprints: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)
    missing_sample: list[str] = field(default_factory=list)

    def count(self, table: pa.Table) -> None:
        """Add the rows of one commit."""
        for row in table.select(["id", "status", "prior_status"]).to_pylist():
            status = row["status"]
            if status == Status.OK:
                self.protected += 1
            elif status == Status.ERROR:
                self.failed += 1
            elif status == Status.NO_REGION:
                self.no_region += 1
            elif status == Status.UNCHANGED:
                self.unchanged += 1
            elif status == Status.COMMITTED:
                if row["prior_status"] == Prior.COMMITTED:
                    self.resumed_ok += 1
                else:
                    self.resumed_failed += 1
            elif status in (Status.MISSING, Status.PRUNED):
                self.missing += 1
                self.pruned += status == Status.PRUNED
                if len(self.missing_sample) < 20:
                    self.missing_sample.append(row["id"])


class Committer:
    """Commits the result rows that come back to the driver, as whole Parquet objects per commit: the new state's
    rows, the missing ids, then the errors and the metrics rows (the metrics and errors files are the commit: a
    resumed run skips the ids they hold). Files are named by run, attempt and commit number, so an attempt never
    touches what another attempt committed.
    """

    def __init__(self, output: str, run_id: str, attempt: str, storage_options: dict | None = None,
                 commit_rows: int = 500, commit_seconds: float = 60.0, clock=time.monotonic):
        self.output, self.run_id, self.attempt = output, run_id, attempt
        self.storage_options = storage_options or {}
        self.commit_rows, self.commit_seconds, self.clock = commit_rows, commit_seconds, clock
        self.summary = CommitSummary()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._last_commit = clock()
        self._seq = 0

    def add(self, table: pa.Table) -> None:
        """Buffer result rows; commit when ``commit_rows`` are waiting or ``commit_seconds`` have passed."""
        if table.num_rows:
            self._pending.append(table.cast(RESULT_SCHEMA))
            self._pending_rows += table.num_rows
        if self._pending_rows and (self._pending_rows >= self.commit_rows
                                   or self.clock() - self._last_commit >= self.commit_seconds):
            self.commit()

    def close(self) -> CommitSummary:
        """Commit what is left; the attempt's summary."""
        if self._pending_rows:
            self.commit()
        return self.summary

    def commit(self) -> None:
        table = pa.concat_tables(self._pending)
        name = commit_file_name(self.run_id, self.attempt, self._seq)
        # 1. The new state's rows and the ids that left the catalog (not the commit: re-derived on resume).
        state = state_rows(table, self.run_id)
        if state.num_rows:
            self.summary.state_files.append(self._write(state, "state", self.run_id, f"part-{name}"))
        statuses = table.column("status").to_pylist()
        gone = [{"id": i, "run_id": self.run_id, "pruned": s == Status.PRUNED}
                for i, s in zip(table.column("id").to_pylist(), statuses) if s in (Status.MISSING, Status.PRUNED)]
        if gone:
            self.summary.missing_files.append(self._write(pa.Table.from_pylist(gone, schema=MISSING_SCHEMA), "missing", name))
        # 2. The commit: errors, then metrics.
        metrics, errors = split_results(table, self.run_id)
        for folder, part in (("errors", errors), ("metrics", metrics)):
            if part.num_rows:
                self.summary.files.append(self._write(part, folder, name))
        self.summary.count(table)
        self.summary.fingerprints.update(metrics.column("model_fingerprint").to_pylist())
        self.summary.devices.update(metrics.column("device").to_pylist())
        self._pending, self._pending_rows, self._seq = [], 0, self._seq + 1
        self._last_commit = self.clock()

    def _write(self, table: pa.Table, *parts: str) -> str:
        uri = catalog.join(self.output, *parts)
        catalog.write_table(table, uri, self.storage_options)
        return uri


def split_results(table: pa.Table, run_id: str) -> tuple[pa.Table, pa.Table]:
    """Result rows → (metrics rows, error rows: failed and no-region), both stamped with ``run_id``."""
    rows = table.to_pylist()
    metrics = [{**{n: r.get(n) for n in METRICS_SCHEMA.names}, "run_id": run_id} for r in rows if r["status"] == Status.OK]
    errors = [{"id": r["id"], "run_id": run_id, "stage": r["stage"], "error": r["error"]}
              for r in rows if r["status"] in (Status.ERROR, Status.NO_REGION)]
    return pa.Table.from_pylist(metrics, schema=METRICS_SCHEMA), pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA)
