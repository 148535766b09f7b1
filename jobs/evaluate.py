"""The evaluation job: how well a protect run resists malicious inpainting and spares benign edits.

::

    rtb evaluate --catalog s3://b/catalog/ --protected s3://b/protected/ --output s3://b/eval/ \\
        [--control s3://b/noise/] [--edit-model FILE.pt] [--clip-model /models/clip-vit-b32]
    python jobs/evaluate.py <same options>

``--catalog`` is the input of a protect run and ``--protected`` its output (``images/<id>.png``, or
``.jpg``/``.webp`` for a lossy output format; ``metrics/*.parquet``). ``--control`` is the output of a
``--method noise`` run over the same catalog. For every id protected in both, the editor inpaints the clean
image, the protected image and the control with the same holes (:mod:`rtb.evaluation.masks`) and seed; every
edit is compared with the clean edit.

``--transforms none,jpeg:95,jpeg:75,webp:80,resize:0.5`` (default ``none``) repeats all of it per transform:
the clean image, the protected image and the control go through the same real codec (Pillow; resize = down
and back up, as a thumbnail and its re-upload) before the edit, so each figure compares like with like.

Shape (the protect job's: ``run(config) = finish(plan, pipeline(plan))`` with ``plan = prepare(config)``, through the
shared runtime and reader): the catalog rows of the ids to evaluate → ``jobs.evaluator.Evaluator`` (actor pool:
editor and CLIP loaded once per actor, GPU when asked; reads ``images/<id>.png`` of both runs, runs the edits,
writes the contact sheets of the sampled ids) → rows streamed back to the driver, which writes
``edits/*.parquet``, ``summary.json``, CLIP-FID and ``report.html``. Each image costs 3·K editor
forwards (K ≈ 12 holes), so the work belongs on accelerator actors exactly like protection; the rows that
come back are small (a few hundred bytes per edit, plus CLIP embeddings). ``--runner local`` runs the same
``Evaluator`` in this process (no Ray), for small catalogs and CI.

Output layout under ``--output``::

    edits/part-NNNNN.parquet  one row per (id, arm, transform, family, index): jobs.evaluator.EDIT_SCHEMA; failed
                              ids get a row with status "error" and the reason
    summary.json              per arm (protected, control) and family: N, median and quartiles of each
                              metric, for the first transform at the top level and for each one under
                              "transforms"; the worst transform; CLIP-FID per arm and family (or why it
                              was skipped); the config
    report.html, sheets/*.png the report (goals table: one column per transform) and its contact sheets
                              (of the worst transform; relative links only; opens offline)
    crops/*.png               the flattest 48×48 window of each sampled image, zoomed: source | protected |
                              |δ| × 20 (where a perturbation shows first)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

if __package__ in (None, ""):  # `python jobs/evaluate.py`: make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click

from jobs import reader
from jobs.evaluate_config import EvalConfig, check_config, protected_ids
from jobs.evaluator import EDIT_SCHEMA, Evaluator
from jobs.runtime import JobError, Pool, resolve_pool, start_ray, storage_options_for
from rtb import catalog
from rtb.evaluation.masks import FAMILIES, MASK_SETS
from rtb.transforms import format_transforms, parse_transforms

# Edit rows per edits/part-NNNNN.parquet file.
ROWS_PER_FILE = 20_000


@dataclass(frozen=True)
class EvalPlan:
    """Everything :func:`prepare` decided before the edits start."""

    config: EvalConfig
    # The catalog, its storage options and the output's.
    source: reader.Catalog
    in_options: dict
    out_options: dict
    # The ids to evaluate (protected in both runs, sorted, --limit applied) and their metrics rows.
    ids: list[str]
    protected: dict
    # The transforms, in order (the first is the summary's top level).
    transforms: list[str]
    # The Evaluator's constructor arguments.
    evaluator_kwargs: dict
    # The actor pool (the ray runner; None for the local runner).
    pool: Pool | None
    started: float


def prepare(config: EvalConfig) -> EvalPlan:
    """Check the arguments, find the ids protected in both runs and the catalog; ``JobError`` when it cannot run."""
    started = time.time()
    try:
        # 1. Arguments and the runs' outputs.
        check_config(config)
        in_options = storage_options_for(config.catalog, config.s3_endpoint)
        out_options = storage_options_for(config.output, config.s3_endpoint)
        protected = protected_ids(config.protected, storage_options_for(config.protected, config.s3_endpoint))
        ids = set(protected)
        if config.control:
            ids &= set(protected_ids(config.control, storage_options_for(config.control, config.s3_endpoint)))
        ids = sorted(ids)[: config.limit] if config.limit else sorted(ids)
        if not ids:
            raise ValueError("no id was protected successfully in both runs" if config.control else "the protect run has no protected id")
        # 2. The catalog.
        source = reader.open_catalog(config.catalog, config.format, in_options)
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None
    # 3. The actor pool (ray runner: started or joined like every job), the actor stage's settings.
    pool = None
    if config.runner == "ray":
        start_ray(config.s3_endpoint)
        pool = resolve_pool(config.actors, config.gpus_per_actor)
    edit_config = {"families": FAMILIES, "masks": asdict(MASK_SETS[config.masks]), "seed": config.seed,
                   "steps": config.steps, "target": config.target, "batch_size": config.batch_size}
    kwargs = {"edit_model": config.edit_model or config.model, "protected": config.protected, "control": config.control,
              "output": config.output, "edit_config": edit_config, "sample_ids": tuple(ids[: config.sample]),
              "clip_model": config.clip_model, "s3_endpoint": config.s3_endpoint,
              "transforms": format_transforms(parse_transforms(config.transforms)),
              **({"threads": pool.threads, "device": pool.device} if pool else {})}
    return EvalPlan(config=config, source=source, in_options=in_options, out_options=out_options, ids=ids,
                    protected=protected, transforms=[str(t) for t in parse_transforms(config.transforms)],
                    evaluator_kwargs=kwargs, pool=pool, started=started)


def edit_batches(plan: EvalPlan):
    """The Evaluator's output batches: on a Ray actor pool (the shared runtime and reader) or in this process."""
    wanted = set(plan.ids)
    if plan.config.runner == "local":
        evaluator = Evaluator(**plan.evaluator_kwargs)
        for row in reader.iter_rows(plan.source, plan.in_options, wanted):
            yield evaluator(pa.Table.from_pylist([row]))
        return
    import ray

    pool = plan.pool
    dataset = reader.read_catalog(plan.source, plan.in_options).filter(lambda r: r["id"] in wanted)
    yield from dataset.map_batches(
        Evaluator, fn_constructor_kwargs=plan.evaluator_kwargs, batch_size=2, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=pool.actors, max_size=pool.actors), num_gpus=pool.gpus_per_actor,
    ).iter_batches(batch_format="pyarrow", batch_size=None)


@dataclass
class Collected:
    """What the driver keeps of the edit rows while it streams them to ``edits/*.parquet``."""

    # Every edit row (small: metrics only).
    rows: list
    # CLIP embeddings per (transform, arm, family): (clean edits, arm's edits).
    features: dict
    # The edits/ files written.
    files: list


def pipeline(plan: EvalPlan) -> Collected:
    """Edit and measure; stream rows to ``edits/*.parquet``; keep the metrics and embeddings for the summary."""
    collected = Collected(rows=[], features={}, files=[])
    pending: list[dict] = []

    def flush() -> None:
        uri = catalog.join(plan.config.output, "edits", f"part-{len(collected.files):05d}.parquet")
        catalog.write_table(pa.Table.from_pylist(pending, schema=EDIT_SCHEMA), uri, plan.out_options)
        collected.files.append(uri)
        pending.clear()

    for batch in edit_batches(plan):
        for row in batch.to_pylist():
            clip_edit, clip_clean = row.pop("clip_edit", None), row.pop("clip_clean", None)
            if clip_edit is not None and row["status"] == "ok":
                entry = collected.features.setdefault((row["transform"], row["arm"], row["family"]), ([], []))
                entry[0].append(np.frombuffer(clip_clean, np.float32))
                entry[1].append(np.frombuffer(clip_edit, np.float32))
            collected.rows.append(row)
            pending.append(row)
            if len(pending) >= ROWS_PER_FILE:
                flush()
    seen = {r["id"] for r in collected.rows}
    for missing in sorted(set(plan.ids) - seen):  # protected but absent from the catalog
        row = {**{name: None for name in EDIT_SCHEMA.names}, "id": missing, "arm": "protected", "status": "error",
               "error": "id not found in --catalog"}
        collected.rows.append(row)
        pending.append(row)
    if pending or not collected.files:
        flush()
    return collected


def finish(plan: EvalPlan, collected: Collected) -> dict:
    """Summary (the first transform at the top level, each one under "transforms"), CLIP-FID, and the report
    with the contact sheets of the worst transform."""
    from rtb.evaluation.report import summarize_transforms, worst_transform, write_html
    from rtb.evaluation.sheets import sheet_name

    config, rows = plan.config, collected.rows
    per_transform = summarize_transforms(rows, plan.transforms)
    summary = {**per_transform[plan.transforms[0]], "transforms": per_transform,
               "worst_transform": worst_transform(per_transform)}
    summary["clip_fid"] = compute_clip_fid(config, collected.features)
    summary["images"] = len(plan.ids)
    summary["failed_images"] = sorted({r["id"] for r in rows if r.get("status") == "error"})
    methods = sorted({str(r.get("method")) for r in plan.protected.values()})
    eps = sorted({r.get("eps") for r in plan.protected.values() if r.get("eps") is not None})
    summary["protect_run"] = {"methods": methods, "eps": eps}
    summary["config"] = asdict(config)
    summary["pool"] = asdict(plan.pool) if plan.pool else None
    summary["edit_files"] = collected.files
    summary["seconds"] = round(time.time() - plan.started, 3)
    catalog.put_bytes(catalog.join(config.output, "summary.json"),
                      json.dumps(_json_safe(summary), indent=2, allow_nan=False).encode(), plan.out_options)
    seen = {r["id"] for r in rows}
    ok_sheets = [i for i in plan.evaluator_kwargs["sample_ids"] if i in seen and i not in summary["failed_images"]]
    meta = {"catalog": config.catalog, "protected": config.protected, "control": config.control or "none",
            "editor": config.edit_model or config.model, "protection": f"{', '.join(methods)} at ε {eps}",
            "images": len(plan.ids), "failed images": len(summary["failed_images"]), "mask set": config.masks,
            "seed": config.seed, "transforms": ", ".join(plan.transforms)}
    page = write_html(summary, [(i, f"sheets/{sheet_name(i, summary['worst_transform'])}") for i in ok_sheets], meta,
                      crops=[(i, f"crops/{sheet_name(i)}") for i in ok_sheets])
    catalog.put_bytes(catalog.join(config.output, "report.html"), page.encode(), plan.out_options)
    return summary


def run(config: EvalConfig) -> dict:
    """Run the evaluation; returns the summary (also written to ``summary.json``). ``JobError`` when it cannot run."""
    plan = prepare(config)
    return finish(plan, pipeline(plan))


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def compute_clip_fid(config: EvalConfig, features: dict) -> dict:
    """CLIP-FID per arm and family from the embeddings collected from the actors (keyed (transform, arm, family)).

    ``arms`` holds the first transform's; with more than one transform, ``transforms`` holds each one's.
    """
    import torch

    from rtb.evaluation.clip_fid import CLIPImageFeatures, clip_fid

    if config.clip_model is None:
        return {"skipped": "no --clip-model given (a local CLIP model directory is needed; nothing is downloaded)"}
    module = CLIPImageFeatures(config.clip_model)
    transforms = [str(t) for t in parse_transforms(config.transforms)]
    per_transform: dict = {t: {} for t in transforms}
    for (transform, arm, family), (clean, edits) in sorted(features.items()):
        if len(edits) < 2:
            continue
        fid = clip_fid(module, torch.from_numpy(np.stack(clean)), torch.from_numpy(np.stack(edits)))
        per_transform[transform].setdefault(arm, {})[family] = {"fid": fid, "N": len(edits)}
    if not any(per_transform.values()):
        return {"skipped": "fewer than 2 edits per family: CLIP-FID needs at least 2"}
    out: dict = {"arms": per_transform[transforms[0]], "model": config.clip_model}
    if len(transforms) > 1:
        out["transforms"] = per_transform
    return out


def summary_line(summary: dict) -> str:
    """One line for the terminal: images, and the exact-mask and ring-half medians of each arm."""
    parts = [f"rtb evaluate: {summary['images']} image(s), {len(summary['failed_images'])} failed"]
    for arm, families in summary["arms"].items():
        exact = families.get("exact", {}).get("metrics", {}).get("hole_ssim", {}).get("median")
        benign = families.get("ring-half", {}).get("metrics", {}).get("full_ssim", {}).get("median")
        if exact is not None:
            parts.append(f"{arm}: exact hole-SSIM {exact:.3f}" + (f", ring-half full-SSIM {benign:.3f}" if benign is not None else ""))
    per_transform = summary.get("transforms") or {}
    if len(per_transform) > 1:
        worst = summary["worst_transform"]
        exact = per_transform[worst].get("arms", {}).get("protected", {}).get("exact", {})
        value = exact.get("metrics", {}).get("hole_ssim", {}).get("median")
        if value is not None:
            parts.append(f"worst transform {worst}: protected exact hole-SSIM {value:.3f}")
    return "; ".join(parts)


@click.command("evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog", "catalog_uri", required=True, help="The protect run's input catalog URI.")
@click.option("--protected", required=True, help="The protect run's output prefix (images/, metrics/).")
@click.option("--output", required=True, help="Output prefix (edits/, sheets/, summary.json, report.html).")
@click.option("--model", default="reference", show_default=True, help="The model the protection used.")
@click.option("--edit-model", default=None, help="The editor [default: --model]; another one tests transfer.")
@click.option("--masks", type=click.Choice(sorted(MASK_SETS)), default="default", show_default=True)
@click.option("--steps", type=int, default=None, help="Denoising steps of diffusion editors [default: the backend's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Evaluate only the first N ids (sorted).")
@click.option("--clip-model", default=None, help="Local CLIP model directory for CLIP-FID [default: skipped].")
@click.option("--control", default=None, help="Output prefix of a --method noise protect run (control arm).")
@click.option("--target", type=click.Choice(["primary", "gray", "invert"]), default="primary", show_default=True)
@click.option("--sample", type=int, default=8, show_default=True, help="Images with a contact sheet.")
@click.option("--runner", type=click.Choice(["ray", "local"]), default="ray", show_default=True)
@click.option("--actors", type=int, default=None, help="Actor pool size [default: one per GPU, else 1].")
@click.option("--gpus-per-actor", type=float, default=None)
@click.option("--format", "fmt", type=click.Choice(["auto", *catalog.FORMATS]), default="auto", show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
@click.option("--transforms", default="none", show_default=True,
              help="Comma list applied (real codec) before each edit, each measured: none, jpeg:Q, webp:Q, "
                   "resize:S (down and back up), blur:SIGMA; e.g. none,jpeg:95,jpeg:75,webp:80,resize:0.5.")
def evaluate(catalog_uri, protected, output, model, edit_model, masks, steps, seed, limit, clip_model, control,
             target, sample, runner, actors, gpus_per_actor, fmt, s3_endpoint, transforms) -> None:
    """Edit clean and protected images with the same holes and seed; write metrics, a summary and a report."""
    config = EvalConfig(catalog=catalog_uri, protected=protected, output=output, model=model, edit_model=edit_model,
                        masks=masks, steps=steps, seed=seed, limit=limit, clip_model=clip_model, control=control,
                        target=target, sample=sample, runner=runner, actors=actors, gpus_per_actor=gpus_per_actor,
                        format=fmt, s3_endpoint=s3_endpoint, transforms=transforms)
    try:
        summary = run(config)
    except JobError as error:
        click.echo(f"rtb evaluate: error: {error}", err=True)
        sys.exit(2)
    click.echo(summary_line(summary))
    click.echo(f"rtb evaluate: report at {catalog.join(output, 'report.html')}")


def main(argv: list[str] | None = None) -> None:
    """``python jobs/evaluate.py``; returns normally on success (exit status 2 raises ``SystemExit``)."""
    try:
        evaluate.main(args=argv, prog_name="rtb evaluate")
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
