"""``make demo``: the protection job end to end on the bundled sample catalog, then the malicious edit it is for.

    python -m jobs.demo --output out/demo [--model reference] [--steps N]

1. Six ~256 px photos and drawings from ``rtb/samples/catalog`` (masks over faces, logos and text; one RGBA,
   one grayscale) are protected with the paper's settings (RTB, ε = 0.025, 20 steps) by the protect job on a
   local Ray.
2. The malicious edit, an inpainting whose hole is exactly the protected region, is run on each source and on
   its protected image with the same editor (``--model``) and seed; ``<output>/contact-sheet.png`` shows, one
   row per sample, ``source | protected | |δ| amplified | edit of source | edit of protected``.
3. The evaluation job (``rtb evaluate``, in this process, no Ray) edits the clean and the protected images with
   every hole family and writes ``<output>/evaluation/report.html``.

The protect run has the fixed run id ``demo`` (a rerun goes through the job's rules for a known run id). RTB vs
the noise control on the same editor, with a verdict: ``rtb check-editor`` (``docs/steerability.md``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# OpenMP threads that spin while they wait (the default) slow a busy CPU down many times over (the edits of the
# contact sheet: 33 s instead of 1.5 s on 2 cores at load 10); waiting passively costs little on an idle one.
# Set before torch loads (below), only when run as `python -m jobs.demo`; the local Ray's workers inherit it.
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "rtb" / "samples" / "catalog"
SEED = 0


# ----------------------------------------------------------------------------------------------------------
# The malicious edits and the contact sheet
# ----------------------------------------------------------------------------------------------------------


def read_samples(catalog_dir: str | Path, protected_dir: str | Path, ids: list[str]) -> list[dict]:
    """``[{id, source, protected, region}]`` for ``ids``: ``3×H×W`` RGB tensors in [0, 1] (alpha set aside) and
    the ``H×W`` protected region, from a pairs catalog and a protect run's ``images/<id>.png``."""
    from rtb import catalog
    from rtb.images import decode_image, decode_mask, split_alpha, to_tensor

    pairs = {row["id"]: row for row in catalog.list_pairs(catalog.list_files(str(catalog_dir)))}
    samples = []
    for image_id in ids:
        pair = catalog.read_pair(pairs[image_id])
        if pair["read_error"]:
            raise ValueError(pair["read_error"])
        protected = (Path(protected_dir) / "images" / f"{image_id}.png").read_bytes()
        samples.append({
            "id": image_id,
            "source": to_tensor(split_alpha(decode_image(pair["image"]))[0]),
            "protected": to_tensor(split_alpha(decode_image(protected))[0]),
            "region": torch.from_numpy(decode_mask(pair["mask"]).astype(np.float64)),
        })
    return samples


def malicious_edits(editor, samples: list[dict], seed: int = SEED) -> list[dict]:
    """The ``exact`` edit (hole = the protected region) of each source and of its protected image, with the same
    editor and seed; adds ``clean_edit``, ``protected_edit``, ``hole`` and ``hole_ssim`` (the protected edit
    against the clean edit inside the hole, as ``rtb evaluate`` measures it) to each sample."""
    from rtb.evaluation.edits import EditConfig, run_edits
    from rtb.metrics import hole_ssim

    config = EditConfig(families=("exact",), seed=seed)
    out = []
    for sample in samples:
        hole = (sample["region"] > 0).to(torch.float64)[None, None]
        clean = run_edits(editor, sample["source"][None], hole, config, config.prompt)
        protected = run_edits(editor, sample["protected"][None], hole, config, config.prompt)
        similarity = float(hole_ssim(protected.float(), clean.float(), hole)[0])
        out.append({**sample, "clean_edit": clean[0], "protected_edit": protected[0], "hole": hole[0, 0],
                    "hole_ssim": similarity})
    return out


def demo_sheet(rows: list[dict], footer: str = "") -> Image.Image:
    """One row per sample: ``source | protected | |δ| amplified | edit of source | edit of protected``.

    ``rows`` are :func:`malicious_edits` results; the row label gives the id and the hole-SSIM of the edit of
    the protected image against the edit of the source (1 = the same fill: the protection did nothing). The
    hole is outlined in yellow on both edits; ``footer`` is written under the grid.
    """
    from rtb.evaluation.sheets import DEMO_COLUMNS, DEMO_LAYOUT, edit_tiles, grid

    return grid(DEMO_COLUMNS, [([row["id"], f"hole-SSIM {row['hole_ssim']:.3f}"],
                                edit_tiles(row["source"], row["protected"], row["clean_edit"], row["protected_edit"], row["hole"]))
                               for row in rows], DEMO_LAYOUT, footer)


# ----------------------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------------------


def print_metrics(manifest: dict) -> list[dict]:
    """Print this run's metrics rows as a table (the metrics files its manifest lists: older runs with the same run
    id may sit beside them); returns the rows."""
    import pyarrow.parquet as pq

    metrics = [row for uri in manifest["files"] if "/metrics/" in uri
               for row in pq.read_table(uri).to_pylist() if row.get("status", "ok") == "ok"]
    click.echo("")
    click.echo(f"{'id':<12} {'size':>9} {'mode':>5} {'mask':>6} {'L∞·255':>7} {'PSNR':>6} {'SSIM':>6} {'ΔE p95':>7} "
               f"{'grey':>5} {'s':>6}")
    for row in sorted(metrics, key=lambda r: r["id"]):
        grey = "kept" if row["grey_preserved"] else ("LOST" if row["source_grey"] else "-")
        click.echo(f"{row['id']:<12} {row['width']:>4}×{row['height']:<4} {row['mode']:>5} {row['mask_fraction']:>6.1%} "
                   f"{row['linf'] * 255:>7.1f} {row['psnr']:>6.1f} {row['ssim']:>6.3f} {row['delta_e_p95']:>7.2f} "
                   f"{grey:>5} {row['seconds']:>6.2f}")
    click.echo("")
    return metrics


def sheet_footer(editor_name: str, manifest: dict, metrics: list[dict]) -> str:
    """The contact sheet's footer: the editor, the protection's settings, the edit."""
    eps = ", ".join(f"{e:g}" for e in sorted({r["eps"] for r in metrics}))
    steps = ", ".join(str(s) for s in sorted({r["steps"] for r in metrics}))
    settings = manifest["protect_config"]
    return (f"editor and protection model: {editor_name} | RTB eps {eps}, {steps} steps, budget {settings['budget']}, "
            f"{settings['colour']} | malicious edit: hole = the protected region (yellow), seed {SEED}")


def _fail(message: str) -> None:
    click.echo(f"demo: error: {message}", err=True)
    sys.exit(2)


@click.command()
@click.option("--output", default="out/demo", show_default=True, help="Where to write the demo outputs.")
@click.option("--model", default="reference", show_default=True,
              help="Model spec: protects and edits (see rtb protect --help).")
@click.option("--steps", type=int, default=None, help="Optimisation steps [default: the method's, 20].")
@click.option("--sheet-copy", default=None, help="Also write a small copy of the contact sheet here (docs).")
def main(output: str, model: str, steps: int | None, sheet_copy: str | None) -> None:
    """Protect the bundled sample catalog, edit it, and print where the outputs are."""
    from jobs.evaluate import main as evaluate_main
    from jobs.manifest import summary_line
    from jobs.protect import JobConfig, run
    from jobs.runtime import JobError, one_line
    from rtb import load_inpainter

    # 1. Run the job exactly as `rtb protect` would.
    output_dir = Path(output).resolve()
    config = JobConfig(input=str(SAMPLES), output=str(output_dir), model=model, steps=steps, run_id="demo",
                       format="pairs", batch_size=6)
    try:
        manifest = run(config)
    except JobError as error:
        _fail(str(error))
    except Exception as error:  # noqa: BLE001 - one line, not a Ray traceback
        _fail(f"the job failed: {one_line(error)}")

    # 2. Show what came out and where.
    # Ray's local cluster is not needed any more: stop it, so its processes do not compete for the CPU.
    import ray

    ray.shutdown()
    metrics = print_metrics(manifest)
    click.echo(summary_line(manifest))

    # 3. The malicious edit of each source and of its protected image, same editor and seed: the contact sheet.
    began = time.perf_counter()
    ids = sorted(r["id"] for r in metrics)
    try:
        editor = load_inpainter(model)
        rows = malicious_edits(editor, read_samples(SAMPLES, output_dir, ids))
    except (ValueError, OSError) as error:
        _fail(f"the malicious edits failed: {one_line(error)}")
    sheet_path = output_dir / "contact-sheet.png"
    sheet = demo_sheet(rows, sheet_footer(editor.name, manifest, metrics))
    sheet.save(sheet_path)
    if sheet_copy:
        from rtb.evaluation.sheets import small_copy

        small_copy(sheet, sheet_copy)
    sheet_seconds = time.perf_counter() - began
    click.echo("")
    click.echo("malicious edit (hole = the protected region), hole-SSIM of the edit of the protected image against "
               "the edit of the source (1 = unchanged, the protection did nothing; ≤ 0.30 = the edit failed):")
    click.echo("  " + ", ".join(f"{row['id']} {row['hole_ssim']:.3f}" for row in rows))

    # 4. The evaluation job over the run, in this process: every hole family, the report.
    click.echo("")
    began = time.perf_counter()
    evaluation = output_dir / "evaluation"
    try:
        evaluate_main(["--catalog", str(SAMPLES), "--protected", str(output_dir), "--output", str(evaluation),
                       "--model", model, "--runner", "local"])
    except SystemExit:
        _fail("the evaluation failed (its reason is above)")
    evaluation_seconds = time.perf_counter() - began

    click.echo("")
    click.echo(f"protected images: {output_dir / 'images'}/")
    click.echo(f"metrics:          {output_dir / 'metrics'}/  (errors, if any: {output_dir / 'errors'}/)")
    click.echo(f"manifest:         {output_dir / 'runs' / 'demo.json'}")
    click.echo(f"contact sheet:    {sheet_path}  ({sheet_seconds:.0f} s)" + (f"; small copy: {sheet_copy}" if sheet_copy else ""))
    click.echo(f"report:           {evaluation / 'report.html'}  ({evaluation_seconds:.0f} s)")


if __name__ == "__main__":
    main()
