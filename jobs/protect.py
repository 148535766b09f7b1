"""The protection job: a catalog of images and masks in, protected PNGs, metrics, state and a manifest out.

Runs the same on a laptop (a local Ray is started), on one GPU box and on a Ray cluster (``RAY_ADDRESS`` set,
or under ``ray job submit``, joins it)::

    python jobs/protect.py --input s3://bucket/catalog/ --output s3://bucket/protected/ --run-id nightly-2026-11-22

``run(config) = finish(plan, pipeline(plan))`` with ``plan = prepare(config)``; the pipeline is one chained Ray
Data expression, each step in the module named after its role (the row at each step: :mod:`jobs.rows`)::

    reader.read_catalog ⋈ state.load_prior (hash join on id: the current state and what this run committed)
    → stages.decode_and_validate (CPU tasks: decide; unchanged and committed rows skip the optimizer)
    → stages.Protector (actor pool: model loaded once per actor, GPU when asked)
    → writer.write_images (CPU tasks: images/<id>.png, remove images of failed or pruned ids)
    → writer.Committer on the driver (every --commit-rows rows or --commit-seconds: metrics/, errors/,
      missing/ and state/<run_id>/ Parquet, the commit)
    → finish: state/CURRENT.json, then runs/<run_id>.json, written last

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
from dataclasses import dataclass

import click

if __package__ in (None, ""):  # `python jobs/protect.py` (ray job submit): make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import reader, state
from jobs.config import JobConfig, check_config, check_model, detect_fingerprint, detect_kinds, key_salt, protect_config
from jobs.manifest import build_manifest, summary_line
from jobs.runtime import JobError, Pool, one_line, resolve_pool, start_ray, storage_options_for, tune_data_context
from jobs.stages import Protector, decode_and_validate, find_masks
from jobs.writer import CommitSummary, Committer, write_duplicates, write_images
from rtb import catalog
from rtb.methods import METHODS

__all__ = ["JobConfig", "JobError", "main", "protect_command", "run"]


@dataclass(frozen=True)
class RunPlan:
    """Everything :func:`prepare` decided before the pipeline starts."""

    config: JobConfig
    # The run id (given, or a new UTC-timestamped one) and this attempt's id (8 hex digits).
    run_id: str
    attempt: str
    # The catalog and the storage options of the input, the output and the model.
    source: reader.Catalog
    in_options: dict
    out_options: dict
    model_options: dict
    # The model's fingerprint (part of every content key).
    fingerprint: str
    # --masks auto: the detection kinds and their fingerprint (the mask part of a found mask's content key).
    detect_kinds: tuple
    detect_fingerprint: str | None
    # The actor pool of the Protector stage.
    pool: Pool
    # Rows read (after --limit) and the ids that occur more than once ({id: occurrences}).
    rows_read: int
    duplicates: dict
    # The prior records the catalog is joined with (a lazy Ray dataset, None when there is none), and what it holds.
    prior: object
    prior_info: dict
    # When the run started and when the pipeline could start (time.time()).
    started: float
    ready: float


def prepare(config: JobConfig) -> RunPlan:
    """Check everything, start Ray and find what is current; ``JobError`` when the job cannot run."""
    started = time.time()
    # 1. Check the arguments, the input and the model (its fingerprint is part of every content key).
    try:
        check_config(config)
        in_options = storage_options_for(config.input, config.s3_endpoint)
        out_options = storage_options_for(config.output, config.s3_endpoint)
        model_options = storage_options_for(config.model, config.s3_endpoint)
    except ValueError as error:
        raise JobError(str(error)) from None
    try:
        source = reader.open_catalog(config.input, config.format, in_options)
    except (ValueError, OSError) as error:
        raise JobError(f"cannot read input {config.input!r}: {error}") from None
    try:
        fingerprint = check_model(config.model, config.method, model_options)
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None
    kinds = detect_kinds(config.masks)
    if kinds:
        from rtb.detection import require_extra

        try:
            require_extra(kinds)  # a run that asks for detection without its extra fails here, in one line
        except (ImportError, ValueError) as error:
            raise JobError(f"--masks {config.masks!r}: {error}") from None

    # 2. Start or join Ray, tune Ray Data for a slow, stateful middle stage, size the actor pool.
    start_ray(config.s3_endpoint)
    tune_data_context(config.no_progress_timeout_s, preserve_order=config.limit is not None)
    pool = resolve_pool(config.actors, config.gpus_per_actor)

    # 3. Count rows and find duplicated ids (one pass over the id column only).
    rows_read, duplicates = reader.scan_ids(source, in_options, config.limit)

    # 4. What is current, and what this run id already committed (a resumed attempt).
    run_id = config.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    state.clear_uncommitted(config.output, run_id, out_options)
    prior, prior_info = state.load_prior(config.output, run_id, out_options)
    return RunPlan(config=config, run_id=run_id, attempt=uuid.uuid4().hex[:8], source=source, in_options=in_options,
                   out_options=out_options, model_options=model_options, fingerprint=fingerprint,
                   detect_kinds=kinds, detect_fingerprint=detect_fingerprint(kinds) if kinds else None, pool=pool,
                   rows_read=rows_read, duplicates=duplicates, prior=prior, prior_info=prior_info, started=started,
                   ready=time.time())


def pipeline(plan: RunPlan) -> CommitSummary:
    """read ⋈ prior → decide/decode → [detect (CPU tasks)] → protect (actors) → images → rows back to the driver,
    committed."""
    import ray

    config = plan.config
    dataset = reader.read_catalog(plan.source, plan.in_options, require_mask=not plan.detect_kinds)
    if config.limit is not None:
        dataset = dataset.limit(config.limit)
    if plan.prior is not None:
        dataset = state.join_catalog(dataset, plan.prior, plan.rows_read)
    decided = dataset.map_batches(
        decode_and_validate, batch_format="pyarrow", batch_size=config.batch_size,
        fn_kwargs={"duplicates": frozenset(plan.duplicates), "key_salt": key_salt(config, plan.fingerprint),
                   "force": config.force, "auto_masks": plan.detect_fingerprint},
    )
    if plan.detect_kinds:
        decided = decided.map_batches(find_masks, batch_format="pyarrow", batch_size=config.batch_size,
                                      fn_kwargs={"kinds": plan.detect_kinds})
    results = (
        decided.repartition(target_num_rows_per_block=config.batch_size)
        .map_batches(
            Protector, batch_format="pyarrow", batch_size=config.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=plan.pool.actors, max_size=plan.pool.actors),
            num_gpus=plan.pool.gpus_per_actor,
            fn_constructor_kwargs={"model": config.model, "method": config.method, "config": protect_config(config),
                                   "storage_options": plan.model_options, "threads": plan.pool.threads,
                                   "device": plan.pool.device, "keep_source": config.output_format != "png"},
        )
        .map_batches(
            write_images, batch_format="pyarrow", batch_size=config.batch_size,
            fn_kwargs={"output": config.output, "storage_options": plan.out_options, "prune": config.prune,
                       "output_format": config.output_format},
            # Half a CPU: the stage mostly waits on PUTs, and a CPU stage with the actor stage's resources would be
            # fused into it (the GPU would then wait on PNG encoding).
            num_cpus=0.5,
        )
    )
    committer = Committer(config.output, plan.run_id, plan.attempt, plan.out_options,
                          commit_rows=config.commit_rows, commit_seconds=config.commit_seconds)
    for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
        committer.add(batch)
    return committer.close()


def finish(plan: RunPlan, summary: CommitSummary) -> dict:
    """One error row per duplicated id; then the new state is made current; then the manifest (last)."""
    config = plan.config
    duplicates_file = write_duplicates(config.output, plan.run_id, plan.duplicates, plan.out_options)
    state.commit_state(config.output, plan.run_id, summary.state_files, plan.out_options)
    protected = summary.protected + summary.resumed_ok
    failed = summary.failed + summary.resumed_failed + len(plan.duplicates)
    counts = {"read": plan.rows_read, "ids": protected + failed + summary.no_region + summary.unchanged,
              "protected": protected, "failed": failed, "unchanged": summary.unchanged,
              **({"no_region": summary.no_region} if plan.detect_kinds else {}),  # --masks auto only
              "missing": summary.missing, "pruned": summary.pruned,
              "resumed": summary.resumed_ok + summary.resumed_failed, "protected_now": summary.protected,
              "duplicate_ids": len(plan.duplicates), "duplicate_rows": sum(plan.duplicates.values())}
    files = (state.commit_files(config.output, "metrics", plan.run_id, plan.out_options)
             + state.commit_files(config.output, "errors", plan.run_id, plan.out_options)
             + ([duplicates_file] if duplicates_file else []))
    resolved = {"run_id": plan.run_id, "format": plan.source.format, "detect_fingerprint": plan.detect_fingerprint,
                "actors": plan.pool.actors,
                "gpus_per_actor": plan.pool.gpus_per_actor, "threads_per_actor": plan.pool.threads}
    extra = {"attempt": plan.attempt, "prior": plan.prior_info, "missing_sample": sorted(summary.missing_sample),
             "missing_files": state.commit_files(config.output, "missing", plan.run_id, plan.out_options)}
    manifest = build_manifest(config, resolved, counts, sorted(summary.fingerprints | {plan.fingerprint}),
                              sorted(summary.devices), files, (plan.started, plan.ready, time.time()), extra)
    catalog.put_bytes(catalog.join(config.output, "runs", f"{plan.run_id}.json"),
                      json.dumps(manifest, indent=2, sort_keys=True).encode(), plan.out_options)
    return manifest


def run(config: JobConfig) -> dict:
    """Run (or resume) the job; returns the manifest. Raises ``JobError`` when it cannot run."""
    plan = prepare(config)
    return finish(plan, pipeline(plan))


@click.command("protect")
@click.option("--input", "input_uri", required=True, help="Catalog URI (/path, file://, s3://, memory://).")
@click.option("--output", "output_uri", required=True, help="Output prefix (images/, metrics/, errors/, state/, runs/).")
@click.option("--model", default="reference", show_default=True, help="reference | DIR | URI | FILE.pt")
@click.option("--method", type=click.Choice(list(METHODS)), default="rtb", show_default=True)
@click.option("--eps", type=float, default=None, help="Perturbation budget [default: the method's, rtb 0.025].")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: the method's, rtb 20].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per optimizer batch.")
@click.option("--actors", type=int, default=None, help="Actor pool size [default: one per GPU, else 1].")
@click.option("--gpus-per-actor", type=float, default=None, help="GPUs per actor, may be fractional [default: 1 if the cluster has GPUs, else 0].")
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "webdataset", "pairs"]), default="auto", show_default=True)
@click.option("--masks", default="catalog", show_default=True,
              help="catalog | auto:faces,text (rows without a mask get the faces/text detection finds; needs rtb[detect]).")
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
@click.option("--run-id", default=None, help="Run id [default: UTC timestamp]. Rerunning an id resumes it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--budget", default="jnd", show_default=True,
              help="jnd (ε the ceiling of a just-noticeable-difference map) | uniform (ε everywhere, the paper's).")
@click.option("--colour", default="luma-chroma", show_default=True,
              help="luma-chroma (grey images stay grey; chroma bounded by --chroma-ratio) | rgb (the paper's).")
@click.option("--chroma-ratio", type=float, default=0.25, show_default=True,
              help="With luma-chroma: the chroma bound as a fraction of the luma one, in [0, 1].")
@click.option("--limit", type=int, default=None, help="Process only the first N rows.")
@click.option("--augment-holes", type=click.IntRange(0, 16), default=0, show_default=True,
              help="rtb: attacker-like holes added to the loss per image and step (mask augmentation).")
@click.option("--eot", default="", help="rtb: transformations to survive (expectation over transformation), "
              "e.g. jpeg:60-95,resize:0.5-1.0 [default: none].")
@click.option("--output-format", default="png", show_default=True, help="png | jpeg:Q | webp:Q (how images/ are stored).")
@click.option("--force", is_flag=True, help="Re-protect every id, even those whose protection is current.")
@click.option("--prune", is_flag=True, help="Delete the images of ids that are no longer in the catalog.")
@click.option("--commit-rows", type=int, default=500, show_default=True,
              help="Commit after this many result rows (a run that dies redoes at most the uncommitted ones).")
@click.option("--commit-seconds", type=float, default=60.0, show_default=True,
              help="...or after this many seconds since the last commit, whichever comes first.")
def protect_command(input_uri, output_uri, model, method, eps, steps, batch_size, actors, gpus_per_actor, fmt, masks,
                    s3_endpoint, run_id, seed, budget, colour, chroma_ratio, limit, augment_holes, eot, output_format,
                    force, prune, commit_rows, commit_seconds) -> None:
    """Protect every new or changed image of a catalog; write protected PNGs, metrics, errors, state and a manifest."""
    config = JobConfig(input=input_uri, output=output_uri, model=model, method=method, eps=eps, steps=steps,
                       batch_size=batch_size, actors=actors, gpus_per_actor=gpus_per_actor, format=fmt, masks=masks,
                       s3_endpoint=s3_endpoint, run_id=run_id, seed=seed, budget=budget, colour=colour,
                       chroma_ratio=chroma_ratio, limit=limit, augment_holes=augment_holes, eot=eot,
                       output_format=output_format, force=force, prune=prune, commit_rows=commit_rows,
                       commit_seconds=commit_seconds)
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
