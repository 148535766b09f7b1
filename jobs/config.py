"""The protection job's arguments: :class:`JobConfig`, their checks (each a ``ValueError`` naming the flag), the
library settings they resolve to, and the model check that runs before any Ray work."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rtb import catalog
from rtb.methods import METHODS, check_budget, get_method


@dataclass(frozen=True)
class JobConfig:
    """One protection run, as given on the command line (saved, without secrets, in the manifest)."""

    # Catalog URI: a prefix or file that fsspec understands (/path, file://, s3://, memory://).
    input: str
    # Output prefix; images/, metrics/, errors/, state/ and runs/ are written under it.
    output: str
    # Model spec for rtb.load_inpainter: "reference", a diffusers directory, a .pt/.safetensors file, a URI.
    model: str = "reference"
    # Protection method: rtb, photoguard-encoder, photoguard-diffusion or noise.
    method: str = "rtb"
    # Perturbation budget; None = the method's default (rtb: 0.025 L∞).
    eps: float | None = None
    # Optimisation steps; None = the method's default (rtb: 20).
    steps: int | None = None
    # Images per optimizer batch and per block into the actor stage.
    batch_size: int = 8
    # Actors in the pool; None = one per GPU in the cluster (divided by gpus_per_actor), else 1.
    actors: int | None = None
    # GPUs reserved per actor (fractions share a GPU); None = 1 when the cluster has GPUs, else 0 (CPU).
    gpus_per_actor: float | None = None
    # Input format: auto (decided from the files at --input), parquet, webdataset or pairs.
    format: str = "auto"
    # Where the protected regions come from: "catalog" (every row's own mask) or "auto:faces,text" (rows without
    # a mask, or with an empty one, get the faces and/or text that offline detectors find; a row's own non-empty
    # mask always wins). Detection needs the optional extra rtb[detect].
    masks: str = "catalog"
    # S3-compatible endpoint URL; None = AWS_ENDPOINT_URL from the environment, or AWS itself.
    s3_endpoint: str | None = None
    # Run id naming the manifest and the metrics/errors files; None = a new UTC-timestamped id. Rerunning an
    # id resumes it: what it committed is kept and not redone (nightly runs use a date-based id).
    run_id: str | None = None
    # Base seed of the optimizer (per-image seeds derive from it and the image content).
    seed: int = 0
    # Per-pixel budget (rtb.ProtectConfig.budget): "jnd" (ε the ceiling of a just-noticeable-difference map; the
    # default) or "uniform" (ε everywhere, the paper's); the colour basis of δ: "luma-chroma" (the default; grey
    # images stay grey) or "rgb" (the paper's); the chroma bound as a fraction of the luma one.
    budget: str = "jnd"
    colour: str = "luma-chroma"
    chroma_ratio: float = 0.25
    # rtb only: attacker-like holes added to the loss per image and step (mask augmentation; 0 = the paper's
    # losses). Each costs one more forward per step; see docs/efficacy.md for what it buys.
    augment_holes: int = 0
    # Expectation over transformation (rtb): the transformations the protection is optimised to survive,
    # e.g. "jpeg:60-95,resize:0.5-1.0" (rtb.transforms.parse_eot); "" = none (the paper's method).
    eot: str = ""
    # How images/<id>.* are stored: "png" (lossless, the default), "jpeg:Q" or "webp:Q" for platforms that keep
    # lossy copies; the metrics row then records the bound the stored file actually reaches.
    output_format: str = "png"
    # Process only the first N rows of the input (in file order); None = all.
    limit: int | None = None
    # Re-protect every id, even those whose content key matches their current protection.
    force: bool = False
    # Delete the outputs (images/<id>.png) of ids that are no longer in the catalog, and forget them.
    prune: bool = False
    # A commit (one metrics, errors, state and missing Parquet file each) happens when this many result rows have
    # come back since the last one, or commit_seconds have passed, whichever is first: a run that dies loses
    # at most the uncommitted rows (redone when the run id is rerun), about a minute of work by default.
    commit_rows: int = 500
    commit_seconds: float = 60.0
    # Seconds without any block moving before Ray Data gives up (its default of 30 min is short for a
    # slow optimizer or GPU nodes that take long to start).
    no_progress_timeout_s: float = 6 * 3600.0


def check_config(config: JobConfig) -> None:
    """Raise ``ValueError`` naming the bad value before anything starts."""
    if config.method not in METHODS:
        raise ValueError(f"--method {config.method!r} is not one of {', '.join(METHODS)}")
    if config.eps is not None:
        try:
            check_budget(config.method, config.eps)
        except ValueError as error:
            raise ValueError(f"--eps: {error}") from None
    try:
        detect_kinds(config.masks)
    except ValueError as error:
        raise ValueError(f"--masks {config.masks!r}: {error}") from None
    if config.format not in ("auto", *catalog.FORMATS):
        raise ValueError(f"--format {config.format!r} is not one of auto, {', '.join(catalog.FORMATS)}")
    if config.actors is not None and config.actors < 1:
        raise ValueError(f"--actors must be at least 1, got {config.actors}")
    if config.gpus_per_actor is not None and not (0 <= config.gpus_per_actor):
        raise ValueError(f"--gpus-per-actor must be 0 or more, got {config.gpus_per_actor}")
    if config.gpus_per_actor and config.gpus_per_actor > 1 and config.gpus_per_actor != int(config.gpus_per_actor):
        raise ValueError(f"--gpus-per-actor above 1 must be a whole number, got {config.gpus_per_actor}")
    if config.limit is not None and config.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {config.limit}")
    if config.limit is not None and config.prune:
        raise ValueError(f"--prune with --limit {config.limit} would delete every id past the limit; use one of them")
    if config.commit_rows < 1:
        raise ValueError(f"--commit-rows must be at least 1, got {config.commit_rows}")
    if not config.commit_seconds > 0:
        raise ValueError(f"--commit-seconds must be positive, got {config.commit_seconds}")
    from rtb.transforms import parse_output_format

    # The library's own checks of the settings it takes (ProtectConfig: steps, batch size, augment holes, the EOT
    # spec, ...), each reported with the flag that set it.
    try:
        protect_config(config)
    except ValueError as error:
        raise ValueError(as_flag(str(error))) from None
    if config.eot and config.method != "rtb":
        raise ValueError(f"--eot applies to --method rtb only, got --method {config.method!r}")
    try:
        parse_output_format(config.output_format)
    except ValueError as error:
        raise ValueError(f"--output-format {config.output_format!r}: {error}") from None
    if config.run_id is not None:
        try:
            catalog.check_id(config.run_id)
        except ValueError:
            raise ValueError(
                f"--run-id {config.run_id!r} must be letters, digits, '.', '_' and '-', starting with a letter or digit"
            ) from None
        if "/" in config.run_id:
            raise ValueError(f"--run-id {config.run_id!r} must not contain '/'")
    source, target = str(config.input).rstrip("/"), str(config.output).rstrip("/")
    if not catalog.is_remote(source):
        source = os.path.abspath(source.removeprefix("file://"))
    if not catalog.is_remote(target):
        target = os.path.abspath(target.removeprefix("file://"))
    if target == source or target.startswith(source + "/"):
        raise ValueError(f"--output {config.output!r} must not be --input or inside it (outputs would be read as input)")


def detect_kinds(masks: str) -> tuple[str, ...]:
    """The detection kinds of a ``--masks`` value: ``()`` for ``catalog``, ``("face", "text")`` for
    ``auto:faces,text`` (``auto`` alone: both); ``ValueError`` naming what does not parse."""
    if masks == "catalog":
        return ()
    mode, _, spec = masks.partition(":")
    if mode != "auto":
        raise ValueError("must be 'catalog' or 'auto:faces,text' (auto: the regions are found by detection)")
    names = {"faces": "face", "face": "face", "text": "text"}
    kinds = [part.strip() for part in (spec or "faces,text").split(",")]
    unknown = [k for k in kinds if k not in names]
    if unknown or not kinds:
        raise ValueError(f"unknown detection kind(s) {', '.join(map(repr, unknown))}; choose faces and/or text")
    return tuple(dict.fromkeys(names[k] for k in kinds))


def detect_fingerprint(kinds: tuple[str, ...]) -> str:
    """What besides the image decides a detected mask: the detection settings and the detector packages'
    versions (part of the content key of rows whose mask is found)."""
    import dataclasses
    import hashlib
    import json
    from importlib.metadata import PackageNotFoundError, version

    from rtb.detection import DetectConfig

    versions = {}
    for name in ("opencv-python-headless", "rapidocr", "onnxruntime"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    payload = {"detect": dataclasses.asdict(DetectConfig(kinds=kinds)), "versions": versions}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]


def as_flag(message: str) -> str:
    """A library error about a setting (``"augment_holes must be ..."``) as one about its flag (``"--augment-holes
    must be ..."``)."""
    name, _, rest = message.partition(" ")
    return f"--{name.replace('_', '-')} {rest}" if name.isidentifier() else message


def protect_config(config: JobConfig):
    """The :class:`rtb.ProtectConfig` every actor uses (and the manifest records)."""
    from rtb import ProtectConfig

    return ProtectConfig(eps=config.eps, steps=config.steps, batch_size=config.batch_size, seed=config.seed,
                         augment_holes=config.augment_holes, eot=config.eot or (), budget=config.budget,
                         colour=config.colour, chroma_ratio=config.chroma_ratio)


def key_salt(config: JobConfig, fingerprint: str) -> str:
    """What besides the bytes decides a protection: the settings and the model. The batch size is left out:
    it never changes a result (per-sample losses and seeds, tested in tests/test_protect.py)."""
    import dataclasses

    from rtb import config_hash
    from rtb.transforms import parse_output_format

    settings = dataclasses.replace(protect_config(config), batch_size=1)
    return f"{config_hash(settings, config.method)}:{fingerprint}:{parse_output_format(config.output_format)}"


def check_model(spec: str, method: str, storage_options: dict) -> str:
    """Fail fast, before any Ray work, on a model that will not load; returns its fingerprint.

    Single-file models (the reference, .pt, .safetensors) are loaded once on the driver's CPU: they are small,
    and a load error then surfaces as one line instead of an actor dying on every node. A diffusers directory
    (GBs) is only checked for ``model_index.json`` and fingerprinted (copied into the local cache, as the
    actors do): the fingerprint is part of every row's content key, so it must be known before the run.
    """
    from rtb import load_inpainter
    from rtb.storage import fetch_to_cache, fingerprint

    if spec not in ("reference", "reference-gan"):
        fs, path = catalog.url_to_fs(spec, storage_options)
        if not fs.exists(path):
            raise ValueError(f"--model {spec!r} does not exist")
        if fs.isdir(path):
            if not fs.exists(path.rstrip("/") + "/model_index.json"):
                raise ValueError(f"--model {spec!r} is a directory without model_index.json (not a diffusers pipeline)")
            return fingerprint(fetch_to_cache(spec, None, storage_options))
    if get_method(method).NEEDS_VAE:
        raise ValueError(f"--method {method!r} needs a diffusers model directory (with a VAE); got --model {spec!r}")
    try:
        return load_inpainter(spec, device="cpu", storage_options=storage_options).fingerprint
    except ValueError as error:
        raise ValueError(f"--model {spec!r} does not load: {error}") from None
