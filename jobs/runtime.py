"""What every job needs from its surroundings: storage options for every worker, the Ray session, the size of
the actor pool and the CPU threads of each actor, Ray Data's settings, and the one error a job raises.

Used by ``rtb protect``, ``rtb evaluate``, ``rtb masks``, ``rtb persguard`` and the small commands; nothing here
knows what a job does.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass

from rtb import catalog

# Bounded retries for every S3 request: botocore's "standard" mode retries 5xx such as 503 SlowDown,
# throttling and connection resets with exponential backoff, up to this many attempts ($RTB_S3_ATTEMPTS);
# s3fs retries the whole call on SlowDown and connection errors up to 5 times on top (its class default).
# What still fails becomes an error row.
S3_ATTEMPTS = 5
# The environment every Ray worker needs from the driver's (shipped in runtime_env env_vars).
WORKER_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RTB_CACHE")


class JobError(Exception):
    """A job could not run; the message is the one-line reason shown to the user (exit status 2)."""


# ----------------------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------------------


def storage_options_for(uri: str, endpoint: str | None) -> dict:
    """fsspec options for ``uri``, explicit so that every Ray worker uses the same endpoint, keys and retries."""
    if not str(uri).startswith(("s3://", "s3a://")):
        return {}
    raw = os.environ.get("RTB_S3_ATTEMPTS") or str(S3_ATTEMPTS)
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"RTB_S3_ATTEMPTS must be a whole number of at least 1, got {raw!r}")
    options: dict = {"config_kwargs": {"retries": {"max_attempts": int(raw), "mode": "standard"}}}
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return options


def arrow_filesystem(uri: str, storage_options: dict):
    """A pyarrow filesystem over fsspec for Ray's readers (same endpoint/keys on every worker)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, _ = catalog.url_to_fs(uri, storage_options)
    return PyFileSystem(FSSpecHandler(fs))


def to_fs_paths(files: list[str], storage_options: dict) -> list[str]:
    """URIs → the protocol-less paths Ray's readers take alongside :func:`arrow_filesystem`."""
    return [catalog.url_to_fs(f, storage_options)[1] for f in files]


# ----------------------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------------------


def worker_env(endpoint: str | None) -> dict[str, str]:
    """The AWS/cache environment every Ray worker needs (runtime_env env_vars)."""
    env = {name: os.environ[name] for name in WORKER_ENV if os.environ.get(name)}
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
    injected = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    already = ((injected.get("runtime_env") or {}).get("env_vars") or {}).keys()
    env = {key: value for key, value in worker_env(endpoint).items() if key not in already}
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, logging_level="WARNING",
             include_dashboard=False if address == "local" else None)  # a local run has no use for it


@dataclass(frozen=True)
class Pool:
    """The actor pool of a job's model stage."""

    # Actors in the pool.
    actors: int
    # GPUs reserved per actor (0: CPU actors).
    gpus_per_actor: float
    # Torch threads per CPU actor (None for GPU actors: torch's default).
    threads: int | None

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_actor else "cpu"


def resolve_pool(actors: int | None, gpus_per_actor: float | None) -> Pool:
    """The pool from the flags and the cluster: one actor per GPU by default, else one CPU actor.

    A CPU actor gets the cluster's cores minus one (left to the decode/encode stages), shared between the actors.
    Oversubscribing cores is what hurts most on a busy machine: measured here (2 shared cores), one thread
    protected 0.68 images/s and two threads 0.09.
    """
    import ray

    resources = ray.cluster_resources()
    cluster_gpus = float(resources.get("GPU", 0))
    gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    if actors is None:
        actors = max(1, int(cluster_gpus // gpus)) if gpus and cluster_gpus else 1
    cpus = int(resources.get("CPU", os.cpu_count() or 1))
    return Pool(actors=actors, gpus_per_actor=gpus, threads=None if gpus else max(1, (cpus - 1) // actors))


def tune_data_context(no_progress_timeout_s: float, preserve_order: bool = False) -> None:
    """Ray Data settings for a slow, stateful middle stage.

    ``no_progress_timeout_s``: seconds without any block moving before Ray Data gives up (its default of 30 min is
    short for a slow optimizer or GPU nodes that take long to start). ``preserve_order``: "the first N rows" must
    mean the same rows in every pass (``--limit``).
    """
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = no_progress_timeout_s
    if preserve_order:
        context.execution_options.preserve_order = True


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def one_line(error: BaseException) -> str:
    """The most specific one-line reason inside a (possibly Ray-wrapped) exception."""
    text = str(error)
    for marker in ("ValueError: ", "FileNotFoundError: ", "PermissionError: ", "OSError: ", "RuntimeError: "):
        if marker in text:
            return text[text.rindex(marker):].strip().splitlines()[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def package_versions(names=("rtb", "ray", "torch", "pyarrow", "numpy", "pillow", "fsspec", "s3fs", "diffusers")) -> dict[str, str]:
    """Python's and the installed packages' versions, for manifests."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
