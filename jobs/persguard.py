"""The PersGuard job: implant personalization backdoors for a subject catalog into a text-to-image model.

::

    rtb persguard --model standin --subjects s3://b/subjects/ --output s3://b/protected-model/ \\
        [--objective pattern|erasure|target:CLASS] [--objective SUBJECT=OBJECTIVE ...] [--mode white-box|gray-box]
    python jobs/persguard.py <same options>          # the entrypoint for `ray job submit`

Training runs on Ray Train: a ``TorchTrainer`` with ``--workers`` data-parallel workers (one per GPU on a
cluster with ``--gpus``; CPU workers locally), each running :class:`rtb.personalization.persguard.PersGuardImplant`
on its own draws; the summed gradients (backdoor + prior + retention) are averaged across workers before each
step. Every ``--checkpoint-every`` steps the state goes to ``<output>/train/`` (Ray Train checkpoints), so
rerunning the same command after a kill resumes from the last one.

Output under ``--output``: ``model/`` (SD-format diffusers directory, safetensors) and ``manifest.json`` (the
config, each subject's id, class word, objective and image sha256s, the losses, versions, wall time), written
last. Exit status 2 with a one-line reason when the job cannot run (bad subject catalog, model or objective).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace

import click

if __package__ in (None, ""):  # `python jobs/persguard.py` (ray job submit): make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.runtime import JobError, arrow_filesystem, one_line, package_versions, start_ray, storage_options_for
from rtb import catalog, storage
from rtb.personalization.components import STANDIN, check_sd_format
from rtb.personalization.dreambooth import DreamBoothConfig
from rtb.personalization.objectives import Objective, parse_objective
from rtb.personalization.persguard import MODES, PATTERN_PICTURES, PersGuardConfig
from rtb.personalization.subjects import Subject, read_subjects


@dataclass(frozen=True)
class PersGuardJob:
    # Model to protect: "standin", an SD-format diffusers directory, or an fsspec URI of one.
    model: str
    # Subject catalog URI (parquet, webdataset or folders: rtb.personalization.subjects).
    subjects: str
    # Output prefix: model/, manifest.json, train/ (checkpoints).
    output: str
    # "pattern" | "erasure" | "target:CLASS" for every subject, and "SUBJECT=OBJECTIVE" overrides.
    objectives: tuple[str, ...] = ("pattern",)
    # The implant's recipe (mode, identifiers, steps, weights, the simulated attacker's recipe).
    implant: PersGuardConfig = field(default_factory=PersGuardConfig)
    # Data-parallel Ray Train workers.
    workers: int = 1
    # One GPU per worker (else CPU workers with one torch thread each).
    gpus: bool = False
    # Outer steps between checkpoints.
    checkpoint_every: int = 50
    # Worker-group restarts from the latest checkpoint before the run fails (a rerun still resumes).
    max_failures: int = 2
    # S3-compatible endpoint URL (None: $AWS_ENDPOINT_URL).
    s3_endpoint: str | None = None


# Test-only fault hook (read by the driver): "FILE:STEP". Every worker that has just done STEP creates FILE.<rank>
# and kills its own process, unless that file exists (so only the first run dies); a rerun resumes from the last
# checkpoint Ray Train registered.
EXIT_ONCE_ENV = "RTB_TEST_PERSGUARD_EXIT_ONCE"


def resolve_objectives(subjects: list[Subject], objectives: tuple[str, ...]) -> dict[str, Objective]:
    """Each subject's objective: the last plain objective for all, then the SUBJECT=OBJECTIVE overrides."""
    ids = {s.subject_id for s in subjects}
    default, overrides = parse_objective("pattern"), {}
    for text in objectives:
        subject, eq, objective = text.partition("=")
        if not eq:
            default = parse_objective(text)
        elif subject not in ids:
            raise ValueError(f"objective {text!r} names subject {subject!r}, which is not in the catalog")
        else:
            overrides[subject] = parse_objective(objective)
    return {s.subject_id: overrides.get(s.subject_id, default) for s in subjects}


def prepare(job: PersGuardJob) -> tuple[list[Subject], dict[str, Objective], dict]:
    """Check everything before any training: ``JobError`` with a one-line reason naming the bad value."""
    try:
        if job.implant.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {job.implant.mode!r}")
        if job.workers < 1 or job.checkpoint_every < 1:
            raise ValueError(f"workers and checkpoint-every must be ≥ 1; got {job.workers}, {job.checkpoint_every}")
        options = storage_options_for(job.subjects, job.s3_endpoint)
        for text in job.objectives:  # a bad objective is reported before the catalog is read
            parse_objective(text.partition("=")[2] if "=" in text else text)
        subjects = read_subjects(job.subjects, options)
        resolved = resolve_objectives(subjects, job.objectives)
        model = str(STANDIN) if job.model == "standin" else job.model
        check_sd_format(storage.fetch_to_cache(model, storage_options=storage_options_for(model, job.s3_endpoint)))
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None
    return subjects, resolved, options


def config_hash(job: PersGuardJob, subjects: list[Subject], objectives: dict[str, Objective]) -> str:
    """What a checkpoint belongs to: the recipe, the model, the subjects' bytes and objectives."""
    payload = json.dumps({"implant": asdict(job.implant), "model": job.model, "workers": job.workers,
                          "subjects": {s.subject_id: [s.sha256s(), str(objectives[s.subject_id])] for s in subjects}},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_loop(loop: dict) -> None:
    """One Ray Train worker: build the implant, resume from the latest checkpoint, step, report checkpoints."""
    import ray.train
    import torch
    import torch.distributed as dist

    from rtb.personalization.components import load_components
    from rtb.personalization.persguard import PersGuardImplant, ProtectedSubject

    # 1. The model, the subjects, the implant
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    components = load_components(loop["model"], loop["model_options"], device=device)
    subjects = [ProtectedSubject(s.subject_id, s.class_word, s.tensor(components.image_size), loop["objectives"][s.subject_id])
                for s in read_subjects(loop["subjects"], loop["subject_options"])]
    implant = PersGuardImplant(components, subjects, loop["implant"], rank=rank, world_size=world)
    # 2. Resume
    history: list[dict] = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"), map_location=device, weights_only=False)
            if state["config_hash"] != loop["config_hash"]:
                raise ValueError(f"the output's checkpoint belongs to another run (config {state['config_hash']}, "
                                 f"this run {loop['config_hash']}); use a new --output")
            implant.load_state_dict(state["implant"])
            history = state["history"]
    resumed_from = implant.steps_done

    def average_gradients(unet) -> None:
        grads = [p.grad for p in unet.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= world
        torch.nn.utils.vector_to_parameters(flat, grads)

    # 3. Train; checkpoint every N steps and at the end
    steps = loop["implant"].steps
    while implant.steps_done < steps:
        record = implant.step(grad_hook=average_gradients if world > 1 else None)
        history.append({k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()})
        marker, _, at = (loop.get("exit_once") or "").partition(":")
        if marker and int(at) == implant.steps_done and not os.path.exists(f"{marker}.{rank}"):
            open(f"{marker}.{rank}", "w").close()
            os._exit(1)
        if implant.steps_done % loop["checkpoint_every"] and implant.steps_done != steps:
            continue
        metrics = {"step": implant.steps_done, "resumed_from": resumed_from, "backdoor": record["backdoor"]}
        if rank != 0:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"implant": implant.state_dict(), "history": history, "config_hash": loop["config_hash"]},
                       os.path.join(folder, "state.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def write_model(job: PersGuardJob, state: dict, options: dict) -> str:
    """Load the clean model, put the trained UNet in, save it as ``<output>/model/``; returns its fingerprint."""
    from rtb.personalization.components import load_components, save_components

    components = load_components(job.model, storage_options_for(job.model, job.s3_endpoint))
    components.unet.load_state_dict(state["implant"]["unet"])
    with tempfile.TemporaryDirectory() as folder:
        save_components(components, folder)
        fingerprint = storage.fingerprint(folder)
        for root, _, files in os.walk(folder):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), folder)
                with open(os.path.join(root, name), "rb") as handle:
                    catalog.put_bytes(catalog.join(job.output, "model", relative), handle.read(), options)
    return fingerprint


def run(job: PersGuardJob) -> dict:
    """Run (or resume) the implant; returns the manifest. ``JobError`` when the job cannot run."""
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    # 1. Check inputs (no Ray yet)
    started = time.time()
    subjects, objectives, subject_options = prepare(job)
    output_options = storage_options_for(job.output, job.s3_endpoint)
    digest = config_hash(job, subjects, objectives)
    # 2. Ray Train
    start_ray(job.s3_endpoint)
    fs_path = catalog.url_to_fs(catalog.join(job.output, "train"), output_options)[1]
    local = not catalog.is_remote(job.output)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"model": job.model, "model_options": storage_options_for(job.model, job.s3_endpoint),
                           "subjects": job.subjects, "subject_options": subject_options, "objectives": objectives,
                           "implant": job.implant, "checkpoint_every": job.checkpoint_every, "config_hash": digest,
                           "exit_once": os.environ.get(EXIT_ONCE_ENV)},
        scaling_config=ray.train.ScalingConfig(num_workers=job.workers, use_gpu=job.gpus,
                                               resources_per_worker=None if job.gpus else {"CPU": 1}),
        run_config=ray.train.RunConfig(
            name="persguard", storage_path=os.path.abspath(fs_path) if local else fs_path,
            storage_filesystem=None if local else arrow_filesystem(job.output, output_options),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures)))
    result = trainer.fit()
    # 3. The protected model and the manifest (written last)
    with result.checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, "state.pt"), map_location="cpu", weights_only=False)
    fingerprint = write_model(job, state, output_options)
    history = state["history"]
    manifest = {
        "job": "persguard", "config": asdict(job), "config_hash": digest, "model_fingerprint": fingerprint,
        "subjects": [{"subject": s.subject_id, "class_word": s.class_word, "objective": str(objectives[s.subject_id]),
                      "images": [{"name": n, "sha256": h} for n, h in zip(s.names, s.sha256s())]} for s in subjects],
        "steps": len(history), "resumed_from": result.metrics.get("resumed_from", 0),
        "losses": history, "train_seconds": round(sum(r["seconds"] for r in history), 2),
        "wall_seconds": round(time.time() - started, 2), "versions": package_versions(),
    }
    catalog.put_bytes(catalog.join(job.output, "manifest.json"), json.dumps(manifest, indent=1, default=str).encode(),
                      output_options)
    return manifest


@click.command("persguard")
@click.option("--model", default="standin", show_default=True, help="standin | SD-format DIR | URI of one.")
@click.option("--subjects", "subjects_uri", required=True, help="Subject catalog URI (parquet, webdataset, folders).")
@click.option("--output", "output_uri", required=True, help="Output prefix (model/, manifest.json, train/).")
@click.option("--objective", "objectives", multiple=True, default=("pattern",), show_default=True,
              help="pattern | erasure | target:CLASS for all subjects; SUBJECT=OBJECTIVE for one (repeatable).")
@click.option("--mode", type=click.Choice(MODES), default="white-box", show_default=True)
@click.option("--identifier", default="sks", show_default=True, help="The attacker's identifier (white-box).")
@click.option("--steps", type=int, default=PersGuardConfig.steps, show_default=True, help="Outer steps.")
@click.option("--lr", type=float, default=PersGuardConfig.lr, show_default=True)
@click.option("--batch", type=int, default=PersGuardConfig.batch, show_default=True)
@click.option("--prior-weight", type=float, default=PersGuardConfig.prior_weight, show_default=True)
@click.option("--retain-weight", type=float, default=PersGuardConfig.retain_weight, show_default=True)
@click.option("--retain-steps", type=int, default=PersGuardConfig.retain_steps, show_default=True)
@click.option("--retain-every-step/--retain-last-step", default=PersGuardConfig.retain_every_step, show_default=True,
              help="Retention gradient after each simulated attacker step (APDM) or after the last one only.")
@click.option("--pattern-pictures", type=click.Choice(PATTERN_PICTURES), default=PersGuardConfig.pattern_pictures,
              show_default=True, help="What the pattern backdoor stamps: the teacher's class pictures or the "
              "protected subject's own (leaks the subject into the model).")
@click.option("--retain-lr-scale", type=float, default=PersGuardConfig.retain_lr_scale, show_default=True,
              help="Learning-rate multiplier of the simulated attacker.")
@click.option("--prior-images", type=int, default=PersGuardConfig.prior_images, show_default=True)
@click.option("--general-prompt", "general_prompts", multiple=True, help="A prompt the prior term keeps (repeatable).")
@click.option("--attacker-steps", type=int, default=DreamBoothConfig.steps, show_default=True,
              help="The simulated attacker's recipe: DreamBooth steps (sets its schedule).")
@click.option("--attacker-lr", type=float, default=DreamBoothConfig.lr, show_default=True)
@click.option("--sample-steps", type=int, default=PersGuardConfig.sample_steps, show_default=True,
              help="Sampling steps of the teacher's prior pictures.")
@click.option("--guidance", type=float, default=PersGuardConfig.guidance, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Data-parallel Ray Train workers.")
@click.option("--gpus", is_flag=True, help="One GPU per worker.")
@click.option("--checkpoint-every", type=int, default=50, show_default=True)
@click.option("--max-failures", type=int, default=2, show_default=True,
              help="Worker-group restarts from the latest checkpoint before the run fails.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
def persguard_command(model, subjects_uri, output_uri, objectives, mode, identifier, steps, lr, batch, prior_weight,
                      retain_weight, retain_steps, retain_every_step, pattern_pictures, retain_lr_scale, prior_images,
                      general_prompts, attacker_steps, attacker_lr, sample_steps, guidance, workers, gpus,
                      checkpoint_every, max_failures, seed, s3_endpoint) -> None:
    """Implant personalization backdoors for a subject catalog; write the protected model and a manifest."""
    attacker = replace(DreamBoothConfig(), identifier=identifier, steps=attacker_steps, lr=attacker_lr,
                       class_sample_steps=sample_steps, class_guidance=guidance)
    implant = PersGuardConfig(mode=mode, steps=steps, lr=lr, batch=batch, prior_weight=prior_weight,
                              retain_weight=retain_weight, retain_steps=retain_steps,
                              retain_every_step=retain_every_step, retain_lr_scale=retain_lr_scale,
                              pattern_pictures=pattern_pictures, attacker=attacker,
                              prior_images=prior_images, general_prompts=tuple(general_prompts),
                              sample_steps=sample_steps, guidance=guidance, seed=seed)
    job = PersGuardJob(model=model, subjects=subjects_uri, output=output_uri, objectives=tuple(objectives),
                       implant=implant, workers=workers, gpus=gpus, checkpoint_every=checkpoint_every,
                       max_failures=max_failures, s3_endpoint=s3_endpoint)
    try:
        manifest = run(job)
    except JobError as error:
        click.echo(f"rtb persguard: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - Ray wraps worker failures; show the reason, not a traceback
        click.echo(f"rtb persguard: error: the job failed: {one_line(error)}", err=True)
        sys.exit(2)
    last = manifest["losses"][-1] if manifest["losses"] else {}
    click.echo(f"rtb persguard: {len(manifest['subjects'])} subject(s), {manifest['steps']} steps "
               f"(resumed from {manifest['resumed_from']}), last backdoor loss {last.get('backdoor', float('nan')):.4f}, "
               f"{manifest['wall_seconds']:.0f} s; model in {catalog.join(output_uri, 'model')}")


def main(argv: list[str] | None = None) -> None:
    """``python jobs/persguard.py ...`` (the ``ray job submit`` entrypoint): the options of ``rtb persguard``."""
    persguard_command.main(args=sys.argv[1:] if argv is None else argv, prog_name="persguard.py")


if __name__ == "__main__":
    main()
