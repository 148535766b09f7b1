"""The ``rtb`` command line: ``rtb protect`` (the Ray Data job), ``rtb runs``, ``rtb shard`` (pairs → Parquet),
``rtb masks`` (find the regions of a catalog without masks), ``rtb evaluate``, ``rtb check-editor``, ``rtb persguard``
(the model-level implant on Ray Train) and ``rtb evaluate-personalization``. Each command
lives with its job; this module only gathers them."""

from __future__ import annotations

import sys

import click

from jobs.check_editor import check_editor
from jobs.evaluate import evaluate
from jobs.evaluate_personalization import evaluate_personalization
from jobs.masks import masks_command
from jobs.persguard import persguard_command
from jobs.protect import protect_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Protect image catalogs against malicious inpainting."""


@cli.command("runs")
@click.option("--output", "output_uri", required=True, help="Output prefix of protect runs.")
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
def runs_command(output_uri, s3_endpoint) -> None:
    """List the runs in an output prefix, newest first (incomplete ones included)."""
    from jobs.manifest import format_runs, list_runs
    from jobs.runtime import storage_options_for

    try:
        runs = list_runs(output_uri, storage_options_for(output_uri, s3_endpoint))
    except (ValueError, OSError) as error:
        click.echo(f"rtb runs: error: cannot list {output_uri!r}: {error}", err=True)
        sys.exit(2)
    for line in format_runs(runs):
        click.echo(line)


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


cli.add_command(protect_command)
cli.add_command(masks_command)
cli.add_command(evaluate)
cli.add_command(check_editor)
cli.add_command(persguard_command)
cli.add_command(evaluate_personalization)


def main(argv: list[str] | None = None) -> None:
    """Console script ``rtb``."""
    cli.main(args=argv, prog_name="rtb")


if __name__ == "__main__":
    main()
