"""``rtb check-editor``: will the protection work on this editor? Run it before protecting a catalog against one.

::

    rtb check-editor --model SPEC [--images URI] [--eps 0.025] [--limit 4] [--steps 20] [--seed 0]
    python jobs/check_editor.py <same options>

On the first ``--limit`` usable images of ``--images`` (default: the bundled samples) it protects with RTB and
with the noise control at the same ε, runs the malicious ``exact`` edit of the clean, RTB and noise image with
the same editor and seed, and prints one row per image (gain = RMS change of the fill over ε, exact
hole-SSIM, target distance) and a one-line verdict: ``steerable`` or ``not steerable``, by the rule of
:mod:`rtb.evaluation.steerability` (``docs/steerability.md``). It runs in this process (a few images; no Ray).

Exit status: 0 after a verdict (either one), 2 with a one-line reason when it could not run (bad arguments,
unreadable images, a model that does not load or fails).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# OpenMP threads that spin while they wait (the default) slow a busy CPU down many times over (the reference check:
# 230 s instead of 55 s on 2 cores under load); waiting passively costs little on an idle one. Only when run as
# `python jobs/check_editor.py`, where this line runs before torch loads.
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # `python jobs/check_editor.py`: make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click

from jobs import reader
from jobs.runtime import storage_options_for

SAMPLES = Path(__file__).resolve().parent.parent / "rtb" / "samples" / "catalog"
DEFAULT_LIMIT = 4


class CheckError(Exception):
    """The check could not run; the message is the one-line reason shown to the user."""


def load_images(uri: str, limit: int, options: dict):
    """The first ``limit`` usable pairs: ``(ids, images, masks, skipped)``; ``skipped`` = ``[(id, reason)]``.

    Rows that cannot be read, decoded or protected (no mask, empty or oversized mask, too small) are skipped
    with their reason; ``CheckError`` when the catalog cannot be read or has no usable row.
    """
    from rtb.images import check_pair, decode_image, decode_mask

    ids, images, masks, skipped = [], [], [], []
    try:
        for row in reader.iter_rows(reader.open_catalog(uri, "auto", options, columns=("id",)), options):
            try:
                if row.get("read_error"):
                    raise ValueError(row["read_error"])
                image, mask = decode_image(row["image"]), decode_mask(row["mask"])
                check_pair(image, mask)
            except ValueError as error:
                skipped.append((str(row.get("id")), str(error)))
                continue
            ids.append(str(row["id"]))
            images.append(image)
            masks.append(mask)
            if len(images) >= limit:
                break
    except (ValueError, OSError) as error:
        raise CheckError(f"cannot read --images {uri!r}: {error}") from None
    if not images:
        reason = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise CheckError(f"--images {uri!r} has no usable image/mask pair{reason}")
    return ids, images, masks, skipped


def format_report(result, source: str, skipped=()) -> list[str]:
    """The lines printed for a check: header, one row per image, the medians, the verdict and the rule."""
    from rtb.evaluation import steerability as st

    lines = [f"rtb check-editor: {result.model} (weights {result.fingerprint[:12]}…) on {result.device}; "
             f"{len(result.images)} image(s) from {source}; ε {result.eps:g}, {result.steps} RTB steps, seed {result.seed}"]
    for image_id, reason in skipped:
        lines.append(f"skipped {image_id}: {reason}")
    lines.append("")
    lines.append(f"{'id':<14} {'size':>9} {'hole':>6} {'gain RTB':>9} {'gain noise':>10} {'hole-SSIM RTB':>14} "
                 f"{'hole-SSIM noise':>15} {'target dist clean→RTB':>22} {'PSNR':>5}")
    for c in result.images:
        lines.append(f"{c.id[:14]:<14} {c.width:>4}×{c.height:<4} {c.mask_fraction:>6.1%} {c.gain_rtb:>9.2f} "
                     f"{c.gain_noise:>10.2f} {c.hole_ssim_rtb:>14.3f} {c.hole_ssim_noise:>15.3f} "
                     f"{c.target_distance_clean:>11.3f}→{c.target_distance_rtb:<10.3f} {c.protect_psnr_rtb:>5.1f}")
    lines.append(f"{'median':<14} {'':>9} {'':>6} {result.gain_rtb:>9.2f} {result.gain_noise:>10.2f} "
                 f"{result.hole_ssim_rtb:>14.3f} {result.hole_ssim_noise:>15.3f}")
    lines.append("")
    lines.append(result.line)
    for reason in result.reasons:
        lines.append(f"  because {reason}")
    lines.append(f"rule: steerable when the median RTB gain ≥ {st.MIN_GAIN:g}, ≥ {st.MIN_GAIN_RATIO:g} × the noise gain, "
                 f"and RTB's exact hole-SSIM is ≥ {st.MIN_SSIM_MARGIN:g} below noise's (docs/steerability.md); "
                 f"{result.seconds:.1f} s")
    return lines


def _reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@click.command("check-editor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", default="reference", show_default=True, help="The editor: reference | DIR | URI | FILE.pt")
@click.option("--images", "images_uri", default=None, help="Catalog URI (pairs, Parquet or WebDataset) [default: the bundled samples].")
@click.option("--eps", type=float, default=0.025, show_default=True, help="L∞ budget of both protections.")
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True, help="Images to check (the first usable ones).")
@click.option("--steps", type=int, default=None, help="RTB optimisation steps [default: the paper's 20].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the protections and of the editor.")
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
def check_editor(model, images_uri, eps, limit, steps, seed, s3_endpoint) -> None:
    """Protect a few images with RTB and with noise, edit them, and say whether RTB can steer this editor."""
    from rtb import load_inpainter
    from rtb.evaluation.steerability import check_editor as run_check
    from rtb.methods import check_budget

    source = images_uri or str(SAMPLES)
    shown = images_uri or "the bundled samples"
    try:
        # 1. Arguments, then the model (fail fast, before reading images), then the images.
        try:
            check_budget("rtb", eps)
        except ValueError as error:
            raise CheckError(f"--eps: {error}") from None
        if limit < 1:
            raise CheckError(f"--limit must be at least 1, got {limit}")
        if steps is not None and steps < 1:
            raise CheckError(f"--steps must be at least 1, got {steps}")
        try:
            inpainter = load_inpainter(model, storage_options=storage_options_for(model, s3_endpoint))
        except (ValueError, OSError) as error:
            raise CheckError(f"--model {model!r} does not load: {error}") from None
        ids, images, masks, skipped = load_images(source, limit, storage_options_for(source, s3_endpoint))
        # 2. The check.
        try:
            result = run_check(inpainter, images, masks, eps=eps, seed=seed, steps=steps, ids=ids)
        except Exception as error:  # noqa: BLE001 - a model that fails on these inputs: one line, no traceback
            raise CheckError(f"the check failed on --model {model!r}: {_reason(error)}") from None
    except CheckError as error:
        click.echo(f"rtb check-editor: error: {error}", err=True)
        sys.exit(2)
    for line in format_report(result, shown, skipped):
        click.echo(line)


def main(argv: list[str] | None = None) -> None:
    """``python jobs/check_editor.py``; returns normally after a verdict (exit status 2 raises ``SystemExit``)."""
    try:
        check_editor.main(args=argv, prog_name="rtb check-editor")
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
