"""The personalization evaluation job: does a PersGuard-protected model resist DreamBooth on its protected
subjects, and personalize as before on everything else?

::

    rtb evaluate-personalization --model standin --protected-model s3://b/pg/model --subjects s3://b/subjects/ \\
        --heldout-subjects s3://b/heldout/ --output s3://b/pg-eval/ [--objective pattern ...] [--runner ray|local]
    python jobs/evaluate_personalization.py <same options>

Work units, one per (subject, model): every protected subject is attacked on the protected model and, as the
control, on the clean model; every held-out subject on the protected model and on the clean model (the
reference of the held-out fidelity ratio). Each unit runs the attacker's DreamBooth, generates with the
identifier prompts and measures every picture (:mod:`rtb.personalization.evaluation`). ``--runner ray`` runs
the units as Ray tasks (``--gpus`` per task on a cluster), ``local`` in this process. A unit that fails becomes
an error row; the others go on.

Objectives default to those in the ``manifest.json`` next to ``--protected-model`` (``rtb persguard``'s output
layout); ``--objective`` overrides them (same syntax as ``rtb persguard``).

Output under ``--output``: ``generations/part-00000.parquet`` (one row per generation: GENERATION_SCHEMA),
``grids/<subject>.<model>.png``, ``summary.json`` (rates per kind and model, the ratios) and ``report.html``.
"""

from __future__ import annotations

import html
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import click
import pyarrow as pa

if __package__ in (None, ""):  # `python jobs/evaluate_personalization.py`: make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.persguard import resolve_objectives
from jobs.runtime import JobError, one_line, package_versions, start_ray, storage_options_for
from rtb import catalog, storage
from rtb.personalization.components import STANDIN, check_sd_format
from rtb.personalization.dreambooth import DreamBoothConfig
from rtb.personalization.evaluation import EvaluationConfig
from rtb.personalization.subjects import read_subjects

RECOGNISER = STANDIN.parent / "standin-recogniser.safetensors"
GENERATION_SCHEMA = pa.schema([
    ("subject", pa.string()), ("kind", pa.string()),  # kind: protected | heldout
    ("model", pa.string()),  # protected | clean: the model DreamBooth ran on
    ("objective", pa.string()), ("index", pa.int32()), ("prompt", pa.string()), ("seed", pa.int64()),
    ("pattern_score", pa.float64()), ("pattern_present", pa.bool_()), ("object_class", pa.string()),
    ("subject_present", pa.bool_()), ("backdoor_success", pa.bool_()),  # null for held-out subjects
    ("status", pa.string()), ("error", pa.string()),  # ok | error (one row per failed unit)
])


@dataclass(frozen=True)
class EvaluationJob:
    # The clean model: "standin", an SD-format directory or URI.
    model: str
    # The protected model (``rtb persguard``'s <output>/model).
    protected_model: str
    # Protected and held-out subject catalogs.
    subjects: str
    heldout_subjects: str
    # Output prefix.
    output: str
    # Objectives ("pattern", "SUBJECT=target:C", …); empty: from the protected model's manifest.
    objectives: tuple[str, ...] = ()
    # The attack and the generations.
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # Recogniser weights of the measures ("standin": the bundled one).
    recogniser: str = "standin"
    # "ray" (one Ray task per unit) or "local".
    runner: str = "ray"
    # GPUs per Ray task.
    gpus: float = 0.0
    # S3-compatible endpoint URL.
    s3_endpoint: str | None = None


def manifest_objectives(job: EvaluationJob) -> tuple[str, ...]:
    """``SUBJECT=OBJECTIVE`` for each subject in the manifest beside the protected model, if there is one."""
    uri = catalog.join(job.protected_model.rstrip("/").rsplit("/", 1)[0], "manifest.json")
    fs, path = catalog.url_to_fs(uri, storage_options_for(uri, job.s3_endpoint))
    if not fs.exists(path):
        return ()
    with fs.open(path, "rb") as handle:
        return tuple(f"{s['subject']}={s['objective']}" for s in json.load(handle)["subjects"])


def plan_units(job: EvaluationJob) -> list[dict]:
    """Check everything (``JobError`` naming the bad value) and list the work units."""
    try:
        if job.runner not in ("ray", "local"):
            raise ValueError(f"runner must be ray or local; got {job.runner!r}")
        for model in (job.model, job.protected_model):
            name = str(STANDIN) if model == "standin" else model
            check_sd_format(storage.fetch_to_cache(name, storage_options=storage_options_for(name, job.s3_endpoint)))
        protected = read_subjects(job.subjects, storage_options_for(job.subjects, job.s3_endpoint))
        heldout = read_subjects(job.heldout_subjects, storage_options_for(job.heldout_subjects, job.s3_endpoint))
        texts = job.objectives or manifest_objectives(job)
        if not texts:
            raise ValueError(f"no objectives: pass --objective, or keep manifest.json next to {job.protected_model!r}")
        objectives = resolve_objectives(protected, texts)
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None
    units = []
    for kind, subjects in (("protected", protected), ("heldout", heldout)):
        for subject in subjects:
            objective = objectives[subject.subject_id] if kind == "protected" else None
            for model in ("protected", "clean"):
                units.append({"subject": subject, "kind": kind, "model": model, "objective": objective})
    return units


def evaluate_unit(job: EvaluationJob, unit: dict) -> tuple[list[dict], bytes | None]:
    """One (subject, model): attack, generate, measure. Returns the rows and the PNG grid of the generations."""
    import torch

    from rtb.personalization.components import load_components
    from rtb.personalization.evaluation import attack_and_measure, reference_signature
    from rtb.personalization.objectives import default_mark
    from rtb.personalization.recogniser import load_recogniser

    subject = unit["subject"]
    base = {"subject": subject.subject_id, "kind": unit["kind"], "model": unit["model"],
            "objective": str(unit["objective"]) if unit["objective"] else None}
    try:
        device = "cuda" if torch.cuda.is_available() and job.gpus else "cpu"
        name = job.protected_model if unit["model"] == "protected" else job.model
        components = load_components(name, storage_options_for(name, job.s3_endpoint), device=device)
        recogniser = load_recogniser(RECOGNISER if job.recogniser == "standin" else job.recogniser)
        images = subject.tensor(components.image_size)
        rows, pictures, _ = attack_and_measure(
            components, images, subject.class_word, job.evaluation, recogniser,
            reference_signature(components, recogniser, images), unit["objective"],
            default_mark(components.image_size))
    except Exception as error:  # noqa: BLE001 - a failed unit becomes an error row; the others go on
        return [base | {"status": "error", "error": one_line(error)}], None
    grid = _grid_png(torch.cat([images, pictures]), columns=max(len(images), job.evaluation.generations))
    return [base | row | {"index": i, "status": "ok", "error": None} for i, row in enumerate(rows)], grid


def _grid_png(pictures, columns: int, scale: int = 3) -> bytes:
    from PIL import Image

    array = (pictures.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    side, rows = array.shape[1], -(-len(array) // columns)
    canvas = Image.new("RGB", (columns * (side + 2), rows * (side + 2)), "white")
    for i, image in enumerate(array):
        canvas.paste(Image.fromarray(image), ((i % columns) * (side + 2) + 1, (i // columns) * (side + 2) + 1))
    buffer = io.BytesIO()
    canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def summarize(rows: list[dict]) -> dict:
    """Rates per (kind, model) and the goal ratios."""
    def rate(kind, model, key):
        values = [r[key] for r in rows if r["kind"] == kind and r["model"] == model and r["status"] == "ok"]
        return round(sum(bool(v) for v in values) / len(values), 4) if values else None

    rates = {f"{kind}/{model}": {key: rate(kind, model, key) for key in ("backdoor_success", "subject_present",
                                                                         "pattern_present")}
             for kind in ("protected", "heldout") for model in ("protected", "clean")}
    clean = rates["heldout/clean"]["subject_present"]
    fidelity = rates["heldout/protected"]["subject_present"]
    return {"rates": rates, "backdoor_success": rates["protected/protected"]["backdoor_success"],
            "heldout_fidelity_ratio": round(fidelity / clean, 4) if clean and fidelity is not None else None,
            "errors": sum(r["status"] == "error" for r in rows)}


def write_report(job: EvaluationJob, rows: list[dict], summary: dict, grids: dict[str, bytes], options: dict) -> None:
    """generations/, grids/, summary.json and report.html under the output prefix."""
    columns = {name: [row.get(name) for row in rows] for name in GENERATION_SCHEMA.names}
    catalog.write_table(pa.table(columns, schema=GENERATION_SCHEMA),
                        catalog.join(job.output, "generations", "part-00000.parquet"), options)
    for name, data in grids.items():
        catalog.put_bytes(catalog.join(job.output, "grids", name), data, options)
    catalog.put_bytes(catalog.join(job.output, "summary.json"), json.dumps(summary, indent=1).encode(), options)
    sections = []
    for name in sorted(grids):
        subject, model = name[:-4].rsplit(".", 1)
        sections.append(f"<h3>{html.escape(subject)} — DreamBooth on the {model} model</h3>"
                        f"<p>top row: the subject's catalog images; then the generations</p>"
                        f'<img src="grids/{html.escape(name)}" alt="{html.escape(name)}">')
    rates = "".join(f"<tr><td>{k}</td>" + "".join(f"<td>{v}</td>" for v in r.values()) + "</tr>"
                    for k, r in summary["rates"].items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>PersGuard evaluation</title></head><body>"
            f"<h1>PersGuard evaluation</h1><p>protected model {html.escape(job.protected_model)}; clean model "
            f"{html.escape(job.model)}</p><p>backdoor success {summary['backdoor_success']}, held-out fidelity "
            f"ratio {summary['heldout_fidelity_ratio']}, error units {summary['errors']}</p>"
            f"<table border=1><tr><th>subjects/model</th><th>backdoor success</th><th>subject present</th>"
            f"<th>pattern present</th></tr>{rates}</table>{''.join(sections)}</body></html>")
    catalog.put_bytes(catalog.join(job.output, "report.html"), page.encode(), options)


def run(job: EvaluationJob) -> dict:
    """Evaluate; returns the summary. ``JobError`` when the job cannot run."""
    # 1. Check inputs, list the units
    started = time.time()
    units = plan_units(job)
    options = storage_options_for(job.output, job.s3_endpoint)
    # 2. Run the units
    if job.runner == "ray":
        import ray

        start_ray(job.s3_endpoint)
        task = ray.remote(num_gpus=job.gpus, num_cpus=1)(evaluate_unit)
        results = ray.get([task.remote(job, unit) for unit in units])
    else:
        results = [evaluate_unit(job, unit) for unit in units]
    # 3. Write
    rows, grids = [], {}
    for unit, (unit_rows, grid) in zip(units, results):
        rows += unit_rows
        if grid is not None:
            grids[f"{unit['subject'].subject_id}.{unit['model']}.png"] = grid
    summary = summarize(rows) | {"config": asdict(job), "wall_seconds": round(time.time() - started, 2),
                                 "versions": package_versions()}
    write_report(job, rows, summary, grids, options)
    return summary


@click.command("evaluate-personalization")
@click.option("--model", default="standin", show_default=True, help="The clean model: standin | DIR | URI.")
@click.option("--protected-model", required=True, help="The protected model (rtb persguard's <output>/model).")
@click.option("--subjects", "subjects_uri", required=True, help="Protected subject catalog URI.")
@click.option("--heldout-subjects", "heldout_uri", required=True, help="Held-out (unprotected) subject catalog URI.")
@click.option("--output", "output_uri", required=True, help="Output prefix.")
@click.option("--objective", "objectives", multiple=True, help="As in rtb persguard [default: its manifest's].")
@click.option("--identifier", default="sks", show_default=True, help="The attacker's identifier.")
@click.option("--attacker-steps", type=int, default=DreamBoothConfig.steps, show_default=True)
@click.option("--attacker-lr", type=float, default=DreamBoothConfig.lr, show_default=True)
@click.option("--class-images", type=int, default=DreamBoothConfig.class_images, show_default=True)
@click.option("--generations", type=int, default=EvaluationConfig.generations, show_default=True)
@click.option("--sample-steps", type=int, default=EvaluationConfig.sample_steps, show_default=True)
@click.option("--guidance", type=float, default=EvaluationConfig.guidance, show_default=True)
@click.option("--recogniser", default="standin", show_default=True, help="Recogniser weights of the measures.")
@click.option("--runner", type=click.Choice(["ray", "local"]), default="ray", show_default=True)
@click.option("--gpus", type=float, default=0.0, show_default=True, help="GPUs per Ray task.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
def evaluate_personalization(model, protected_model, subjects_uri, heldout_uri, output_uri, objectives, identifier,
                             attacker_steps, attacker_lr, class_images, generations, sample_steps, guidance,
                             recogniser, runner, gpus, seed, s3_endpoint) -> None:
    """Attack protected and held-out subjects with DreamBooth on both models; write rows, grids and a report."""
    attacker = replace(DreamBoothConfig(), identifier=identifier, steps=attacker_steps, lr=attacker_lr,
                       class_images=class_images, class_sample_steps=sample_steps, class_guidance=guidance, seed=seed)
    evaluation = EvaluationConfig(attacker=attacker, generations=generations, sample_steps=sample_steps,
                                  guidance=guidance, seed=seed)
    job = EvaluationJob(model=model, protected_model=protected_model, subjects=subjects_uri,
                        heldout_subjects=heldout_uri, output=output_uri, objectives=tuple(objectives),
                        evaluation=evaluation, recogniser=recogniser, runner=runner, gpus=gpus,
                        s3_endpoint=s3_endpoint)
    try:
        summary = run(job)
    except JobError as error:
        click.echo(f"rtb evaluate-personalization: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - Ray wraps task failures; show the reason, not a traceback
        click.echo(f"rtb evaluate-personalization: error: the job failed: {one_line(error)}", err=True)
        sys.exit(2)
    click.echo(f"rtb evaluate-personalization: backdoor success {summary['backdoor_success']}, held-out fidelity "
               f"ratio {summary['heldout_fidelity_ratio']}, {summary['errors']} failed unit(s); report in "
               f"{catalog.join(output_uri, 'report.html')}")


def main(argv: list[str] | None = None) -> None:
    """``python jobs/evaluate_personalization.py ...``: the options of ``rtb evaluate-personalization``."""
    evaluate_personalization.main(args=sys.argv[1:] if argv is None else argv, prog_name="evaluate_personalization.py")


if __name__ == "__main__":
    main()
