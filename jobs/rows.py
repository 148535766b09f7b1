"""The row contract of the protect job: what a row is at every step, its status, and who may change it.

One image's way through ``rtb protect`` and the schema of its row at each step::

    reader   catalog row          {id, image, mask, prompt[, read_error]} (rtb.catalog.CATALOG_SCHEMA)
             ⋈ prior              + PRIOR_FIELDS (the id's current record, or what this run already committed)
    decide   DECODED_SCHEMA       bookkeeping + raw pixels and packed mask; status decided here
    detect   DECODED_SCHEMA       (--masks auto) the mask of a row that has none, found by detection
    protect  PROTECTED_SCHEMA     bookkeeping + the figures of the protection + protected pixels
    write    RESULT_SCHEMA        bookkeeping + figures + where the image was written (no pixels)
    commit   METRICS_SCHEMA / ERRORS_SCHEMA / STATE_SCHEMA / MISSING_SCHEMA, whole Parquet objects

Statuses (:class:`Status`) and the only moves the stages may make (:data:`TRANSITIONS`, enforced by
:func:`check_transition`)::

    stage     from        to
    decide    (new row)   ok, error, unchanged, committed, missing
    detect    ok          ok, error, no-region
    protect   ok          ok, error
    write     ok          ok, error
    write     missing     missing, pruned, error
    (any other status passes through a stage unchanged)

At the commit a row is counted once, by its final status (:class:`jobs.writer.CommitSummary`):
``ok`` → protected (a metrics row), ``error`` → failed (an errors row), ``no-region`` → not protected (an errors
row of stage ``detect``: no mask and nothing found), ``unchanged`` → its record is an earlier
run's, ``committed`` → resumed (an earlier attempt of this run wrote its row), ``missing``/``pruned`` → listed in
``missing/``. So every id of the catalog ends in exactly one metrics or errors row of the run, or is unchanged.
"""

from __future__ import annotations

import re

import pyarrow as pa


class Status:
    """The status a row carries from stage to stage."""

    # Protected (or, before the protect stage, to be protected).
    OK = "ok"
    # Could not be protected; ``stage`` and ``error`` say where and why.
    ERROR = "error"
    # Its current protection was made for this content key: skipped, the earlier row stays its record.
    UNCHANGED = "unchanged"
    # An earlier, interrupted attempt of this run already committed its row: skipped, not counted twice.
    COMMITTED = "committed"
    # In the state but no longer in the catalog.
    MISSING = "missing"
    # Missing, and its image deleted (``--prune``).
    PRUNED = "pruned"
    # No mask in the catalog and nothing found by detection (``--masks auto``): not protected.
    NO_REGION = "no-region"


class Prior:
    """Values of ``prior_status``: what the join found for an id before this attempt."""

    # Its protection stands (a row of the current state).
    STANDS = "ok"
    # This run id committed a metrics row for it in an earlier attempt.
    COMMITTED = "committed"
    # This run id committed an errors row for it in an earlier attempt.
    COMMITTED_ERROR = "committed-error"


NEW = None  # the "from" of a row a stage creates
# stage → {status before → statuses allowed after}. A status not listed for a stage passes through unchanged.
TRANSITIONS: dict[str, dict[str | None, frozenset[str]]] = {
    "decide": {NEW: frozenset({Status.OK, Status.ERROR, Status.UNCHANGED, Status.COMMITTED, Status.MISSING})},
    "detect": {Status.OK: frozenset({Status.OK, Status.ERROR, Status.NO_REGION})},
    "protect": {Status.OK: frozenset({Status.OK, Status.ERROR})},
    "write": {Status.OK: frozenset({Status.OK, Status.ERROR}),
              Status.MISSING: frozenset({Status.MISSING, Status.PRUNED, Status.ERROR})},
}


def check_transition(stage: str, before: str | None, after: str) -> None:
    """Raise ``RuntimeError`` when ``stage`` moves a row from ``before`` to a status the contract does not allow."""
    allowed = TRANSITIONS[stage].get(before, frozenset({before}))
    if after not in allowed:
        raise RuntimeError(f"stage {stage!r} may not move a row from {before!r} to {after!r} "
                           f"(allowed: {', '.join(sorted(map(str, allowed)))})")


# ----------------------------------------------------------------------------------------------------------
# Between the stages (explicit schemas keep blocks of only-error rows type-compatible with the rest)
# ----------------------------------------------------------------------------------------------------------

# What the join attaches to each catalog row; all null for an id seen for the first time.
PRIOR_FIELDS = [
    ("prior_status", pa.string()),  # a Prior value
    ("prior_key", pa.string()),  # content key of that protection
    ("prior_path", pa.string()),  # images/<id>.<ext> it wrote
    ("prior_sha256", pa.string()),
    ("prior_run_id", pa.string()),  # the run whose metrics row is its record
]
PRIOR_SCHEMA = pa.schema([("id", pa.string()), *PRIOR_FIELDS])
# Carried by every row from the decide stage to the commit.
BOOKKEEPING = [
    ("id", pa.string()),
    ("status", pa.string()),  # a Status value
    ("stage", pa.string()),  # where an error happened: read, validate, detect, protect, write, prune
    ("error", pa.string()),
    ("content_key", pa.string()),
    ("source_sha256", pa.string()),
    ("mask_sha256", pa.string()),
    *PRIOR_FIELDS,
]
BOOKKEEPING_NAMES = frozenset(name for name, _ in BOOKKEEPING)
DECODED_SCHEMA = pa.schema(
    [
        *BOOKKEEPING,
        ("prompt", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("pixel_mode", pa.string()),  # mode of the raw pixels below: L, RGB or RGBA
        ("pixels", pa.binary()),  # Image.tobytes() of the decoded image
        ("mask", pa.binary()),  # np.packbits of the H×W boolean mask; null: to be found by detection
    ]
)

# ----------------------------------------------------------------------------------------------------------
# What the run writes (under --output)
# ----------------------------------------------------------------------------------------------------------

# metrics/<run_id>-a<attempt>-<seq>.parquet: one row per image a run protected.
METRICS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("run_id", pa.string()),
        ("status", pa.string()),
        ("method", pa.string()),
        ("model_fingerprint", pa.string()),
        ("config_hash", pa.string()),
        ("source_sha256", pa.string()),
        ("mask_sha256", pa.string()),
        # sha256 of the image bytes, the mask bytes, the config hash and the model fingerprint: the id's
        # protection is current while its catalog row still has this key (incremental runs skip it).
        ("content_key", pa.string()),
        ("protected_path", pa.string()),
        ("protected_sha256", pa.string()),
        # How the file at protected_path is stored (png, jpeg:Q, webp:Q) and the L∞ bound and PSNR its decoded
        # pixels reach against the source: equal to linf/psnr for png, what the codec left for a lossy format.
        ("output_format", pa.string()),
        ("stored_linf", pa.float64()),
        ("stored_psnr", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("mask_fraction", pa.float64()),
        ("eps", pa.float64()),
        ("steps", pa.int32()),
        ("linf", pa.float64()),
        ("psnr", pa.float64()),
        ("ssim", pa.float64()),
        ("loss_implant", pa.float64()),
        ("loss_expanded", pa.float64()),
        ("loss_hide", pa.float64()),
        ("seconds", pa.float64()),
        ("device", pa.string()),
        # Imperceptibility (rtb.protect.ImageStats): the mean per-pixel bound (ε under --budget uniform, less under
        # jnd), CIEDE2000 of the stored 8-bit image vs the source (mean, 95th percentile, share above a JND of 2.3),
        # whether the source is exactly grey and, if so, whether the protected image stayed exactly grey.
        ("bound_mean", pa.float64()),
        ("delta_e_mean", pa.float64()),
        ("delta_e_p95", pa.float64()),
        ("delta_e_above_jnd", pa.float64()),
        ("source_grey", pa.bool_()),
        ("grey_preserved", pa.bool_()),
    ]
)
# errors/<run_id>-a<attempt>-<seq>.parquet and errors/<run_id>-duplicates.parquet: one row per input a run could
# not protect.
ERRORS_SCHEMA = pa.schema([("id", pa.string()), ("run_id", pa.string()), ("stage", pa.string()), ("error", pa.string())])
# state/<run_id>/part-<run_id>-a<attempt>-<seq>.parquet: the state after a run, one row per id whose protection stands.
STATE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("content_key", pa.string()),  # the key the protection was made for (see METRICS_SCHEMA)
        ("protected_path", pa.string()),  # images/<id>.png (or .jpg/.webp)
        ("protected_sha256", pa.string()),  # sha256 of those bytes
        ("run_id", pa.string()),  # the run whose metrics row is this id's record
    ]
)
# missing/<run_id>-a<attempt>-<seq>.parquet: ids of the state that a run no longer found in the catalog.
MISSING_SCHEMA = pa.schema([("id", pa.string()), ("run_id", pa.string()), ("pruned", pa.bool_())])

# The figures of a protection, as the protect stage adds them to a row (the metrics columns past bookkeeping).
_FIGURES = [f for f in METRICS_SCHEMA if f.name != "run_id" and f.name not in BOOKKEEPING_NAMES]
RESULT_SCHEMA = pa.schema([*BOOKKEEPING, *_FIGURES])
# Protected pixels, and the source's (only for a lossy output format, whose stored bound is measured).
PROTECTED_SCHEMA = pa.schema([*RESULT_SCHEMA, ("pixels", pa.binary()), ("source_mode", pa.string()),
                              ("source_pixels", pa.binary())])

# Commit files: <run_id>-a<attempt>-<seq>.parquet, attempt 8 hex digits, seq the attempt's commit counter.
COMMIT_FILE = re.compile(r"(?P<run>.+)-a(?P<attempt>[0-9a-f]{8})-(?P<seq>\d{5,})\.parquet")


def commit_file_name(run_id: str, attempt: str, seq: int) -> str:
    """The name of an attempt's ``seq``-th commit file (the same in metrics/, errors/, missing/ and state/)."""
    return f"{run_id}-a{attempt}-{seq:05d}.parquet"


# ----------------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------------


def make_row(schema: pa.Schema, row: dict, **values) -> dict:
    """A row of ``schema``: the bookkeeping of ``row`` carried over, then ``values``, the rest null."""
    out = {name: None for name in schema.names}
    out.update({name: row.get(name) for name in BOOKKEEPING_NAMES if name in row})
    out.update(values)
    return out


def error_row(row: dict, stage: str, error: str, schema: pa.Schema) -> dict:
    """``row`` as an error of ``stage`` with the one-line reason ``error``, in ``schema``."""
    row_id = row.get("id")
    return make_row(schema, row, id=None if row_id is None else str(row_id), status=Status.ERROR, stage=stage,
                    error=error)
