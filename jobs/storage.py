"""Where the job's bytes come from and go to: fsspec options for every worker, the catalog as a Ray dataset,
and the Ray session itself. Shared by the protect and evaluate jobs and by ``rtb shard``."""

from __future__ import annotations

import json
import os

from rtb import catalog

# Bounded retries for every S3 request: botocore's "standard" mode retries 5xx such as 503 SlowDown,
# throttling and connection resets with exponential backoff, up to this many attempts ($RTB_S3_ATTEMPTS);
# s3fs retries the whole call on SlowDown and connection errors up to 5 times on top (its class default).
# What still fails becomes an error row.
S3_ATTEMPTS = 5


def storage_options_for(uri: str, endpoint: str | None) -> dict:
    """fsspec options for ``uri``, explicit so that every Ray worker uses the same endpoint, keys and retries."""
    if not str(uri).startswith(("s3://", "s3a://")):
        return {}
    raw = os.environ.get("RTB_S3_ATTEMPTS") or str(S3_ATTEMPTS)
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"RTB_S3_ATTEMPTS must be a whole number of at least 1, got {raw!r}")
    attempts = int(raw)
    options: dict = {"config_kwargs": {"retries": {"max_attempts": attempts, "mode": "standard"}}}
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


def start_ray(endpoint: str | None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local Ray.

    The AWS/cache environment of the driver is shipped to every worker (runtime_env env_vars), except keys
    the submitted job's own runtime env already sets: Ray refuses to merge the same key twice.
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "local"
    env = worker_env(endpoint)
    injected = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    already = ((injected.get("runtime_env") or {}).get("env_vars") or {}).keys()
    env = {key: value for key, value in env.items() if key not in already}
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, logging_level="WARNING",
             include_dashboard=False if address == "local" else None)  # a local run has no use for it


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

    fs, fs_path = catalog.url_to_fs(path, storage_options)
    with fs.open(fs_path, "rb") as f:
        names = pq.read_schema(f).names
    missing = [c for c in ("id", "image", "mask") if c not in names]
    if missing:
        raise ValueError(f"catalog shard {path!r} has no {', '.join(missing)} column (it has {', '.join(names)})")


def read_pair_rows(row: dict, storage_options: dict) -> dict:
    """Ray ``map``: a listed pair → ``{id, image, mask, prompt, read_error}`` with the bytes fetched."""
    return catalog.read_pair(row, storage_options)


def read_tar_rows(row: dict) -> list[dict]:
    """Ray ``flat_map``: one tar shard's bytes → one row per key."""
    return list(catalog.read_tar(row["bytes"], row["path"]))


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
