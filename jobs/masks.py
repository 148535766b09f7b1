"""``rtb masks``: find the regions to protect in a catalog that has no masks, and write a catalog ``rtb protect``
reads as it is.

    rtb masks --input s3://b/uploads/ --output s3://b/found/ [--detect faces,text] [--format auto] [--s3-endpoint URL]
    rtb protect --input s3://b/found/catalog/ --output s3://b/protected/

The protect job's shape (``run(config) = finish(plan, pipeline(plan))``, the shared runtime and reader)::

    reader.read_catalog (rows may lack masks) → RegionFinder (CPU actor pool: one detector each)
    → write_outputs (CPU tasks: Parquet files) → counts back to the driver → manifest.json, written last

Output under ``--output`` (which must be empty: a finished output is never mixed with a new one)::

    catalog/part-<key>.parquet     the rows with a region: id, the image bytes untouched, the mask (PNG), prompt
    detections/part-<key>.parquet  one row per detection: id, kind, box x0 y0 x1 y1, score, detector, version
    errors/part-<key>.parquet      one row per id without a region (stage detect, "no region") or that failed
                                   (read, decode, detect), with the reason
    manifest.json                  counts read, with_region, no_region, failed; the detectors; the files

A row's own non-empty mask always wins (kept as it is, no detection). Every input id ends in exactly one of
``catalog/`` or ``errors/``. File names are the hash of the ids they hold, so a retried task rewrites its own file.
Exit status: 0 when the job ran (error rows included), 2 with a one-line reason when it could not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

if __package__ in (None, ""):  # `python jobs/masks.py` (ray job submit): make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click

from jobs import reader
from jobs.config import detect_kinds
from jobs.runtime import JobError, one_line, package_versions, start_ray, storage_options_for, tune_data_context
from rtb import catalog

DETECTIONS_SCHEMA = pa.schema([
    ("id", pa.string()), ("kind", pa.string()), ("x0", pa.int32()), ("y0", pa.int32()), ("x1", pa.int32()),
    ("y1", pa.int32()), ("score", pa.float64()), ("detector", pa.string()), ("detector_version", pa.string()),
])
ERRORS_SCHEMA = pa.schema([("id", pa.string()), ("stage", pa.string()), ("error", pa.string())])
# What the detect stage hands the writer: the catalog row (mask found or own), its outcome, its detections (JSON).
FOUND_SCHEMA = pa.schema([*catalog.CATALOG_SCHEMA, ("outcome", pa.string()), ("stage", pa.string()),
                          ("error", pa.string()), ("detections", pa.string())])
OUTCOMES = ("with_region", "no_region", "failed")


@dataclass(frozen=True)
class MasksConfig:
    """One ``rtb masks`` run, as given on the command line (saved in the manifest)."""

    # The catalog whose masks are to be found (rows may lack a mask); any fsspec URI.
    input: str
    # Where catalog/, detections/, errors/ and manifest.json go; must be empty or not exist.
    output: str
    # What to look for: faces, text, or both ("faces,text").
    detect: str = "faces,text"
    # Input format: auto, parquet, webdataset or pairs.
    format: str = "auto"
    # S3-compatible endpoint URL; None = AWS_ENDPOINT_URL from the environment, or AWS itself.
    s3_endpoint: str | None = None
    # Detector actors (one detector and one CPU thread each); None = the cluster's CPUs minus one.
    actors: int | None = None
    # Rows per output file.
    rows_per_file: int = 1000
    # Process only the first N rows of the input; None = all.
    limit: int | None = None


@dataclass(frozen=True)
class MasksPlan:
    config: MasksConfig
    kinds: tuple
    source: reader.Catalog
    in_options: dict
    out_options: dict
    actors: int
    started: float


class RegionFinder:
    """Actor stage: one detector per actor (one thread), then each catalog row's region. Usable without Ray."""

    def __init__(self, kinds: tuple[str, ...] = ("face", "text")):
        from rtb.detection import DetectConfig, RegionDetector

        self.detector = RegionDetector(DetectConfig(kinds=kinds, threads=1))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self._find(row) for row in batch.to_pylist()], schema=FOUND_SCHEMA)

    def _find(self, row: dict) -> dict:
        from rtb.images import decode_image, decode_mask

        out = {name: row.get(name) for name in FOUND_SCHEMA.names} | {"outcome": "failed", "detections": "[]"}
        try:
            catalog.check_id(row.get("id"))
            if row.get("read_error"):
                return out | {"stage": "read", "error": row["read_error"]}
            if row.get("mask") is not None and decode_mask(row["mask"]).any():
                return out | {"outcome": "with_region"}  # a row's own non-empty mask wins
            image = decode_image(row["image"])
        except ValueError as error:
            return out | {"stage": "read", "error": str(error)}
        try:
            detections = self.detector.detect(image)
            mask = self.detector.mask(image, detections)
        except Exception as error:  # noqa: BLE001 - a detector that raises fails its row only
            return out | {"stage": "detect", "error": f"{type(error).__name__}: {error}"}
        found = json.dumps([dataclasses.asdict(d) for d in detections])
        if not detections:
            return out | {"outcome": "no_region", "stage": "detect", "detections": found,
                          "error": f"no region: no {' or '.join(self.detector.config.kinds)} found"}
        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
        return out | {"outcome": "with_region", "mask": buffer.getvalue(), "detections": found}


def write_outputs(batch: pa.Table, output: str, storage_options: dict) -> pa.Table:
    """CPU stage: one catalog, detections and errors file for the batch (named by its ids); a row of counts."""
    rows = batch.to_pylist()
    key = hashlib.sha256("\n".join(sorted(str(r["id"]) for r in rows)).encode()).hexdigest()[:20]
    found = [r for r in rows if r["outcome"] == "with_region"]
    detections = [{"id": r["id"], "kind": d["kind"], **dict(zip(("x0", "y0", "x1", "y1"), d["box"])), "score": d["score"],
                   "detector": d["detector"], "detector_version": d["detector_version"]}
                  for r in rows for d in json.loads(r["detections"] or "[]")]
    errors = [{"id": r["id"], "stage": r["stage"], "error": r["error"]} for r in rows if r["outcome"] != "with_region"]
    parts = (("catalog", found, catalog.CATALOG_SCHEMA), ("detections", detections, DETECTIONS_SCHEMA),
             ("errors", errors, ERRORS_SCHEMA))
    files = []
    for folder, part, schema in parts:
        if part:
            uri = catalog.join(output, folder, f"part-{key}.parquet")
            catalog.write_table(pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in part], schema=schema),
                                uri, storage_options)
            files.append(uri)
    counts = {name: sum(r["outcome"] == name for r in rows) for name in OUTCOMES}
    return pa.Table.from_pylist([{**counts, "files": files}])


def prepare(config: MasksConfig) -> MasksPlan:
    """Check everything and start Ray; ``JobError`` with a one-line reason when the job cannot run."""
    started = time.time()
    # 1. Arguments, the detectors (their extra), the input, an empty output.
    try:
        kinds = detect_kinds(f"auto:{config.detect}")
        if config.rows_per_file < 1 or (config.limit is not None and config.limit < 1):
            raise ValueError(f"--rows-per-file and --limit must be at least 1, got {config.rows_per_file}, {config.limit}")
        if config.actors is not None and config.actors < 1:
            raise ValueError(f"--actors must be at least 1, got {config.actors}")
        in_options = storage_options_for(config.input, config.s3_endpoint)
        out_options = storage_options_for(config.output, config.s3_endpoint)
    except ValueError as error:
        raise JobError(f"--detect {config.detect!r}: {error}" if "kind" in str(error) else str(error)) from None
    from rtb.detection import require_extra

    try:
        require_extra(kinds)
    except ImportError as error:
        raise JobError(str(error)) from None
    try:
        source = reader.open_catalog(config.input, config.format, in_options, columns=reader.DETECT_COLUMNS)
        fs, path = catalog.url_to_fs(config.output, out_options)
        if fs.exists(path) and fs.find(path):
            raise ValueError(f"--output {config.output!r} is not empty; give a new prefix for each run")
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None
    # 2. Ray, and the detector pool: one actor per CPU but one (left to reading and writing).
    start_ray(config.s3_endpoint)
    tune_data_context(6 * 3600.0, preserve_order=config.limit is not None)
    import ray

    actors = config.actors or max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    return MasksPlan(config=config, kinds=kinds, source=source, in_options=in_options, out_options=out_options,
                     actors=actors, started=started)


def pipeline(plan: MasksPlan) -> dict:
    """read → find (actors) → write files → counts summed on the driver."""
    import ray

    config = plan.config
    dataset = reader.read_catalog(plan.source, plan.in_options, require_mask=False)
    if config.limit is not None:
        dataset = dataset.limit(config.limit)
    counts = {name: 0 for name in OUTCOMES} | {"files": []}
    written = dataset.map_batches(
        RegionFinder, batch_format="pyarrow", batch_size=8, fn_constructor_kwargs={"kinds": plan.kinds},
        compute=ray.data.ActorPoolStrategy(min_size=plan.actors, max_size=plan.actors), num_cpus=1,
    ).map_batches(write_outputs, batch_format="pyarrow", batch_size=config.rows_per_file, num_cpus=0.5,
                  fn_kwargs={"output": config.output, "storage_options": plan.out_options})
    for row in written.iter_rows():
        for name in OUTCOMES:
            counts[name] += row[name]
        counts["files"] += list(row["files"])
    return counts


def finish(plan: MasksPlan, counts: dict) -> dict:
    """The manifest, written last."""
    from rtb.detection import DetectConfig, RegionDetector

    manifest = {
        "status": "complete", "input": plan.config.input, "output": plan.config.output, "format": plan.source.format,
        "config": dataclasses.asdict(plan.config), "detect": dataclasses.asdict(DetectConfig(kinds=plan.kinds)),
        "detectors": RegionDetector(DetectConfig(kinds=plan.kinds)).describe(), "actors": plan.actors,
        "counts": {"read": sum(counts[name] for name in OUTCOMES), **{name: counts[name] for name in OUTCOMES}},
        "files": sorted(counts["files"]), "versions": package_versions(), "wall_seconds": round(time.time() - plan.started, 3),
    }
    catalog.put_bytes(catalog.join(plan.config.output, "manifest.json"),
                      json.dumps(manifest, indent=2, sort_keys=True).encode(), plan.out_options)
    return manifest


def run(config: MasksConfig) -> dict:
    """Find the regions of a catalog; returns the manifest. Raises ``JobError`` when it cannot run."""
    plan = prepare(config)
    return finish(plan, pipeline(plan))


@click.command("masks")
@click.option("--input", "input_uri", required=True, help="Catalog URI; rows may lack masks.")
@click.option("--output", "output_uri", required=True, help="Empty output prefix (catalog/, detections/, errors/).")
@click.option("--detect", default="faces,text", show_default=True, help="faces, text, or faces,text.")
@click.option("--format", "fmt", type=click.Choice(["auto", *catalog.FORMATS]), default="auto", show_default=True)
@click.option("--s3-endpoint", default=None, help="S3-compatible endpoint URL [default: $AWS_ENDPOINT_URL].")
@click.option("--actors", type=int, default=None, help="Detector actors [default: the cluster's CPUs minus one].")
@click.option("--rows-per-file", type=int, default=1000, show_default=True)
@click.option("--limit", type=int, default=None, help="Process only the first N rows.")
def masks_command(input_uri, output_uri, detect, fmt, s3_endpoint, actors, rows_per_file, limit) -> None:
    """Find faces and text in a catalog without masks; write a catalog rtb protect reads as it is."""
    config = MasksConfig(input=input_uri, output=output_uri, detect=detect, format=fmt, s3_endpoint=s3_endpoint,
                         actors=actors, rows_per_file=rows_per_file, limit=limit)
    try:
        manifest = run(config)
    except JobError as error:
        click.echo(f"rtb masks: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - Ray wraps actor failures; show the reason, not a traceback
        click.echo(f"rtb masks: error: the job failed: {one_line(error)}", err=True)
        sys.exit(2)
    counts = manifest["counts"]
    click.echo(f"rtb masks: {counts['read']} rows read: {counts['with_region']} with a region, {counts['no_region']} "
               f"without, {counts['failed']} failed in {manifest['wall_seconds']:.1f} s; catalog "
               f"{catalog.join(output_uri, 'catalog')}/, manifest {catalog.join(output_uri, 'manifest.json')}")


def main(argv: list[str] | None = None) -> None:
    """``python jobs/masks.py ...`` (the ``ray job submit`` entrypoint): the options of ``rtb masks``."""
    masks_command.main(args=sys.argv[1:] if argv is None else argv, prog_name="masks.py")


if __name__ == "__main__":
    main()
