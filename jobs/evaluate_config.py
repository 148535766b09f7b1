"""The evaluation job's arguments: :class:`EvalConfig`, their checks, and the ids a protect run protected."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.parquet as pq

from jobs.state import read_current
from rtb import catalog
from rtb.evaluation.masks import MASK_SETS
from rtb.transforms import parse_transforms


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run, as given on the command line (saved in summary.json)."""

    # The protect run's input catalog (pairs folder, Parquet shards or WebDataset tars; any fsspec URI).
    catalog: str
    # The protect run's output prefix (images/<id>.png and metrics/*.parquet).
    protected: str
    # Where edits/, sheets/, summary.json and report.html go.
    output: str
    # The model the protection was computed with (recorded; the editor when --edit-model is not given).
    model: str = "reference"
    # The editor that performs the edits; None = --model (a different one measures transfer).
    edit_model: str | None = None
    # Mask set: "default" (one or two holes per family) or "all" (every cut, more random draws).
    masks: str = "default"
    # Denoising steps of diffusion editors (None = the backend's default); single-forward models ignore it.
    steps: int | None = None
    # Seed of the random holes and of the editor's sampler.
    seed: int = 0
    # Evaluate only the first N ids (sorted); None = all.
    limit: int | None = None
    # Local CLIP model directory for CLIP-FID; None = skip CLIP-FID.
    clip_model: str | None = None
    # Output prefix of a `--method noise` protect run of the same catalog (the control arm); None = none.
    control: str | None = None
    # Target of the protection for target_distance: primary, gray or invert.
    target: str = "primary"
    # Images that get a contact sheet in the report (the first N ids).
    sample: int = 8
    # "ray" (Ray Data actor pool; joins RAY_ADDRESS) or "local" (in this process, no Ray).
    runner: str = "ray"
    # Actors in the pool (ray runner); None = one per GPU, else 1.
    actors: int | None = None
    # GPUs per actor (ray runner); None = 1 when the cluster has GPUs, else 0.
    gpus_per_actor: float | None = None
    # Catalog format: auto, parquet, webdataset or pairs.
    format: str = "auto"
    # S3-compatible endpoint; None = AWS_ENDPOINT_URL or AWS.
    s3_endpoint: str | None = None
    # Holes edited per editor call.
    batch_size: int = 16
    # Transforms applied (real codecs) to the clean, protected and control images before the edit, comma
    # separated (rtb.transforms): none, jpeg:Q, webp:Q, resize:S, blur:SIGMA. Every one is measured.
    transforms: str = "none"


def check_config(config: EvalConfig) -> None:
    """Raise ``ValueError`` naming the bad value before anything starts."""
    parse_transforms(config.transforms)  # ValueError naming the bad item
    if config.masks not in MASK_SETS:
        raise ValueError(f"--masks {config.masks!r} is not one of {', '.join(MASK_SETS)}")
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {config.steps}")
    if config.limit is not None and config.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {config.limit}")
    if config.sample < 0:
        raise ValueError(f"--sample must be 0 or more, got {config.sample}")
    if config.runner not in ("ray", "local"):
        raise ValueError(f"--runner {config.runner!r} is not one of ray, local")
    if config.format not in ("auto", *catalog.FORMATS):
        raise ValueError(f"--format {config.format!r} is not one of auto, {', '.join(catalog.FORMATS)}")
    if config.target not in ("primary", "gray", "invert"):
        raise ValueError(f"--target {config.target!r} is not one of primary, gray, invert")
    if config.actors is not None and config.actors < 1:
        raise ValueError(f"--actors must be at least 1, got {config.actors}")
    if config.clip_model is not None and not os.path.isfile(os.path.join(config.clip_model, "config.json")):
        raise ValueError(f"--clip-model {config.clip_model!r} is not a local model directory with a config.json")
    outputs = {os.path.abspath(str(u)).rstrip("/") for u in (config.catalog, config.protected, config.control) if u}
    if os.path.abspath(str(config.output)).rstrip("/") in outputs:
        raise ValueError(f"--output {config.output!r} must differ from --catalog, --protected and --control")


def protected_ids(uri: str, storage_options: dict) -> dict[str, dict]:
    """``{id: metrics row}`` of the ids a protect run wrote successfully (``metrics/*.parquet``, status ok).

    When the prefix has a current state (``state/CURRENT.json``, written by incremental runs), only the ids
    whose protection stands are taken, each with the metrics row of the run that made it: an id that later
    failed, or was pruned, has an older row but no current image.

    Raises ``ValueError`` when ``uri`` holds no metrics files.
    """
    fs, root = catalog.url_to_fs(uri, storage_options)
    files = sorted(fs.glob(f"{root.rstrip('/')}/metrics/*.parquet"))
    if not files:
        raise ValueError(f"{uri!r} is not the output of a protect run: no metrics/*.parquet under it")
    current = read_current(uri, storage_options)
    record: dict[str, str] | None = None
    if current:
        record = {}
        for path in current["files"]:
            with fs.open(catalog.url_to_fs(path, storage_options)[1], "rb") as handle:
                state = pq.read_table(handle, columns=["id", "run_id"])
            record.update(zip(state.column("id").to_pylist(), state.column("run_id").to_pylist()))
    out: dict[str, dict] = {}
    for path in files:
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        for row in table.to_pylist():
            if row.get("status", "ok") != "ok" or row.get("id") is None:
                continue
            if record is None or record.get(row["id"]) == row.get("run_id"):
                out[row["id"]] = row
    return out
