"""``make demo``: the protection job end to end on the bundled sample catalog (local Ray, CPU, reference model).

    python -m jobs.demo --output out/demo

Six ~256 px photos and drawings from ``rtb/samples/catalog`` (masks over faces, logos and text; one RGBA,
one grayscale) are protected with the paper's settings (RTB, ε = 0.025, 20 steps). Rerunning replaces the
previous demo run (fixed run id ``demo``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

SAMPLES = Path(__file__).resolve().parent.parent / "rtb" / "samples" / "catalog"


@click.command()
@click.option("--output", default="out/demo", show_default=True, help="Where to write the demo outputs.")
@click.option("--model", default="reference", show_default=True, help="Model spec (see rtb protect --help).")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: the method's, 20].")
def main(output: str, model: str, steps: int | None) -> None:
    """Protect the bundled sample catalog and print where the outputs are."""
    import pyarrow.parquet as pq

    from jobs.protect import JobConfig, JobError, one_line, run, summary_line

    # 1. Run the job exactly as `rtb protect` would.
    output_dir = Path(output).resolve()
    config = JobConfig(input=str(SAMPLES), output=str(output_dir), model=model, steps=steps, run_id="demo",
                       format="pairs", batch_size=6)
    try:
        manifest = run(config)
    except JobError as error:
        click.echo(f"demo: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - one line, not a Ray traceback
        click.echo(f"demo: error: the job failed: {one_line(error)}", err=True)
        sys.exit(2)

    # 2. Show what came out and where.
    metrics = pq.read_table(output_dir / "metrics").to_pylist()
    click.echo("")
    click.echo(f"{'id':<12} {'size':>9} {'mode':>5} {'mask':>6} {'L∞·255':>7} {'PSNR':>6} {'SSIM':>6} {'s':>6}")
    for row in sorted((r for r in metrics if r["run_id"] == "demo"), key=lambda r: r["id"]):
        click.echo(f"{row['id']:<12} {row['width']:>4}×{row['height']:<4} {row['mode']:>5} {row['mask_fraction']:>6.1%} "
                   f"{row['linf'] * 255:>7.1f} {row['psnr']:>6.1f} {row['ssim']:>6.3f} {row['seconds']:>6.2f}")
    click.echo("")
    click.echo(summary_line(manifest))
    click.echo(f"protected images: {output_dir / 'images'}/")
    click.echo(f"metrics:          {output_dir / 'metrics'}/  (errors, if any: {output_dir / 'errors'}/)")
    click.echo(f"manifest:         {output_dir / 'runs' / 'demo.json'}")


if __name__ == "__main__":
    main()
