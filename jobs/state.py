"""What is current in an output prefix, and how a run commits to it exactly once.

Layout under ``--output`` (besides ``images/`` and ``runs/``)::

    metrics/<run_id>-a<attempt>-<seq>.parquet    the commit log: one row per id a run protected
    errors/<run_id>-a<attempt>-<seq>.parquet     one row per id it could not protect
    errors/<run_id>-duplicates.parquet           one row per id that occurs more than once in the input
    missing/<run_id>-a<attempt>-<seq>.parquet    ids of the state no longer in the catalog (pruned or not)
    state/<run_id>/part-<run_id>-a<attempt>-<seq>.parquet  the state after that run (STATE_SCHEMA), one row
                                                 per id whose protection stands
    state/CURRENT.json                           which state is current: {"run_id", "files"}; written last

How a run uses it (:func:`load_prior`): the current state, plus what *this* run id already committed in an
earlier, interrupted attempt, becomes one small table ``id → prior_*`` that Ray Data joins onto the catalog
(a hash join: the driver never holds it). A row whose key matches its state is ``unchanged``; a row this run
already committed is ``committed`` and not redone. The driver commits the result rows as whole Parquet objects
named by run, attempt and commit number (:class:`jobs.writer.Committer`), so every id ends in exactly one
metrics or errors row of the run however often it is interrupted and rerun. The new state is
written beside the old one and made current by one PUT of ``state/CURRENT.json`` when the run completes.

Cost: the join hash-partitions the catalog rows, image bytes included, through Ray's object store (spilled
to local disk when the catalog is larger than it; ``RAY_DATA_ENABLE_DISK_SHUFFLE=1`` moves the shuffle to
disk altogether), and the optimizer stage starts once the join has its inputs. For a nightly run that is
a read and a hash per unchanged image, no optimisation; a catalog far larger than the cluster's disks is
best run per shard prefix (one output prefix each).
"""

from __future__ import annotations

import json
import posixpath
import re

import pyarrow as pa

from jobs.rows import COMMIT_FILE, PRIOR_SCHEMA, STATE_SCHEMA, Prior, Status
from jobs.runtime import arrow_filesystem, to_fs_paths
from rtb import catalog

CURRENT = "state/CURRENT.json"


def commit_files(output: str, folder: str, run_id: str, storage_options: dict) -> list[str]:
    """The commit files of ``run_id`` in ``folder`` (every attempt), as URIs; never another run's."""
    fs, root = catalog.url_to_fs(output, storage_options)
    paths = fs.glob(f"{root.rstrip('/')}/{folder}/{glob_escape(run_id)}-a*.parquet")
    return sorted(catalog.join(output, folder, posixpath.basename(p)) for p in paths
                  if (match := COMMIT_FILE.fullmatch(posixpath.basename(p))) and match["run"] == run_id)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)


def read_current(output: str, storage_options: dict) -> dict | None:
    """``state/CURRENT.json`` of the prefix, or None before the first completed run."""
    uri = catalog.join(output, CURRENT)
    fs, path = catalog.url_to_fs(uri, storage_options)
    if not fs.exists(path):
        return None
    return json.loads(fs.cat_file(path))


def _read(files: list[str], storage_options: dict, columns: list[str]):
    import ray

    return ray.data.read_parquet(to_fs_paths(files, storage_options),
                                 filesystem=arrow_filesystem(files[0], storage_options)).select_columns(columns)


def _as_prior(batch: pa.Table, status: str) -> pa.Table:
    n = batch.num_rows

    def column(name):
        return batch.column(name) if name in batch.column_names else pa.nulls(n, pa.string())

    return pa.table({"id": batch.column("id"), "prior_status": pa.array([status] * n, pa.string()),
                     "prior_key": column("content_key"), "prior_path": column("protected_path"),
                     "prior_sha256": column("protected_sha256"), "prior_run_id": column("run_id")},
                    schema=PRIOR_SCHEMA)


def load_prior(output: str, run_id: str, storage_options: dict) -> tuple[object | None, dict]:
    """The table ``id → prior_*`` the catalog is joined with, as a lazy Ray dataset (None when empty).

    Returns ``(dataset, info)``; ``info`` says which state was current and how many files this run had
    already committed (an interrupted attempt being resumed).
    """
    current = read_current(output, storage_options)
    state_files = list(current["files"]) if current else []
    logged = commit_files(output, "metrics", run_id, storage_options)
    failed = commit_files(output, "errors", run_id, storage_options)
    info = {"state_run_id": current["run_id"] if current else None, "state_files": len(state_files),
            "resumed_files": len(logged) + len(failed)}
    parts = []
    # 1. What this run already committed: protected ids and failed ids, each exactly once.
    if logged:
        parts.append(_read(logged, storage_options, ["id", "content_key", "protected_path", "protected_sha256", "run_id"])
                     .map_batches(_as_prior, batch_format="pyarrow", fn_kwargs={"status": Prior.COMMITTED}))
    if failed:
        parts.append(_read(failed, storage_options, ["id", "run_id"])
                     .map_batches(_as_prior, batch_format="pyarrow", fn_kwargs={"status": Prior.COMMITTED_ERROR}))
    # 2. The current state, less the ids this run has already committed (those rows take precedence).
    if state_files:
        state = _read(state_files, storage_options, STATE_SCHEMA.names).map_batches(
            _as_prior, batch_format="pyarrow", fn_kwargs={"status": Prior.STANDS})
        if parts:
            done = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
            state = state.join(done.select_columns(["id"]), "left_anti", num_partitions=join_partitions(0), on=("id",))
        parts.append(state)
    if not parts:
        return None, info
    return (parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])), info


def join_partitions(rows: int) -> int:
    """Hash partitions of the catalog ⋈ prior join: about 200 rows each (each is one block downstream)."""
    return int(min(4096, max(1, rows // 200)))


def join_catalog(dataset, prior, rows: int):
    """Attach each catalog row's prior record (full outer: ids of the state that left the catalog come out
    as rows without a catalog side, flagged by a null ``in_catalog``)."""
    flagged = dataset.map_batches(_flag_catalog, batch_format="pyarrow")
    return flagged.join(prior, "full_outer", num_partitions=join_partitions(rows), on=("id",))


def _flag_catalog(batch: pa.Table) -> pa.Table:
    return batch.append_column("in_catalog", pa.array([True] * batch.num_rows, pa.bool_()))


def clear_uncommitted(output: str, run_id: str, storage_options: dict) -> None:
    """Before an attempt: remove state parts of ``run_id`` that no ``CURRENT.json`` points to (written by an
    attempt that died before completing), and the manifest of an earlier completed attempt."""
    fs, root = catalog.url_to_fs(output, storage_options)
    current = read_current(output, storage_options) or {}
    keep = {catalog.url_to_fs(f, storage_options)[1] for f in current.get("files", [])}
    folder = f"{root.rstrip('/')}/state/{run_id}"
    for path in fs.glob(f"{glob_escape(folder)}/*.parquet"):
        if path not in keep:
            fs.rm(path)
    for path in fs.glob(f"{root.rstrip('/')}/missing/{glob_escape(run_id)}-a*.parquet"):
        fs.rm(path)  # re-derived by every attempt
    manifest = f"{root.rstrip('/')}/runs/{run_id}.json"
    if fs.exists(manifest):
        fs.rm(manifest)


def commit_state(output: str, run_id: str, files: list[str], storage_options: dict) -> None:
    """Make the state written by this run current (one PUT), then drop every other state."""
    catalog.put_bytes(catalog.join(output, CURRENT),
                      json.dumps({"run_id": run_id, "files": sorted(files)}, indent=2).encode(), storage_options)
    fs, root = catalog.url_to_fs(output, storage_options)
    keep = {catalog.url_to_fs(f, storage_options)[1] for f in files}
    for path in fs.glob(f"{root.rstrip('/')}/state/*/*.parquet"):
        if path not in keep:
            fs.rm(path)


def state_rows(table: pa.Table, run_id: str) -> pa.Table:
    """Result rows → the rows of the new state (ids whose protection stands after this run): protected now, or
    carried over from the state (unchanged, or missing but not pruned) or from an earlier attempt (committed)."""
    rows = []
    for r in table.to_pylist():
        status, prior = r["status"], r["prior_status"]
        if status == Status.OK:
            rows.append({"id": r["id"], "content_key": r["content_key"], "protected_path": r["protected_path"],
                         "protected_sha256": r["protected_sha256"], "run_id": run_id})
        elif (status in (Status.UNCHANGED, Status.MISSING) and prior == Prior.STANDS) or (
                status in (Status.COMMITTED, Status.MISSING) and prior == Prior.COMMITTED):
            rows.append({"id": r["id"], "content_key": r["prior_key"], "protected_path": r["prior_path"],
                         "protected_sha256": r["prior_sha256"], "run_id": r["prior_run_id"]})
    return pa.Table.from_pylist(rows, schema=STATE_SCHEMA)
