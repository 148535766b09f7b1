"""The ``rtb`` command line: ``rtb protect`` (the Ray Data job), ``rtb shard`` (pairs → Parquet), ``rtb evaluate``."""

from __future__ import annotations

import sys

import click

from jobs.protect import METHODS, JobConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Protect image catalogs against malicious inpainting."""


@cli.command("protect")
@click.option("--input", "input_uri", required=True, help="Catalog URI (/path, file://, s3://, memory://).")
@click.option("--output", "output_uri", required=True, help="Output prefix (images/, metrics/, errors/, runs/).")
@click.option("--model", default="reference", show_default=True, help="reference | DIR | URI | FILE.pt")
@click.option("--method", type=click.Choice(METHODS), default="rtb", show_default=True)
@click.option("--eps", type=float, default=None, help="Perturbation budget [default: the method's, rtb 0.025].")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: the method's, rtb 20].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per optimizer batch.")
@click.option("--actors", type=int, default=None, help="Actor pool size [default: one per GPU, else 1].")
@click.option("--gpus-per-actor", type=float, default=None, help="GPUs per actor, may be fractional [default: 1 if the cluster has GPUs, else 0].")
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "webdataset", "pairs"]), default="auto", show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
@click.option("--run-id", default=None, help="Run id [default: UTC timestamp]. Reusing one replaces that run.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Process only the first N rows.")
@click.option("--augment-holes", type=click.IntRange(0, 16), default=0, show_default=True,
              help="rtb: attacker-like holes added to the loss per image and step (mask augmentation).")
def protect_command(input_uri, output_uri, model, method, eps, steps, batch_size, actors, gpus_per_actor, fmt,
                    s3_endpoint, run_id, seed, limit, augment_holes) -> None:
    """Protect every image of a catalog; write protected PNGs, metrics, errors and a run manifest."""
    from jobs.protect import JobError, one_line, run, summary_line

    config = JobConfig(input=input_uri, output=output_uri, model=model, method=method, eps=eps, steps=steps,
                       batch_size=batch_size, actors=actors, gpus_per_actor=gpus_per_actor, format=fmt,
                       s3_endpoint=s3_endpoint, run_id=run_id, seed=seed, limit=limit,
                       augment_holes=augment_holes)
    try:
        manifest = run(config)
    except JobError as error:
        click.echo(f"rtb protect: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - Ray wraps actor/model failures; show the reason, not a traceback
        click.echo(f"rtb protect: error: the job failed: {one_line(error)}", err=True)
        sys.exit(2)
    click.echo(summary_line(manifest))


@cli.command("shard")
@click.option("--input", "input_uri", required=True, help="Folder of NAME.<ext> + NAME_mask.png pairs.")
@click.option("--output", "output_uri", required=True, help="Prefix for part-NNNNN.parquet shards.")
@click.option("--rows-per-shard", type=int, default=1000, show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
def shard_command(input_uri, output_uri, rows_per_shard, s3_endpoint) -> None:
    """Convert a folder of image/mask pairs into Parquet catalog shards."""
    from jobs.shard import shard

    try:
        written = shard(input_uri, output_uri, rows_per_shard, s3_endpoint)
    except (ValueError, OSError) as error:
        click.echo(f"rtb shard: error: {error}", err=True)
        sys.exit(2)
    click.echo(f"rtb shard: wrote {len(written)} shard(s) under {output_uri}")


def _add_evaluate() -> None:
    """``rtb evaluate`` lives with its job in jobs/evaluate.py."""
    from jobs.evaluate import evaluate

    cli.add_command(evaluate)


_add_evaluate()


def main(argv: list[str] | None = None) -> None:
    """Console script ``rtb``."""
    cli.main(args=argv, prog_name="rtb")


if __name__ == "__main__":
    main()
