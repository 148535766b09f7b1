"""The run manifest (``runs/<run_id>.json``, written last: it marks the run complete), the summary line, and
the list of runs in an output prefix (``rtb runs``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import posixpath

from jobs.config import JobConfig, protect_config
from jobs.rows import COMMIT_FILE
from jobs.runtime import package_versions
from rtb import catalog


def build_manifest(config: JobConfig, resolved: dict, counts: dict, fingerprints: list[str], devices: list[str],
                   files_written: list[str], times: tuple[float, float, float], extra: dict | None = None) -> dict:
    """The run manifest: resolved config, model fingerprint, versions, counts, files and throughput."""
    from rtb import config_hash
    from rtb.methods import resolved_budget

    started, ready, finished = times
    settings = protect_config(config)
    eps, steps = resolved_budget(config.method, settings.eps, settings.steps)
    wall, pipeline = finished - started, finished - ready
    return {
        "run_id": resolved["run_id"],
        "status": "complete",
        "input": config.input,
        "output": config.output,
        "format": resolved["format"],
        "config": {**dataclasses.asdict(config), **resolved, "eps": eps, "steps": steps},
        "protect_config": dataclasses.asdict(settings),
        "config_hash": config_hash(settings, config.method),
        "model": config.model,
        "model_fingerprint": fingerprints[0] if len(fingerprints) == 1 else (fingerprints or None),
        "devices": devices,
        "versions": package_versions(),
        "counts": counts,
        "files": sorted(files_written),
        **(extra or {}),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
        "finished_at": dt.datetime.fromtimestamp(finished, dt.timezone.utc).isoformat(),
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(ready - started, 3),
        "pipeline_seconds": round(pipeline, 3),
        # Throughput of the images this attempt protected (unchanged and resumed ids cost no optimisation).
        "images_per_second": round(counts["protected_now"] / wall, 4) if wall > 0 else None,
        "pipeline_images_per_second": round(counts["protected_now"] / pipeline, 4) if pipeline > 0 else None,
    }


def summary_line(manifest: dict) -> str:
    counts = manifest["counts"]
    resumed = f" (resumed: {counts['resumed']} committed earlier)" if counts.get("resumed") else ""
    missing = f", missing {counts['missing']}" if counts.get("missing") else ""
    missing += f", no region {counts['no_region']}" if counts.get("no_region") else ""
    return (
        f"rtb protect: run {manifest['run_id']}: protected {counts['protected']}, unchanged {counts['unchanged']}, "
        f"failed {counts['failed']}{missing} of {counts['read']} rows read{resumed} in {manifest['wall_seconds']:.1f} s "
        f"({manifest['images_per_second'] or 0:.3f} images/s); manifest "
        f"{catalog.join(manifest['output'], 'runs', manifest['run_id'] + '.json')}"
    )


def list_runs(output: str, storage_options: dict) -> list[dict]:
    """Every run in an output prefix, newest first: complete ones from their manifests, and run ids that
    committed rows but have no manifest yet (interrupted or in progress) as ``incomplete``."""
    fs, root = catalog.url_to_fs(output, storage_options)
    root = root.rstrip("/")
    runs = {}
    for path in fs.glob(f"{root}/runs/*.json"):
        manifest = json.loads(fs.cat_file(path))
        counts = manifest.get("counts", {})
        runs[manifest["run_id"]] = {
            "run_id": manifest["run_id"], "status": manifest.get("status", "complete"),
            "started_at": manifest.get("started_at"), "wall_seconds": manifest.get("wall_seconds"),
            "protected": counts.get("protected"), "unchanged": counts.get("unchanged", 0),
            "failed": counts.get("failed"), "missing": counts.get("missing", 0),
            "images_per_second": manifest.get("images_per_second"),
        }
    for folder in ("metrics", "errors"):
        for path in fs.glob(f"{root}/{folder}/*.parquet"):
            match = COMMIT_FILE.fullmatch(posixpath.basename(path))
            if match and match["run"] not in runs:
                modified = fs.modified(path) if hasattr(fs, "modified") else None
                runs[match["run"]] = {"run_id": match["run"], "status": "incomplete",
                                      "started_at": modified.isoformat() if modified else None, "wall_seconds": None,
                                      "protected": None, "unchanged": None, "failed": None, "missing": None,
                                      "images_per_second": None}
    return sorted(runs.values(), key=lambda r: (r["started_at"] or "", r["run_id"]), reverse=True)


def format_runs(runs: list[dict]) -> list[str]:
    """``rtb runs`` table lines."""
    lines = [f"{'run id':<28} {'status':<10} {'started (UTC)':<20} {'wall s':>8} {'protected':>9} {'unchanged':>9} "
             f"{'failed':>6} {'missing':>7} {'images/s':>8}"]

    def cell(value, spec=""):
        return "-" if value is None else format(value, spec)

    for r in runs:
        started = (r["started_at"] or "-")[:19].replace("T", " ")
        lines.append(f"{r['run_id']:<28} {r['status']:<10} {started:<20} {cell(r['wall_seconds'], '.1f'):>8} "
                     f"{cell(r['protected']):>9} {cell(r['unchanged']):>9} {cell(r['failed']):>6} "
                     f"{cell(r['missing']):>7} {cell(r['images_per_second'], '.3f'):>8}")
    return lines
