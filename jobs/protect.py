"""The protection job: a catalog of images and masks in, protected PNGs, metrics, state and a manifest out.

Runs the same on a laptop (a local Ray is started), on one GPU box and on a Ray cluster (``RAY_ADDRESS`` set,
or under ``ray job submit``, joins it)::

    python jobs/protect.py --input s3://bucket/catalog/ --output s3://bucket/protected/ --run-id nightly-2026-11-22

Shape (one chained Ray Data expression, see :func:`run`)::

    read shards ⋈ prior (hash join on id: the current state and what this run already committed)
    → decode + validate + decide (CPU tasks: unchanged and committed rows skip the optimizer)
    → Protector (actor pool: model loaded once per actor, GPU when asked)
    → write images/<id>.png, remove images of failed or pruned ids (CPU tasks)
    → ResultSink (per write task: metrics/, errors/, missing/ and state/<run_id>/ Parquet: the commit)
    → state/CURRENT.json, then runs/<run_id>.json, written last by the driver

Incremental and resumable: an id is protected again only when its content key (image bytes, mask bytes,
config hash, model fingerprint) differs from its current state, or with ``--force``; rerunning a run id that
died resumes it, and what it committed is not redone (the layout and the guarantees: jobs/state.py).

Exit status: 0 when the job ran (even with error rows), 2 when it could not (bad arguments, unreadable input,
a model that does not load), with a one-line reason on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid

import click

if __package__ in (None, ""):  # `python jobs/protect.py` (ray job submit): make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import state
from jobs.config import METHODS, JobConfig, JobError, check_config, check_model, key_salt, protect_config
from jobs.manifest import build_manifest, one_line, summary_line
from jobs.stages import Protector, decode_and_validate, write_images
from jobs.storage import check_parquet_columns, read_catalog, start_ray, storage_options_for
from rtb import catalog

__all__ = ["JobConfig", "JobError", "METHODS", "main", "one_line", "protect_command", "run", "summary_line"]


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
    """Run (or resume) the job; returns the manifest. Raises ``JobError`` when it cannot run."""
    import ray

    started = time.time()
    # 1. Check the arguments, the input and the model (its fingerprint is part of every content key).
    try:
        check_config(config)
    except ValueError as error:
        raise JobError(str(error)) from None
    run_id = config.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    attempt = uuid.uuid4().hex[:8]
    try:
        in_options = storage_options_for(config.input, config.s3_endpoint)
        out_options = storage_options_for(config.output, config.s3_endpoint)
    except ValueError as error:
        raise JobError(str(error)) from None
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
    start_ray(config.s3_endpoint)
    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = config.no_progress_timeout_s
    if config.limit is not None:
        context.execution_options.preserve_order = True  # "first N rows" must mean the same rows in both passes
    actors, gpus = resolve_pool(config)
    threads = None if gpus else cpu_threads(actors)

    # 3. Count rows and find duplicated ids (one pass over the id column only; a pairs listing already has
    #    its ids, one per file name).
    if fmt == "pairs":
        rows_read, duplicates = len(catalog.list_pairs(files)[: config.limit]), {}
    else:
        ids = read_catalog(fmt, files, in_options, ids_only=True)
        if config.limit is not None:
            ids = ids.limit(config.limit)
        ids = ids.materialize()
        rows_read, duplicates = state.find_duplicates(ids)
        del ids

    # 4. What is current, and what this run id already committed (a resumed attempt).
    state.clear_uncommitted(config.output, run_id, out_options)
    prior, prior_info = state.load_prior(config.output, run_id, out_options)
    ready = time.time()

    # 5. The pipeline: read ⋈ prior → decide/decode → protect (actors) → images → commit (metrics/errors/state).
    sink = state.ResultSink(config.output, run_id, attempt, out_options, rows_per_file=config.commit_rows)
    dataset = read_catalog(fmt, files, in_options)
    if config.limit is not None:
        dataset = dataset.limit(config.limit)
    if prior is not None:
        dataset = state.join_catalog(dataset, prior, rows_read)
    (
        dataset.map_batches(
            decode_and_validate,
            batch_format="pyarrow",
            batch_size=config.batch_size,
            fn_kwargs={"duplicates": frozenset(duplicates), "key_salt": key_salt(config, fingerprint),
                       "force": config.force},
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
                "config": protect_config(config),
                "storage_options": storage_options_for(config.model, config.s3_endpoint),
                "threads": threads,
                "device": "cuda" if gpus else "cpu",
                "keep_source": config.output_format != "png",
            },
        )
        .map_batches(
            write_images,
            batch_format="pyarrow",
            batch_size=config.batch_size,
            fn_kwargs={"output": config.output, "storage_options": out_options, "prune": config.prune,
                       "output_format": config.output_format},
            # Half a CPU: the stage mostly waits on PUTs. It also keeps this stage from being fused into the
            # sink, which bundles commit_rows rows per file: fused, protected pixels would pile up until then.
            num_cpus=0.5,
        )
        .write_datasink(sink)
    )

    # 6. One error row per duplicated id; then the new state is made current; then the manifest (last).
    duplicates_file = state.write_duplicates(config.output, run_id, duplicates, out_options)
    state.commit_state(config.output, run_id, [f for r in sink.returns for f in r["state_files"]], out_options)
    returns = sink.returns
    total = {key: sum(r[key] for r in returns) for key in
             ("protected", "failed", "unchanged", "committed", "committed_ok", "missing", "pruned")}
    protected = total["protected"] + total["committed_ok"]
    failed = total["failed"] + (total["committed"] - total["committed_ok"]) + len(duplicates)
    counts = {"read": rows_read, "ids": protected + failed + total["unchanged"], "protected": protected,
              "failed": failed, "unchanged": total["unchanged"], "missing": total["missing"], "pruned": total["pruned"],
              "resumed": total["committed"], "protected_now": total["protected"],
              "duplicate_ids": len(duplicates), "duplicate_rows": sum(duplicates.values())}
    files_written = (state.commit_files(config.output, "metrics", run_id, out_options)
                     + state.commit_files(config.output, "errors", run_id, out_options)
                     + ([duplicates_file] if duplicates_file else []))
    fingerprints = sorted({f for r in returns for f in r["fingerprints"]} | {fingerprint})
    devices = sorted({d for r in returns for d in r["devices"]})
    pool = {"run_id": run_id, "format": fmt, "actors": actors, "gpus_per_actor": gpus, "threads_per_actor": threads}
    missing_ids = sorted({i for r in returns for i in r["missing_sample"]})[:20]
    extra = {"attempt": attempt, "prior": prior_info, "missing_sample": missing_ids,
             "missing_files": state.commit_files(config.output, "missing", run_id, out_options)}
    manifest = build_manifest(config, pool, counts, fingerprints, devices, files_written,
                              (started, ready, time.time()), extra)
    catalog.put_bytes(catalog.join(config.output, "runs", f"{run_id}.json"),
                      json.dumps(manifest, indent=2, sort_keys=True).encode(), out_options)
    return manifest


@click.command("protect")
@click.option("--input", "input_uri", required=True, help="Catalog URI (/path, file://, s3://, memory://).")
@click.option("--output", "output_uri", required=True, help="Output prefix (images/, metrics/, errors/, state/, runs/).")
@click.option("--model", default="reference", show_default=True, help="reference | DIR | URI | FILE.pt")
@click.option("--method", type=click.Choice(METHODS), default="rtb", show_default=True)
@click.option("--eps", type=float, default=None, help="Perturbation budget [default: the method's, rtb 0.025].")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: the method's, rtb 20].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per optimizer batch.")
@click.option("--actors", type=int, default=None, help="Actor pool size [default: one per GPU, else 1].")
@click.option("--gpus-per-actor", type=float, default=None, help="GPUs per actor, may be fractional [default: 1 if the cluster has GPUs, else 0].")
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "webdataset", "pairs"]), default="auto", show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
@click.option("--run-id", default=None, help="Run id [default: UTC timestamp]. Rerunning an id resumes it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Process only the first N rows.")
@click.option("--augment-holes", type=click.IntRange(0, 16), default=0, show_default=True,
              help="rtb: attacker-like holes added to the loss per image and step (mask augmentation).")
@click.option("--eot", default="", help="rtb: transformations to survive (expectation over transformation), "
              "e.g. jpeg:60-95,resize:0.5-1.0 [default: none].")
@click.option("--output-format", default="png", show_default=True, help="png | jpeg:Q | webp:Q (how images/ are stored).")
@click.option("--force", is_flag=True, help="Re-protect every id, even those whose protection is current.")
@click.option("--prune", is_flag=True, help="Delete the images of ids that are no longer in the catalog.")
@click.option("--commit-rows", type=int, default=500, show_default=True,
              help="Result rows per commit (a run that dies redoes at most the uncommitted ones).")
def protect_command(input_uri, output_uri, model, method, eps, steps, batch_size, actors, gpus_per_actor, fmt,
                    s3_endpoint, run_id, seed, limit, augment_holes, eot, output_format, force, prune,
                    commit_rows) -> None:
    """Protect every new or changed image of a catalog; write protected PNGs, metrics, errors, state and a manifest."""
    config = JobConfig(input=input_uri, output=output_uri, model=model, method=method, eps=eps, steps=steps,
                       batch_size=batch_size, actors=actors, gpus_per_actor=gpus_per_actor, format=fmt,
                       s3_endpoint=s3_endpoint, run_id=run_id, seed=seed, limit=limit,
                       augment_holes=augment_holes, eot=eot, output_format=output_format, force=force, prune=prune,
                       commit_rows=commit_rows)
    try:
        manifest = run(config)
    except JobError as error:
        click.echo(f"rtb protect: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - Ray wraps actor/model failures; show the reason, not a traceback
        click.echo(f"rtb protect: error: the job failed: {one_line(error)}", err=True)
        sys.exit(2)
    click.echo(summary_line(manifest))


def main(argv: list[str] | None = None) -> None:
    """``python jobs/protect.py ...`` (the ``ray job submit`` entrypoint): the options of ``rtb protect``."""
    protect_command.main(args=sys.argv[1:] if argv is None else argv, prog_name="protect.py")


if __name__ == "__main__":
    main()
