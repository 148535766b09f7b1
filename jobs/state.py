"""What is current in an output prefix, and how a run commits to it exactly once.

Layout under ``--output`` (besides ``images/`` and ``runs/``)::

    metrics/<run_id>-a<attempt>-<task>.parquet   the commit log: one row per id a run protected
    errors/<run_id>-a<attempt>-<task>.parquet    one row per id it could not protect
    errors/<run_id>-duplicates.parquet           one row per id that occurs more than once in the input
    missing/<run_id>-a<attempt>-<task>.parquet   ids of the state no longer in the catalog (pruned or not)
    state/<run_id>/part-a<attempt>-<task>.parquet  the state after that run: id, content_key, protected_path,
                                                 protected_sha256, run_id (STATE_SCHEMA), one row per id whose
                                                 protection stands
    state/CURRENT.json                           which state is current: {"run_id", "files"}; written last

How a run uses it (:func:`load_prior`): the current state, plus what *this* run id already committed in an
earlier, interrupted attempt, becomes one small table ``id → prior_*`` that Ray Data joins onto the catalog
(a hash join: the driver never holds it). A row whose key matches its state is ``unchanged``; a row this run
already committed is ``committed`` and not redone. Each write task of the sink commits its rows as whole
Parquet objects named by run, attempt and task (a retried task overwrites its own file), so every id ends
in exactly one metrics or errors row of the run however often it is interrupted and rerun. The new state is
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

import numpy as np
import pyarrow as pa

from jobs.stages import PRIOR_FIELDS, RESULT_SCHEMA
from jobs.storage import arrow_filesystem, to_fs_paths
from rtb import catalog
from rtb.catalog import ERRORS_SCHEMA, METRICS_SCHEMA, STATE_SCHEMA
from ray.data.datasource import Datasink

PRIOR_SCHEMA = pa.schema([("id", pa.string()), *PRIOR_FIELDS])
MISSING_SCHEMA = pa.schema([("id", pa.string()), ("run_id", pa.string()), ("pruned", pa.bool_())])
CURRENT = "state/CURRENT.json"


def commit_file_name(run_id: str, attempt: str, task: int) -> str:
    return f"{run_id}-a{attempt}-{task:05d}.parquet"


def commit_files(output: str, folder: str, run_id: str, storage_options: dict) -> list[str]:
    """The commit files of ``run_id`` in ``folder`` (every attempt), as URIs; never another run's."""
    fs, root = catalog.url_to_fs(output, storage_options)
    pattern = re.compile(re.escape(run_id) + r"-a[0-9a-f]{8}-\d{5}\.parquet")
    paths = fs.glob(f"{root.rstrip('/')}/{folder}/{glob_escape(run_id)}-a*.parquet")
    return sorted(catalog.join(output, folder, posixpath.basename(p)) for p in paths
                  if pattern.fullmatch(posixpath.basename(p)))


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
                     .map_batches(_as_prior, batch_format="pyarrow", fn_kwargs={"status": "committed"}))
    if failed:
        parts.append(_read(failed, storage_options, ["id", "run_id"])
                     .map_batches(_as_prior, batch_format="pyarrow", fn_kwargs={"status": "committed-error"}))
    # 2. The current state, less the ids this run has already committed (those rows take precedence).
    if state_files:
        state = _read(state_files, storage_options, STATE_SCHEMA.names).map_batches(
            _as_prior, batch_format="pyarrow", fn_kwargs={"status": "ok"})
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
    """Result rows → the rows of the new state (ids whose protection stands after this run)."""
    rows = []
    for r in table.to_pylist():
        status = r["status"]
        if status == "ok":
            rows.append({"id": r["id"], "content_key": r["content_key"], "protected_path": r["protected_path"],
                         "protected_sha256": r["protected_sha256"], "run_id": run_id})
        elif (status in ("unchanged", "missing") and r["prior_status"] == "ok") or (
                status in ("committed", "missing") and r["prior_status"] == "committed"):
            rows.append({"id": r["id"], "content_key": r["prior_key"], "protected_path": r["prior_path"],
                         "protected_sha256": r["prior_sha256"], "run_id": r["prior_run_id"]})
    return pa.Table.from_pylist(rows, schema=STATE_SCHEMA)


def split_results(table: pa.Table, run_id: str) -> tuple[pa.Table, pa.Table]:
    """Result rows → (metrics rows, error rows) of this attempt, both stamped with ``run_id``."""
    rows = table.to_pylist()
    metrics = [{**r, "run_id": run_id} for r in rows if r["status"] == "ok"]
    errors = [{"id": r["id"], "run_id": run_id, "stage": r["stage"], "error": r["error"]} for r in rows if r["status"] == "error"]
    return (pa.Table.from_pylist([{n: r.get(n) for n in METRICS_SCHEMA.names} for r in metrics], schema=METRICS_SCHEMA),
            pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA))


class ResultSink(Datasink):
    """Commits result rows: per write task one metrics, errors, missing and state file (whole objects).

    File names depend only on the run, the attempt and the task index, so a retried task overwrites its own
    files, and an attempt never touches what an earlier attempt committed.
    """

    def __init__(self, output: str, run_id: str, attempt: str, storage_options: dict | None = None,
                 rows_per_file: int = 500):
        self.output = output
        self.run_id = run_id
        self.attempt = attempt
        self.storage_options = storage_options or {}
        self.rows_per_file = rows_per_file
        self.returns: list[dict] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(b).to_arrow().cast(RESULT_SCHEMA) for b in blocks]
        tables = [t for t in tables if t.num_rows]
        summary = {"files": [], "state_files": [], "fingerprints": [], "devices": [], "missing_sample": [],
                   **{status: 0 for status in ("protected", "failed", "unchanged", "committed", "committed_ok",
                                               "missing", "pruned")}}
        if not tables:
            return summary
        table = pa.concat_tables(tables)
        name = commit_file_name(self.run_id, self.attempt, ctx.task_idx)
        status = np.array(table.column("status").to_pylist(), dtype=object)
        # 1. The new state's rows and the ids that left the catalog (not the commit: re-derived on resume).
        state = state_rows(table, self.run_id)
        if state.num_rows:
            uri = catalog.join(self.output, "state", self.run_id, f"part-{name}")
            catalog.write_table(state, uri, self.storage_options)
            summary["state_files"].append(uri)
        gone = [r for r in table.to_pylist() if r["status"] in ("missing", "pruned")]
        if gone:
            rows = [{"id": r["id"], "run_id": self.run_id, "pruned": r["status"] == "pruned"} for r in gone]
            catalog.write_table(pa.Table.from_pylist(rows, schema=MISSING_SCHEMA),
                                catalog.join(self.output, "missing", name), self.storage_options)
            summary["missing_sample"] = sorted(r["id"] for r in gone)[:20]
        # 2. The commit: errors, then metrics (whole objects).
        metrics, errors = split_results(table, self.run_id)
        for folder, part in (("errors", errors), ("metrics", metrics)):
            if part.num_rows:
                uri = catalog.join(self.output, folder, name)
                catalog.write_table(part, uri, self.storage_options)
                summary["files"].append(uri)
        prior = np.array(table.column("prior_status").to_pylist(), dtype=object)
        summary.update(
            protected=metrics.num_rows, failed=errors.num_rows, unchanged=int((status == "unchanged").sum()),
            committed=int((status == "committed").sum()),
            committed_ok=int(((status == "committed") & (prior == "committed")).sum()),
            missing=len(gone), pruned=int((status == "pruned").sum()),
            fingerprints=sorted(set(metrics.column("model_fingerprint").to_pylist())),
            devices=sorted(set(metrics.column("device").to_pylist())),
        )
        return summary

    def on_write_complete(self, write_result) -> None:
        self.returns = list(write_result.write_returns)


def id_hash(value) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")


def find_duplicates(ids) -> tuple[int, dict[str, int]]:
    """Stream the id column once: (row count, {id: occurrences} for ids seen more than once).

    The driver keeps 8 bytes per row (a hash), not the ids; a second pass resolves the few duplicated hashes.
    """
    hashes = [np.array([id_hash(v) for v in b["id"]], dtype=np.uint64) for b in ids.iter_batches(batch_size=8192, batch_format="numpy")]
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    values, counts = np.unique(all_hashes, return_counts=True)
    repeated = set(values[counts > 1].tolist())
    duplicates: dict[str, int] = {}
    if repeated:
        for batch in ids.iter_batches(batch_size=8192, batch_format="numpy"):
            for value in batch["id"]:
                if id_hash(value) in repeated:
                    duplicates[str(value)] = duplicates.get(str(value), 0) + 1
        duplicates = {k: v for k, v in duplicates.items() if v > 1}
    return len(all_hashes), duplicates


def write_duplicates(output: str, run_id: str, duplicates: dict[str, int], storage_options: dict) -> str | None:
    """One error row per duplicated id (a fixed name: an attempt overwrites it) and no image for it."""
    if not duplicates:
        return None
    uri = catalog.join(output, "errors", f"{run_id}-duplicates.parquet")
    rows = [
        {"id": i, "run_id": run_id, "stage": "read",
         "error": f"id {i!r} occurs {n} times in the input; ids must be unique, so none of its rows was protected"}
        for i, n in sorted(duplicates.items())
    ]
    catalog.write_table(pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA), uri, storage_options)
    for image_id in duplicates:
        try:
            catalog.check_id(image_id)
        except ValueError:
            continue
        catalog.delete(catalog.join(output, "images", f"{image_id}.png"), storage_options)
    return uri
