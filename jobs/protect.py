"""The protection job: a catalog of images and masks in, protected PNGs, metrics and a run manifest out.

Runs the same on a laptop (a local Ray is started), on one GPU box and on a Ray cluster (``RAY_ADDRESS`` set,
or under ``ray job submit``, joins it)::

    python jobs/protect.py --input s3://bucket/catalog/ --output s3://bucket/protected/ --model reference

Shape (one chained Ray Data expression, see :func:`run`)::

    read shards → decode + validate (CPU tasks) → Protector (actor pool: model loaded once per actor,
    GPU when asked) → encode PNG + keyed PUT of images/<id>.png (CPU tasks) → ResultSink (metrics/ and
    errors/ Parquet) → runs/<run_id>.json written last by the driver

Output layout under ``--output``::

    images/<id>.png                  protected image, lossless, original size; RGBA keeps its alpha
    metrics/<run_id>-<task>.parquet  one row per protected id (METRICS_SCHEMA in rtb/catalog.py)
    errors/<run_id>-<task>.parquet   one row per id that could not be protected: id, run_id, stage, error
    runs/<run_id>.json               manifest: config, model fingerprint, versions, counts, throughput

Accounting: every distinct input id ends in exactly one row of metrics/ or errors/ of a run.
- An id that occurs more than once in the input is ambiguous: none of its rows is protected and it gets
  ONE error row (stage ``read``) saying how often it occurs.
- A rerun with the same ``--run-id`` replaces that run: its old metrics/errors files and manifest are deleted
  before it starts, and images/<id>.png are overwritten in place (keyed writes are idempotent). Runs with
  different run ids keep their own rows side by side; the manifest of each lists its files.

Exit status: 0 when the job ran (even with error rows), 2 when it could not (bad arguments, unreadable input,
a model that does not load), with a one-line reason on stderr.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image
from ray.data.datasource import Datasink

if __package__ in (None, ""):  # `python jobs/protect.py` (ray job submit): make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtb import catalog
from rtb.catalog import ERRORS_SCHEMA, METRICS_SCHEMA

METHODS = ("rtb", "photoguard-encoder", "photoguard-diffusion", "noise")

# Rows between the stages. Explicit schemas keep blocks of only-error rows type-compatible with the rest.
DECODED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),  # "ok" or "error"
        ("stage", pa.string()),  # where an error happened: read, validate, protect, write
        ("error", pa.string()),
        ("source_sha256", pa.string()),
        ("prompt", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("pixel_mode", pa.string()),  # mode of the raw pixels below: L, RGB or RGBA
        ("pixels", pa.binary()),  # Image.tobytes() of the decoded image
        ("mask", pa.binary()),  # np.packbits of the H×W boolean mask
    ]
)
RESULT_FIELDS = [f for f in METRICS_SCHEMA if f.name != "run_id"]
PROTECTED_SCHEMA = pa.schema([*RESULT_FIELDS, ("stage", pa.string()), ("error", pa.string()), ("pixels", pa.binary())])
RESULT_SCHEMA = pa.schema([*RESULT_FIELDS, ("stage", pa.string()), ("error", pa.string())])


@dataclass(frozen=True)
class JobConfig:
    """One protection run, as given on the command line (saved, without secrets, in the manifest)."""

    # Catalog URI: a prefix or file that fsspec understands (/path, file://, s3://, memory://).
    input: str
    # Output prefix; images/, metrics/, errors/ and runs/ are written under it.
    output: str
    # Model spec for rtb.load_inpainter: "reference", a diffusers directory, a .pt/.safetensors file, a URI.
    model: str = "reference"
    # Protection method: rtb, photoguard-encoder, photoguard-diffusion or noise.
    method: str = "rtb"
    # Perturbation budget; None = the method's default (rtb: 0.025 L∞).
    eps: float | None = None
    # Optimisation steps; None = the method's default (rtb: 20).
    steps: int | None = None
    # Images per optimizer batch and per block into the actor stage.
    batch_size: int = 8
    # Actors in the pool; None = one per GPU in the cluster (divided by gpus_per_actor), else 1.
    actors: int | None = None
    # GPUs reserved per actor (fractions share a GPU); None = 1 when the cluster has GPUs, else 0 (CPU).
    gpus_per_actor: float | None = None
    # Input format: auto (decided from the files at --input), parquet, webdataset or pairs.
    format: str = "auto"
    # S3-compatible endpoint URL; None = AWS_ENDPOINT_URL from the environment, or AWS itself.
    s3_endpoint: str | None = None
    # Run id naming the manifest and the metrics/errors files; None = a new UTC-timestamped id.
    run_id: str | None = None
    # Base seed of the optimizer (per-image seeds derive from it and the image content).
    seed: int = 0
    # rtb only: attacker-like holes added to the loss per image and step (mask augmentation; 0 = the paper's
    # losses). Each costs one more forward per step; see docs/efficacy.md for what it buys.
    augment_holes: int = 0
    # Process only the first N rows of the input (in file order); None = all.
    limit: int | None = None
    # Seconds without any block moving before Ray Data gives up (its default of 30 min is short for a
    # slow optimizer or GPU nodes that take long to start).
    no_progress_timeout_s: float = 6 * 3600.0


class JobError(Exception):
    """The job could not run; the message is the one-line reason shown to the user."""


# ----------------------------------------------------------------------------------------------------------
# Checks and environment
# ----------------------------------------------------------------------------------------------------------


def check_config(config: JobConfig) -> None:
    """Raise ``ValueError`` naming the bad value before anything starts."""
    if config.method not in METHODS:
        raise ValueError(f"--method {config.method!r} is not one of {', '.join(METHODS)}")
    if config.format not in ("auto", *catalog.FORMATS):
        raise ValueError(f"--format {config.format!r} is not one of auto, {', '.join(catalog.FORMATS)}")
    if config.eps is not None and not config.eps > 0:
        raise ValueError(f"--eps must be positive, got {config.eps}")
    if config.steps is not None and config.steps < 0:
        raise ValueError(f"--steps must be at least 0, got {config.steps}")
    if config.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.actors is not None and config.actors < 1:
        raise ValueError(f"--actors must be at least 1, got {config.actors}")
    if config.gpus_per_actor is not None and not (0 <= config.gpus_per_actor):
        raise ValueError(f"--gpus-per-actor must be 0 or more, got {config.gpus_per_actor}")
    if config.gpus_per_actor and config.gpus_per_actor > 1 and config.gpus_per_actor != int(config.gpus_per_actor):
        raise ValueError(f"--gpus-per-actor above 1 must be a whole number, got {config.gpus_per_actor}")
    if config.limit is not None and config.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {config.limit}")
    if not (isinstance(config.augment_holes, int) and 0 <= config.augment_holes <= 16):
        raise ValueError(f"--augment-holes must be an integer in [0, 16], got {config.augment_holes!r}")
    if config.run_id is not None:
        try:
            catalog.check_id(config.run_id)
        except ValueError:
            raise ValueError(
                f"--run-id {config.run_id!r} must be letters, digits, '.', '_' and '-', starting with a letter or digit"
            ) from None
        if "/" in config.run_id:
            raise ValueError(f"--run-id {config.run_id!r} must not contain '/'")
    source, target = str(config.input).rstrip("/"), str(config.output).rstrip("/")
    if not catalog.is_remote(source):
        source = os.path.abspath(source.removeprefix("file://"))
    if not catalog.is_remote(target):
        target = os.path.abspath(target.removeprefix("file://"))
    if target == source or target.startswith(source + "/"):
        raise ValueError(f"--output {config.output!r} must not be --input or inside it (outputs would be read as input)")


def storage_options_for(uri: str, endpoint: str | None) -> dict:
    """fsspec options for ``uri``, explicit so that every Ray worker uses the same endpoint and keys."""
    if not str(uri).startswith(("s3://", "s3a://")):
        return {}
    options: dict = {}
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return options


def worker_env(endpoint: str | None) -> dict[str, str]:
    """The AWS/cache environment every Ray worker needs (runtime_env env_vars)."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
             "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RTB_CACHE")
    env = {name: os.environ[name] for name in names if os.environ.get(name)}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def check_model(spec: str, method: str, storage_options: dict) -> str | None:
    """Fail fast, before any Ray work, on a model that will not load; returns its fingerprint when known.

    Single-file models (the reference, .pt, .safetensors) are loaded once on the driver's CPU: they are small,
    and a load error then surfaces as one line instead of an actor dying on every node. A diffusers directory
    (GBs) is only checked for ``model_index.json``; the actors load it.
    """
    from rtb import load_inpainter
    from rtb.protect import VAE_METHODS

    if spec != "reference":
        fs, path = catalog.url_to_fs(spec, storage_options)
        if not fs.exists(path):
            raise ValueError(f"--model {spec!r} does not exist")
        if fs.isdir(path):
            if not fs.exists(path.rstrip("/") + "/model_index.json"):
                raise ValueError(f"--model {spec!r} is a directory without model_index.json (not a diffusers pipeline)")
            return None
    if method in VAE_METHODS:
        raise ValueError(f"--method {method!r} needs a diffusers model directory (with a VAE); got --model {spec!r}")
    try:
        return load_inpainter(spec, device="cpu", storage_options=storage_options).fingerprint
    except ValueError as error:
        raise ValueError(f"--model {spec!r} does not load: {error}") from None


def arrow_filesystem(uri: str, storage_options: dict):
    """A pyarrow filesystem over fsspec for Ray's readers (same endpoint/keys on every worker)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = catalog.url_to_fs(uri, storage_options)
    return PyFileSystem(FSSpecHandler(fs))


def to_fs_paths(files: list[str], storage_options: dict) -> list[str]:
    return [catalog.url_to_fs(f, storage_options)[1] for f in files]


def check_parquet_columns(path: str, storage_options: dict) -> None:
    """``ValueError`` when a catalog shard lacks a required column."""
    import pyarrow.parquet as pq

    with catalog.url_to_fs(path, storage_options)[0].open(catalog.url_to_fs(path, storage_options)[1], "rb") as f:
        names = pq.read_schema(f).names
    missing = [c for c in ("id", "image", "mask") if c not in names]
    if missing:
        raise ValueError(f"catalog shard {path!r} has no {', '.join(missing)} column (it has {', '.join(names)})")


def id_hash(value) -> int:
    return int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")


# ----------------------------------------------------------------------------------------------------------
# Stages (plain functions and one class: each runs without Ray on a pyarrow table)
# ----------------------------------------------------------------------------------------------------------


def read_pair_rows(row: dict, storage_options: dict) -> dict:
    """Ray ``map``: a listed pair → ``{id, image, mask, prompt, read_error}`` with the bytes fetched."""
    return catalog.read_pair(row, storage_options)


def read_tar_rows(row: dict) -> list[dict]:
    """Ray ``flat_map``: one tar shard's bytes → one row per key."""
    return list(catalog.read_tar(row["bytes"], row["path"]))


def _error_row(row_id, stage: str, error: str, schema: pa.Schema) -> dict:
    out = {name: None for name in schema.names}
    out.update(id=None if row_id is None else str(row_id), status="error", stage=stage, error=error)
    return out


def decode_and_validate(batch: pa.Table, duplicates: frozenset[str] = frozenset(), max_mask_fraction: float = 0.9) -> pa.Table:
    """Decode and check every row; a bad row becomes an error row, never an exception.

    Rows whose id is in ``duplicates`` are dropped here (the driver writes one error row per such id).
    """
    from rtb.images import check_pair, decode_image, decode_mask

    out = []
    for row in batch.to_pylist():
        row_id = row.get("id")
        if row_id is not None and str(row_id) in duplicates:
            continue
        # 1. The id must be a safe object name.
        try:
            catalog.check_id(row_id)
        except ValueError as error:
            out.append(_error_row(row_id, "validate", str(error), DECODED_SCHEMA))
            continue
        # 2. The reader may already have found the row broken (missing mask, unreadable file).
        if row.get("read_error"):
            out.append(_error_row(row_id, "read", row["read_error"], DECODED_SCHEMA))
            continue
        if row.get("image") is None:
            out.append(_error_row(row_id, "read", "image bytes are missing (null)", DECODED_SCHEMA))
            continue
        if row.get("mask") is None:
            out.append(_error_row(row_id, "read", "missing mask: the mask column is null", DECODED_SCHEMA))
            continue
        # 3. Decode and check the pair.
        try:
            image = decode_image(row["image"])
            try:
                mask = decode_mask(row["mask"])
            except ValueError as error:
                raise ValueError(f"mask: {error}") from None
            check_pair(image, mask, max_mask_fraction)
        except ValueError as error:
            out.append(_error_row(row_id, "validate", str(error), DECODED_SCHEMA))
            continue
        # 4. Keep raw pixels (no re-decode on the accelerator); palette and exotic modes become RGB(A).
        if image.mode not in ("L", "RGB", "RGBA"):
            has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        out.append(
            {
                "id": row_id,
                "status": "ok",
                "stage": None,
                "error": None,
                "source_sha256": catalog.sha256_hex(bytes(row["image"])),
                "prompt": row.get("prompt"),
                "width": image.width,
                "height": image.height,
                "pixel_mode": image.mode,
                "pixels": image.tobytes(),
                "mask": np.packbits(mask).tobytes(),
            }
        )
    return pa.Table.from_pylist(out, schema=DECODED_SCHEMA)


class Protector:
    """Actor stage: loads the model once, then protects batches of decoded rows.

    Usable without Ray: ``Protector(model="reference")(decoded_table)``.
    """

    def __init__(self, model: str = "reference", method: str = "rtb", eps: float | None = None,
                 steps: int | None = None, seed: int = 0, batch_size: int = 8, augment_holes: int = 0,
                 storage_options: dict | None = None, threads: int | None = None, device: str | None = None):
        import torch

        from rtb import ProtectConfig, config_hash, load_inpainter

        # 1. Threads: a CPU actor uses exactly its share of the cores (see cpu_threads).
        if threads:
            torch.set_num_threads(threads)
        # 2. Load the model once per actor (a restart reruns this).
        self.inpainter = load_inpainter(model, device=device, storage_options=storage_options)
        self.method = method
        self.config = ProtectConfig(eps=eps, steps=steps, batch_size=batch_size, seed=seed,
                                    augment_holes=augment_holes)
        self.config_hash = config_hash(self.config, method)

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
        # 2. Rows out: stats for protected ones, errors passed through.
        out = []
        for row in rows:
            if row["status"] != "ok":
                out.append(_error_row(row["id"], row["stage"], row["error"], PROTECTED_SCHEMA))
                continue
            image, stats, error = results[id(row)]
            if error is not None:
                out.append(_error_row(row["id"], "protect", error, PROTECTED_SCHEMA))
                continue
            values = dataclasses.asdict(stats)
            out.append(
                {
                    **{name: values.get(name) for name in PROTECTED_SCHEMA.names},
                    "id": row["id"],
                    "status": "ok",
                    "model_fingerprint": self.inpainter.fingerprint,
                    "config_hash": self.config_hash,
                    "source_sha256": row["source_sha256"],
                    "mode": image.mode,
                    "pixels": image.tobytes(),
                    "stage": None,
                    "error": None,
                }
            )
        return pa.Table.from_pylist(out, schema=PROTECTED_SCHEMA)


def write_images(batch: pa.Table, output: str, storage_options: dict | None = None) -> pa.Table:
    """CPU stage: encode each protected image as PNG and PUT it at ``images/<id>.png`` (idempotent)."""
    out = []
    for row in batch.to_pylist():
        pixels = row.pop("pixels")
        if row["status"] == "ok":
            uri = catalog.join(output, "images", f"{row['id']}.png")
            try:
                image = Image.frombytes(row["mode"], (row["width"], row["height"]), pixels)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=6)
                data = buffer.getvalue()
                catalog.put_bytes(uri, data, storage_options)
                row.update(protected_path=uri, protected_sha256=catalog.sha256_hex(data))
            except (OSError, ValueError) as error:
                row = _error_row(row["id"], "write", f"could not write {uri}: {type(error).__name__}: {error}", RESULT_SCHEMA)
        out.append(row)
    return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


def split_results(table: pa.Table, run_id: str) -> tuple[pa.Table, pa.Table]:
    """Result rows → (metrics rows, error rows), both stamped with ``run_id``."""
    rows = table.to_pylist()
    metrics = [{**r, "run_id": run_id} for r in rows if r["status"] == "ok"]
    errors = [{"id": r["id"], "run_id": run_id, "stage": r["stage"], "error": r["error"]} for r in rows if r["status"] != "ok"]
    return (pa.Table.from_pylist([{n: r.get(n) for n in METRICS_SCHEMA.names} for r in metrics], schema=METRICS_SCHEMA),
            pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA))


class ResultSink(Datasink):
    """Writes ``metrics/<run_id>-<task>.parquet`` and ``errors/<run_id>-<task>.parquet`` per write task.

    File names depend only on the run id and the task index, so a retried task overwrites its own file.
    """

    def __init__(self, output: str, run_id: str, storage_options: dict | None = None, rows_per_file: int = 1000):
        self.output = output
        self.run_id = run_id
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
        summary = {"protected": 0, "failed": 0, "files": [], "fingerprints": [], "devices": []}
        if not tables:
            return summary
        metrics, errors = split_results(pa.concat_tables(tables), self.run_id)
        for folder, table in (("metrics", metrics), ("errors", errors)):
            if table.num_rows:
                uri = catalog.join(self.output, folder, f"{self.run_id}-{ctx.task_idx:05d}.parquet")
                catalog.write_table(table, uri, self.storage_options)
                summary["files"].append(uri)
        summary["protected"] = metrics.num_rows
        summary["failed"] = errors.num_rows
        summary["fingerprints"] = sorted(set(metrics.column("model_fingerprint").to_pylist()))
        summary["devices"] = sorted(set(metrics.column("device").to_pylist()))
        return summary

    def on_write_complete(self, write_result) -> None:
        self.returns = list(write_result.write_returns)


# ----------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------


def start_ray(config: JobConfig) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    The AWS/cache environment of the driver is shipped to every worker (runtime_env env_vars), except keys
    the submitted job's own runtime env already sets: Ray refuses to merge the same key twice.
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "local"
    env = worker_env(config.s3_endpoint)
    injected = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    already = ((injected.get("runtime_env") or {}).get("env_vars") or {}).keys()
    env = {key: value for key, value in env.items() if key not in already}
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, logging_level="WARNING",
             include_dashboard=False if address == "local" else None)  # a local run has no use for it


def read_catalog(fmt: str, files: list[str], storage_options: dict, ids_only: bool = False):
    """The catalog as a Ray dataset of ``{id, image, mask, prompt[, read_error]}`` (or just ``{id}``)."""
    import ray

    if fmt == "parquet":
        shards = catalog.shard_files(files, fmt)
        ds = ray.data.read_parquet(
            to_fs_paths(shards, storage_options), filesystem=arrow_filesystem(shards[0], storage_options)
        )
        return ds.select_columns(["id"]) if ids_only else ds  # projection is pushed down into the read
    if fmt == "webdataset":
        shards = catalog.shard_files(files, fmt)
        ds = ray.data.read_binary_files(
            to_fs_paths(shards, storage_options),
            filesystem=arrow_filesystem(shards[0], storage_options),
            include_paths=True,
        )
        if ids_only:
            return ds.flat_map(lambda r: [{"id": i} for i in catalog.tar_ids(r["bytes"], r["path"])])
        return ds.flat_map(read_tar_rows)
    pairs = catalog.list_pairs(files)
    if not pairs:
        raise ValueError("no image/mask pairs found")
    ds = ray.data.from_items(pairs)
    if ids_only:
        return ds.map(lambda r: {"id": r["id"]})
    return ds.map(read_pair_rows, fn_kwargs={"storage_options": storage_options})


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


def clear_run(output: str, run_id: str, storage_options: dict) -> None:
    """Delete a previous attempt of this run id (its metrics/errors files and manifest)."""
    fs, root = catalog.url_to_fs(output, storage_options)
    for folder in ("metrics", "errors"):
        for path in fs.glob(f"{root.rstrip('/')}/{folder}/{run_id}-*.parquet"):
            fs.rm(path)
    manifest = f"{root.rstrip('/')}/runs/{run_id}.json"
    if fs.exists(manifest):
        fs.rm(manifest)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("rtb", "ray", "torch", "pyarrow", "numpy", "pillow", "fsspec", "s3fs", "diffusers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def resolve_pool(config: JobConfig) -> tuple[int, float]:
    """(actors, gpus per actor) from the flags and the cluster's GPUs."""
    import ray

    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    if config.actors is not None:
        return config.actors, gpus
    if gpus and cluster_gpus:
        return max(1, int(cluster_gpus // gpus)), gpus
    return 1, gpus


def cpu_threads(actors: int) -> int:
    """Torch threads per CPU actor: the cluster's cores minus one (left to the decode/encode stages), shared.

    Oversubscribing cores is what hurts most on a busy machine: measured here (2 shared cores), one thread
    protected 0.68 images/s and two threads 0.09.
    """
    import ray

    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    return max(1, (cpus - 1) // actors)


def run(config: JobConfig) -> dict:
    """Run the job; returns the manifest. Raises ``JobError`` when it cannot run."""
    import ray

    started = time.time()
    # 1. Check the arguments and the input.
    try:
        check_config(config)
    except ValueError as error:
        raise JobError(str(error)) from None
    run_id = config.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    in_options = storage_options_for(config.input, config.s3_endpoint)
    out_options = storage_options_for(config.output, config.s3_endpoint)
    try:
        files = catalog.list_files(config.input, in_options)
        fmt = catalog.detect_format(files, config.input) if config.format == "auto" else config.format
        if fmt in ("parquet", "webdataset") and not catalog.shard_files(files, fmt):
            raise ValueError(f"no {'.parquet' if fmt == 'parquet' else '.tar'} shards under {config.input!r}")
        if fmt == "parquet":
            check_parquet_columns(catalog.shard_files(files, fmt)[0], in_options)
    except (ValueError, OSError) as error:
        raise JobError(f"cannot read input {config.input!r}: {error}") from None
    try:
        fingerprint = check_model(config.model, config.method, storage_options_for(config.model, config.s3_endpoint))
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None

    # 2. Start or join Ray and tune Ray Data for a slow, stateful middle stage.
    start_ray(config)
    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = config.no_progress_timeout_s
    if config.limit is not None:
        context.execution_options.preserve_order = True  # "first N rows" must mean the same rows in both passes
    actors, gpus = resolve_pool(config)
    threads = None if gpus else cpu_threads(actors)

    # 3. Count rows and find duplicated ids (one pass over the id column only).
    ids = read_catalog(fmt, files, in_options, ids_only=True)
    if config.limit is not None:
        ids = ids.limit(config.limit)
    ids = ids.materialize()
    rows_read, duplicates = find_duplicates(ids)
    del ids
    clear_run(config.output, run_id, out_options)
    ready = time.time()

    # 4. The pipeline: read → decode/validate → protect (actors) → encode/PUT → metrics/errors Parquet.
    sink = ResultSink(config.output, run_id, out_options)
    dataset = read_catalog(fmt, files, in_options)
    if config.limit is not None:
        dataset = dataset.limit(config.limit)
    (
        dataset.map_batches(
            decode_and_validate,
            batch_format="pyarrow",
            batch_size=config.batch_size,
            fn_kwargs={"duplicates": frozenset(duplicates)},
        )
        .repartition(target_num_rows_per_block=config.batch_size)
        .map_batches(
            Protector,
            batch_format="pyarrow",
            batch_size=config.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=actors),
            num_gpus=gpus,
            fn_constructor_kwargs={
                "model": config.model,
                "method": config.method,
                "eps": config.eps,
                "steps": config.steps,
                "seed": config.seed,
                "batch_size": config.batch_size,
                "augment_holes": config.augment_holes,
                "storage_options": storage_options_for(config.model, config.s3_endpoint),
                "threads": threads,
                "device": "cuda" if gpus else "cpu",
            },
        )
        .map_batches(
            write_images,
            batch_format="pyarrow",
            batch_size=config.batch_size,
            fn_kwargs={"output": config.output, "storage_options": out_options},
            # Half a CPU: the stage mostly waits on PUTs. It also keeps this stage from being fused into the
            # sink, which bundles 1000 rows per file: fused, protected pixels would pile up until then.
            num_cpus=0.5,
        )
        .write_datasink(sink)
    )

    # 5. One error row per duplicated id, then the manifest (last: it marks the run complete).
    files_written = [f for r in sink.returns for f in r["files"]]
    if duplicates:
        uri = catalog.join(config.output, "errors", f"{run_id}-duplicates.parquet")
        rows = [
            {"id": i, "run_id": run_id, "stage": "read",
             "error": f"id {i!r} occurs {n} times in the input; ids must be unique, so none of its rows was protected"}
            for i, n in sorted(duplicates.items())
        ]
        catalog.write_table(pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA), uri, out_options)
        files_written.append(uri)
    protected = sum(r["protected"] for r in sink.returns)
    failed = sum(r["failed"] for r in sink.returns) + len(duplicates)
    counts = {"read": rows_read, "ids": protected + failed, "protected": protected, "failed": failed,
              "duplicate_ids": len(duplicates), "duplicate_rows": sum(duplicates.values())}
    fingerprints = sorted({f for r in sink.returns for f in r["fingerprints"]} | ({fingerprint} if fingerprint else set()))
    devices = sorted({d for r in sink.returns for d in r["devices"]})
    pool = {"run_id": run_id, "format": fmt, "actors": actors, "gpus_per_actor": gpus, "threads_per_actor": threads}
    manifest = build_manifest(config, pool, counts, fingerprints, devices, files_written, (started, ready, time.time()))
    catalog.put_bytes(catalog.join(config.output, "runs", f"{run_id}.json"),
                      json.dumps(manifest, indent=2, sort_keys=True).encode(), out_options)
    return manifest


def build_manifest(config: JobConfig, resolved: dict, counts: dict, fingerprints: list[str], devices: list[str],
                   files_written: list[str], times: tuple[float, float, float]) -> dict:
    """The run manifest: resolved config, model fingerprint, versions, counts, files and throughput."""
    from rtb import ProtectConfig, config_hash
    from rtb.protect import resolved_budget

    started, ready, finished = times
    protect_config = ProtectConfig(eps=config.eps, steps=config.steps, batch_size=config.batch_size, seed=config.seed,
                                   augment_holes=config.augment_holes)
    eps, steps = resolved_budget(config.method, protect_config)
    wall, pipeline = finished - started, finished - ready
    return {
        "run_id": resolved["run_id"],
        "status": "complete",
        "input": config.input,
        "output": config.output,
        "format": resolved["format"],
        "config": {**dataclasses.asdict(config), **resolved, "eps": eps, "steps": steps},
        "protect_config": dataclasses.asdict(protect_config),
        "config_hash": config_hash(protect_config, config.method),
        "model": config.model,
        "model_fingerprint": fingerprints[0] if len(fingerprints) == 1 else (fingerprints or None),
        "devices": devices,
        "versions": package_versions(),
        "counts": counts,
        "files": sorted(files_written),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
        "finished_at": dt.datetime.fromtimestamp(finished, dt.timezone.utc).isoformat(),
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(ready - started, 3),
        "pipeline_seconds": round(pipeline, 3),
        "images_per_second": round(counts["protected"] / wall, 4) if wall > 0 else None,
        "pipeline_images_per_second": round(counts["protected"] / pipeline, 4) if pipeline > 0 else None,
    }


def summary_line(manifest: dict) -> str:
    counts = manifest["counts"]
    return (
        f"rtb protect: run {manifest['run_id']}: protected {counts['protected']}, failed {counts['failed']} "
        f"of {counts['read']} rows read in {manifest['wall_seconds']:.1f} s "
        f"({manifest['images_per_second'] or 0:.3f} images/s); manifest "
        f"{catalog.join(manifest['output'], 'runs', manifest['run_id'] + '.json')}"
    )


def one_line(error: BaseException) -> str:
    """The most specific one-line reason inside a (possibly Ray-wrapped) exception."""
    text = str(error)
    for marker in ("ValueError: ", "FileNotFoundError: ", "PermissionError: ", "OSError: ", "RuntimeError: "):
        if marker in text:
            tail = text[text.rindex(marker):].strip().splitlines()
            return tail[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def main(argv: list[str] | None = None) -> None:
    """``python jobs/protect.py ...`` (the ``ray job submit`` entrypoint): the options of ``rtb protect``."""
    from jobs.cli import cli

    cli.main(args=["protect", *(sys.argv[1:] if argv is None else argv)], prog_name="protect.py")


if __name__ == "__main__":
    main()
