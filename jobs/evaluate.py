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

Shape (Ray Data, the same as the protect job): the catalog rows of the ids to evaluate → ``Evaluator``
(actor pool: editor and CLIP loaded once per actor, GPU when asked; reads ``images/<id>.png`` of both runs,
runs the edits, writes the contact sheets of the sampled ids) → rows streamed back to the driver, which
writes ``edits/*.parquet``, ``summary.json``, CLIP-FID and ``report.html``. Each image costs 3·K editor
forwards (K ≈ 12 holes), so the work belongs on accelerator actors exactly like protection; the rows that
come back are small (a few hundred bytes per edit, plus CLIP embeddings). ``--runner local`` runs the same
``Evaluator`` in this process (no Ray), for small catalogs and CI.

Output layout under ``--output``::

    edits/part-NNNNN.parquet  one row per (id, arm, transform, family, index): EDIT_SCHEMA below; failed
                              ids get a row with status "error" and the reason
    summary.json              per arm (protected, control) and family: N, median and quartiles of each
                              metric, for the first transform at the top level and for each one under
                              "transforms"; the worst transform; CLIP-FID per arm and family (or why it
                              was skipped); the config
    report.html, sheets/*.png the report (goals table: one column per transform) and its contact sheets
                              (of the worst transform; relative links only; opens offline)
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # `python jobs/evaluate.py`: make `rtb` and `jobs` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import click

from rtb import catalog
from rtb.evaluation.edits import ROW_FIELDS
from rtb.evaluation.masks import FAMILIES, MASK_SETS
from rtb.transforms import OUTPUT_EXTENSIONS, format_transforms, parse_transforms

EDIT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("arm", pa.string()),  # "protected" (the --protected run) or "control" (the --control run)
        ("transform", pa.string()),  # what the images went through before the edit: none, jpeg:75, resize:0.5, ...
        ("family", pa.string()),  # exact, expanded, partial, bbox, brush, ring-half, elsewhere
        ("kind", pa.string()),  # malicious or benign
        ("index", pa.int32()),  # index of the hole within its family for this image
        ("hole_fraction", pa.float64()),  # share of the image inside the hole
        ("hole_ssim", pa.float64()),
        ("hole_psnr", pa.float64()),
        ("full_ssim", pa.float64()),
        ("full_psnr", pa.float64()),
        ("target_distance", pa.float64()),
        ("clean_target_distance", pa.float64()),
        ("protect_psnr", pa.float64()),  # the arm's image vs the source
        ("protect_ssim", pa.float64()),
        ("protect_linf", pa.float64()),
        ("status", pa.string()),  # ok, error (the image could not be evaluated) or skipped (no room for the hole)
        ("error", pa.string()),
    ]
)
assert tuple(EDIT_SCHEMA.names) == ROW_FIELDS
# Rows from the actors also carry the CLIP embeddings of the arm's edit and of the clean edit (float32 bytes).
ACTOR_SCHEMA = pa.schema([*EDIT_SCHEMA, ("clip_edit", pa.binary()), ("clip_clean", pa.binary())])
ROWS_PER_FILE = 20_000


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


class JobError(Exception):
    """The job could not run; the message is the one-line reason shown to the user."""


# ----------------------------------------------------------------------------------------------------------
# Checks and inputs
# ----------------------------------------------------------------------------------------------------------


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


def storage_options_for(uri: str, endpoint: str | None) -> dict:
    """fsspec options for ``uri`` (explicit, so every Ray worker uses the same endpoint and keys)."""
    from jobs.storage import storage_options_for as protect_options

    return protect_options(uri, endpoint)


def protected_ids(uri: str, storage_options: dict) -> dict[str, dict]:
    """``{id: metrics row}`` of the ids a protect run wrote successfully (``metrics/*.parquet``, status ok).

    When the prefix has a current state (``state/CURRENT.json``, written by incremental runs), only the ids
    whose protection stands are taken, each with the metrics row of the run that made it: an id that later
    failed, or was pruned, has an older row but no current image.

    Raises ``ValueError`` when ``uri`` holds no metrics files.
    """
    from jobs.state import read_current

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


def catalog_rows(fmt: str, files: list[str], wanted: set[str], storage_options: dict):
    """Plain-Python reader (local runner): catalog rows ``{id, image, mask, prompt, read_error}`` in ``wanted``."""
    if fmt == "pairs":
        for row in catalog.list_pairs(files):
            if row["id"] in wanted:
                yield catalog.read_pair(row, storage_options)
        return
    for shard in catalog.shard_files(files, fmt):
        fs, path = catalog.url_to_fs(shard, storage_options)
        with fs.open(path, "rb") as handle:
            data = handle.read()
        if fmt == "parquet":
            for row in pq.read_table(io.BytesIO(data)).to_pylist():
                if row.get("id") in wanted:
                    yield {"read_error": None, "prompt": None, **row}
        else:
            for row in catalog.read_tar(data, shard):
                if row["id"] in wanted:
                    yield row


# ----------------------------------------------------------------------------------------------------------
# The actor stage
# ----------------------------------------------------------------------------------------------------------


class Evaluator:
    """Actor stage: loads the editor (and CLIP) once, then evaluates batches of catalog rows.

    Usable without Ray: ``Evaluator(...)(pyarrow_table_of_catalog_rows)`` returns a table with ACTOR_SCHEMA.
    """

    def __init__(self, edit_model: str, protected: str, control: str | None, output: str, edit_config: dict,
                 sample_ids: tuple[str, ...] = (), clip_model: str | None = None,
                 s3_endpoint: str | None = None, threads: int | None = None, device: str | None = None,
                 transforms: str = "none"):
        import torch

        from rtb import load_inpainter
        from rtb.evaluation.edits import EditConfig
        from rtb.evaluation.masks import MaskSetConfig

        # 1. Threads: Ray sets OMP_NUM_THREADS=1 in workers; a CPU actor should use its share of the cores.
        if threads:
            torch.set_num_threads(threads)
        # 2. Models, loaded once per actor.
        self.s3_endpoint = s3_endpoint
        self.editor = load_inpainter(edit_model, device=device, storage_options=storage_options_for(edit_model, s3_endpoint))
        self.clip = None
        if clip_model:
            from rtb.evaluation.clip_fid import CLIPImageFeatures

            self.clip = CLIPImageFeatures(clip_model, device=self.editor.device)
        self.config = EditConfig(**{**edit_config, "masks": MaskSetConfig(**edit_config["masks"])})
        self.protected, self.control, self.output = protected, control, output
        self.sample_ids = frozenset(sample_ids)
        self.transforms = parse_transforms(transforms)

    def _read_arm(self, prefix: str, image_id: str):
        """``images/<id>.png`` of a protect run (or ``.jpg``/``.webp`` when it wrote a lossy format)."""
        from rtb.images import decode_image, split_alpha, to_tensor

        uri = catalog.join(prefix, "images", f"{image_id}.png")
        fs, path = catalog.url_to_fs(uri, storage_options_for(uri, self.s3_endpoint))
        if not fs.exists(path):
            for extension in sorted(set(OUTPUT_EXTENSIONS.values()) - {"png"}):
                other = path[: -len("png")] + extension
                if fs.exists(other):
                    path = other
                    break
        with fs.open(path, "rb") as f:
            return to_tensor(split_alpha(decode_image(f.read()))[0])

    def _evaluate(self, row: dict) -> list[dict]:
        import torch

        from rtb.evaluation.edits import evaluate_image
        from rtb.evaluation.report import contact_sheet, sheet_name
        from rtb.images import decode_image, decode_mask, split_alpha, to_tensor

        # 1. Decode the source, its region and the arms.
        if row.get("read_error"):
            raise ValueError(row["read_error"])
        source = to_tensor(split_alpha(decode_image(row["image"]))[0])
        region = torch.from_numpy(decode_mask(row["mask"]).astype(np.float64))
        arms = {"protected": self._read_arm(self.protected, row["id"])}
        if self.control:
            arms["control"] = self._read_arm(self.control, row["id"])
        rows = []
        for transform in self.transforms:
            # 2. Edit and measure, after the transform (the same real codec on the source and every arm).
            result = evaluate_image(self.editor, row["id"], source, region, arms, self.config,
                                    prompt=row.get("prompt") or None, transform=transform)
            # 3. CLIP embeddings of every edit (the driver computes FID from them).
            if self.clip is not None:
                keys = list(result.images)
                clean = self.clip(torch.stack([result.images[k]["clean"] for k in keys]).float()).cpu().numpy()
                index = {k: i for i, k in enumerate(keys)}
                for name in arms:
                    edits = self.clip(torch.stack([result.images[k][name] for k in keys]).float()).cpu().numpy()
                    for r in result.rows:
                        if r["arm"] == name:
                            i = index[(r["family"], r["index"])]
                            r["clip_edit"] = edits[i].astype(np.float32).tobytes()
                            r["clip_clean"] = clean[i].astype(np.float32).tobytes()
            # 4. The contact sheet of a sampled id: one malicious and one benign hole, on the images the editor saw.
            if row["id"] in self.sample_ids:
                picks = [(label, key) for label, key in (("malicious: exact", ("exact", 0)),
                                                         ("benign: ring-half", ("ring-half", 0))) if key in result.images]
                sheet = contact_sheet(result.inputs["source"], result.inputs["protected"],
                                      [(label, {"clean": result.images[k]["clean"],
                                                "protected": result.images[k]["protected"],
                                                "hole": result.images[k]["hole"]}) for label, k in picks])
                buffer = io.BytesIO()
                sheet.save(buffer, format="PNG")
                catalog.put_bytes(catalog.join(self.output, "sheets", sheet_name(row["id"], str(transform))),
                                  buffer.getvalue(), storage_options_for(self.output, self.s3_endpoint))
            rows.extend(result.rows)
        return rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rtb.evaluation.edits import error_row

        out = []
        for row in batch.to_pylist():
            try:
                out.extend(self._evaluate(row))
            except Exception as error:  # noqa: BLE001 - a bad image becomes an error row, never a failed job
                out.append(error_row(row.get("id"), f"{type(error).__name__}: {error}"))
        return pa.Table.from_pylist([{n: r.get(n) for n in ACTOR_SCHEMA.names} for r in out], schema=ACTOR_SCHEMA)


# ----------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------


def _ray_batches(config: EvalConfig, fmt: str, files: list[str], wanted: set[str], options: dict, kwargs: dict):
    import ray

    from jobs.storage import read_catalog, worker_env

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local",
                 runtime_env={"env_vars": worker_env(config.s3_endpoint)}, logging_level="WARNING")
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    actors = config.actors or (max(1, int(cluster_gpus // gpus)) if gpus and cluster_gpus else 1)
    if not gpus:
        kwargs = {**kwargs, "threads": max(1, int(ray.cluster_resources().get("CPU", 1)) // actors)}
    ds = read_catalog(fmt, files, options).filter(lambda r: r["id"] in wanted)
    ds = ds.map_batches(
        Evaluator,
        fn_constructor_kwargs=kwargs,
        batch_size=2,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=actors),
        num_gpus=gpus,
    )
    yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)


def _local_batches(fmt: str, files: list[str], wanted: set[str], options: dict, kwargs: dict):
    evaluator = Evaluator(**kwargs)
    for row in catalog_rows(fmt, files, wanted, options):
        yield evaluator(pa.Table.from_pylist([row]))


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


def run(config: EvalConfig) -> dict:
    """Run the evaluation; returns the summary (also written to ``summary.json``). ``JobError`` when it cannot run."""
    from rtb.evaluation.report import sheet_name, summarize_transforms, worst_transform, write_html

    started = time.time()
    # 1. Check the arguments and find the ids protected in both runs.
    try:
        check_config(config)
        options = storage_options_for(config.catalog, config.s3_endpoint)
        out_options = storage_options_for(config.output, config.s3_endpoint)
        protected = protected_ids(config.protected, storage_options_for(config.protected, config.s3_endpoint))
        ids = set(protected)
        if config.control:
            control = protected_ids(config.control, storage_options_for(config.control, config.s3_endpoint))
            ids &= set(control)
        ids = sorted(ids)[: config.limit] if config.limit else sorted(ids)
        if not ids:
            raise ValueError("no id was protected successfully in both runs" if config.control else "the protect run has no protected id")
        transforms = [str(t) for t in parse_transforms(config.transforms)]
        files = catalog.list_files(config.catalog, options)
        fmt = catalog.detect_format(files, config.catalog) if config.format == "auto" else config.format
    except (ValueError, OSError) as error:
        raise JobError(str(error)) from None
    methods = sorted({str(r.get("method")) for r in protected.values()})
    eps = sorted({r.get("eps") for r in protected.values() if r.get("eps") is not None})

    # 2. The actor stage's settings.
    mask_set = MASK_SETS[config.masks]
    edit_config = {"families": FAMILIES, "masks": asdict(mask_set), "seed": config.seed, "steps": config.steps,
                   "target": config.target, "batch_size": config.batch_size}
    sample_ids = tuple(ids[: config.sample])
    kwargs = {"edit_model": config.edit_model or config.model, "protected": config.protected, "control": config.control,
              "output": config.output, "edit_config": edit_config, "sample_ids": sample_ids,
              "clip_model": config.clip_model, "s3_endpoint": config.s3_endpoint,
              "transforms": format_transforms(parse_transforms(config.transforms))}
    wanted = set(ids)

    # 3. Edit and measure; stream rows to edits/*.parquet, keep the metrics and embeddings for the summary.
    batches = (_ray_batches(config, fmt, files, wanted, options, kwargs) if config.runner == "ray"
               else _local_batches(fmt, files, wanted, options, kwargs))
    rows: list[dict] = []
    features: dict[tuple[str, str], tuple[list, list]] = {}
    pending: list[dict] = []
    written: list[str] = []

    def flush() -> None:
        uri = catalog.join(config.output, "edits", f"part-{len(written):05d}.parquet")
        catalog.write_table(pa.Table.from_pylist(pending, schema=EDIT_SCHEMA), uri, out_options)
        written.append(uri)
        pending.clear()

    for batch in batches:
        for row in batch.to_pylist():
            clip_edit, clip_clean = row.pop("clip_edit", None), row.pop("clip_clean", None)
            if clip_edit is not None and row["status"] == "ok":
                entry = features.setdefault((row["transform"], row["arm"], row["family"]), ([], []))
                entry[0].append(np.frombuffer(clip_clean, np.float32))
                entry[1].append(np.frombuffer(clip_edit, np.float32))
            rows.append(row)
            pending.append(row)
            if len(pending) >= ROWS_PER_FILE:
                flush()
    seen = {r["id"] for r in rows}
    for missing in sorted(wanted - seen):  # protected but absent from the catalog
        row = {**{name: None for name in EDIT_SCHEMA.names}, "id": missing, "arm": "protected", "status": "error",
               "error": "id not found in --catalog"}
        rows.append(row)
        pending.append(row)
    if pending or not written:
        flush()

    # 4. Summary (the first transform at the top level, each one under "transforms"), CLIP-FID, report with
    #    the contact sheets of the worst transform.
    per_transform = summarize_transforms(rows, transforms)
    summary = {**per_transform[transforms[0]], "transforms": per_transform,
               "worst_transform": worst_transform(per_transform)}
    summary["clip_fid"] = compute_clip_fid(config, features)
    summary["images"] = len(ids)
    summary["failed_images"] = sorted({r["id"] for r in rows if r.get("status") == "error"})
    summary["protect_run"] = {"methods": methods, "eps": eps}
    summary["config"] = asdict(config)
    summary["edit_files"] = written
    summary["seconds"] = round(time.time() - started, 3)
    catalog.put_bytes(catalog.join(config.output, "summary.json"),
                      json.dumps(_json_safe(summary), indent=2, allow_nan=False).encode(), out_options)
    ok_sheets = [i for i in sample_ids if i in seen and i not in summary["failed_images"]]
    meta = {"catalog": config.catalog, "protected": config.protected, "control": config.control or "none",
            "editor": config.edit_model or config.model, "protection": f"{', '.join(methods)} at ε {eps}",
            "images": len(ids), "failed images": len(summary["failed_images"]), "mask set": config.masks,
            "seed": config.seed, "transforms": ", ".join(transforms)}
    worst = summary["worst_transform"]
    page = write_html(summary, [(i, f"sheets/{sheet_name(i, worst)}") for i in ok_sheets], meta)
    catalog.put_bytes(catalog.join(config.output, "report.html"), page.encode(), out_options)
    return summary


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
