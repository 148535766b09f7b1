"""benchmarks/gpu_session.py: the documented device command, run on CPU as it will run on the GPU machine.

The dry run executes the exact command line of docs/gpu-session.md with ``bash -c`` from the repository root, in
an environment that has only what the GPU image has (its package list as the device docs give it, read there on
2026-11-17) plus what the command installs from ``.whl/``: ``python3`` is this .venv's Python with a
``sitecustomize`` that makes every distribution of .venv's site-packages outside that list (and outside what its
packages require here, where .venv's newer versions need more) look uninstalled, to imports and to
``importlib.metadata`` alike. So ``ray``, ``kornia``, ``s3fs``, ``polars`` and ``diffusers`` cannot be imported
unless the command installed them into ``$TMPDIR/site`` (the command's wheel target; TMPDIR is the test's folder,
/tmp on the device). The tiny profile (``--dry-run``, set through ``$RTB_DRY_RUN``) replaces the full one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from rtb.inpainters import load_inpainter

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")

# The Python packages of the GPU image ("Python packages already there", read on the machine 2026-11-17).
GPU_IMAGE_PACKAGES = ["absl-py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio", "attrs", "botorch", "build", "certifi", "charset-normalizer", "chex", "click", "cloudpickle", "cmake", "colorama", "contourpy", "coverage", "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit", "cupy-cuda13x", "cycler", "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock", "flatbuffers", "flax", "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch", "grpcio", "h11", "h5py", "hf-xet", "httpcore", "httpx", "huggingface-hub", "humanize", "hypothesis", "idna", "imageio", "iniconfig", "interface-meta", "jax", "jax-cuda13-pjrt", "jax-cuda13-plugin", "jaxlib", "jaxtyping", "jinja2", "joblib", "kiwisolver", "lazy-loader", "lightning", "lightning-utilities", "linear-operator", "lineax", "llvmlite", "lxml", "markdown", "markdown-it-py", "markupsafe", "matplotlib", "mdurl", "meson", "ml-dtypes", "mpi4py", "mpmath", "msgpack", "multidict", "multipledispatch", "mypy-extensions", "nanobind", "narwhals", "networkx", "ninja", "numba", "numba-cuda", "numpy", "numpyro", "nvidia-cublas", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-cufile", "nvidia-curand", "nvidia-cusolver", "nvidia-cusparse", "nvidia-cusparselt-cu13", "nvidia-ml-py", "nvidia-nccl-cu13", "nvidia-nvjitlink", "nvidia-nvshmem-cu13", "nvidia-nvtx", "onnx", "onnx-ir", "onnxruntime", "onnxscript", "opencv-python-headless", "optax", "opt-einsum", "opt-einsum-fx", "optimistix", "orbax-checkpoint", "packaging", "pandas", "pathspec", "patsy", "peft", "pillow", "pip", "pluggy", "portalocker", "prometheus-client", "propcache", "protobuf", "psutil", "pyarrow", "pybind11", "py-cpuinfo", "pygments", "pyparsing", "pyproject-hooks", "pyre-extensions", "pytest", "pytest-benchmark", "pytest-cov", "pytest-mock", "pytest-timeout", "pytest-xdist", "python-dateutil", "pytorch-lightning", "pyyaml", "regex", "requests", "rich", "sacrebleu", "safetensors", "scikit-build-core", "scikit-image", "scikit-learn", "scipy", "seaborn", "sentencepiece", "sentence-transformers", "setuptools", "shellingham", "simplejson", "six", "sortedcontainers", "statsmodels", "sympy", "tabulate", "tensorboard", "tensorboard-data-server", "tensorstore", "threadpoolctl", "tifffile", "tiktoken", "timm", "tokenizers", "toolz", "torch", "torchaudio", "torchdiffeq", "torch-geometric", "torchmetrics", "torchvision", "tqdm", "transformers", "treescope", "triton", "typer", "typing-extensions", "typing-inspect", "urllib3", "uvloop", "wadler-lindig", "werkzeug", "wheel", "wrapt", "xarray", "xxhash", "yarl", "zipp"]
# What `import rtb` may need (docs/gpu-session.md): these and what they require.
RTB_PACKAGES = ("torch", "numpy", "pillow", "fsspec", "torchmetrics", "safetensors")

# Installed as sitecustomize.py: makes the distributions of .venv's site-packages outside the allowed ones look
# uninstalled, to the import system (PathFinder.find_spec finds none of their top-level modules) and to
# importlib.metadata (PathFinder.find_distributions skips them), so optional imports are skipped as they would be
# there. RTB_IMPORT_RULES names a JSON file {"distributions": [...], "roots": [...]} (roots: folders that are
# always importable, e.g. the command's wheel target); every refused module name is appended to RTB_IMPORT_LOG.
BLOCKER = r'''
import importlib.machinery, importlib.metadata, json, os, re, sys, sysconfig

_RULES = json.load(open(os.environ["RTB_IMPORT_RULES"]))
_ALLOWED = set(_RULES["distributions"])
_ROOTS = tuple(os.path.realpath(p) + os.sep for p in _RULES["roots"])
_SITE = tuple({os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("purelib", "platlib")})
_find_spec = importlib.machinery.PathFinder.find_spec
_find_distributions = importlib.machinery.PathFinder.find_distributions
_state = {"filter": True, "owners": None}


def _normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _hidden(location):
    location = os.path.realpath(location)
    return location.startswith(_SITE) and not location.startswith(_ROOTS)


def _owners(name):
    if _state["owners"] is None:
        _state["filter"] = False
        try:
            _state["owners"] = importlib.metadata.packages_distributions()
        finally:
            _state["filter"] = True
    return {_normal(d) for d in _state["owners"].get(name, [])}


def find_spec(cls, name, path=None, target=None):
    spec = _find_spec(name, path, target)
    if spec is None or "." in name or not _state["filter"]:
        return spec
    where = spec.origin if spec.origin not in (None, "namespace") else next(
        iter(spec.submodule_search_locations or []), "")
    if not _hidden(where):
        return spec
    owners = _owners(name)
    if owners & _ALLOWED or (not owners and name.startswith("_")):
        return spec
    with open(os.environ["RTB_IMPORT_LOG"], "a") as log:
        log.write(name + "\n")
    return None


def find_distributions(cls, context=importlib.metadata.DistributionFinder.Context()):
    for distribution in _find_distributions(context):
        path = getattr(distribution, "_path", None)
        name = distribution.metadata["Name"] or ""
        if not _state["filter"] or path is None or not _hidden(str(path)) or _normal(name) in _ALLOWED:
            yield distribution


importlib.machinery.PathFinder.find_spec = classmethod(find_spec)
importlib.machinery.PathFinder.find_distributions = classmethod(find_distributions)
sys.path_importer_cache.clear()
'''


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def with_requirements(names) -> set[str]:
    """``names`` and every distribution they require here (recursively; extras left out)."""
    seen, todo = set(), [normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normal(requirement.name))
    return seen


def restricted_environment(tmp_path: Path, distributions: set[str], roots: list[Path]) -> dict[str, str]:
    """An environment whose ``python3`` is this .venv's Python with the import blocker installed."""
    import os

    blocker, bin_dir = tmp_path / "blocker", tmp_path / "bin"
    blocker.mkdir()
    bin_dir.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    rules = tmp_path / "import-rules.json"
    rules.write_text(json.dumps({"distributions": sorted(distributions), "roots": [str(r) for r in roots]}))
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="{blocker}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", RTB_IMPORT_RULES=str(rules), RTB_IMPORT_LOG=str(tmp_path / "blocked"),
               TMPDIR=str(tmp_path))
    return env


def load_session():
    spec = importlib.util.spec_from_file_location("gpu_session_benchmark", REPO / "benchmarks" / "gpu_session.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def documented_command() -> str:
    text = (REPO / "docs" / "gpu-session.md").read_text()
    blocks = re.findall(r"<!-- device-command -->\s*```bash\n(.*?)\n```", text, re.DOTALL)
    assert len(blocks) == 1, "docs/gpu-session.md must hold exactly one device command"
    return blocks[0]


def returned_files(out: Path) -> dict[str, int]:
    """What the device tool brings back from ``out``, checked against its limits here (not by the script)."""
    files = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert len(files) <= 8 and sum(files.values()) <= 64 * 2**20
    assert all(size <= 16 * 2**20 for size in files.values())
    assert all(len(Path(name).parts) <= 3 for name in files)  # at most two folders down
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for name in files for part in Path(name).parts)
    return files


def test_device_command_is_documented_once_short_and_read_by_the_script():
    command = documented_command()
    assert len(command) < 2000 and "\n" not in command
    assert load_session().device_command() == command
    assert command.startswith("S=${TMPDIR:-/tmp}/site; python3 -m pip install -q --no-index --no-deps --no-compile "
                              "--no-cache-dir --upgrade --target $S .whl/*.whl && export PYTHONPATH=$S:$PWD;")
    assert 'python3 benchmarks/gpu_session.py run --out "$OUT"' in command


def test_import_rtb_and_the_trainer_need_only_the_declared_packages(tmp_path):
    env = restricted_environment(tmp_path, with_requirements(RTB_PACKAGES), roots=[])
    code = "import rtb, rtb_train.lama_gan, rtb_train.checkpoint; print('imported', flush=True); import ray"
    result = subprocess.run(["python3", "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    # rtb and the trainer import; ray, which is not among those packages, looks uninstalled.
    assert result.stdout == "imported\n", result.stderr[-3000:]
    assert result.stderr.strip().endswith("No module named 'ray'")
    assert "ray" in (tmp_path / "blocked").read_text().split()


def make_committed_checkpoint(session, folder: Path, scratch: Path) -> None:
    """The dry run's stand-in for the committed checkpoint: 2 steps of its recipe from the seed, in-process and
    without data workers (batch k depends on (seed, k) only)."""
    from rtb_train.lama_gan import main

    argv = [*session.DRY_RUN.train_args, "--steps", "2", "--workers", "0", "--checkpoint-dir", str(scratch),
            "--output", str(scratch / "weights.safetensors")]
    assert main(argv) == 0
    shutil.copytree(scratch / "step-00000002", folder)


def test_dry_run_of_the_documented_device_command(tmp_path):
    session = load_session()
    start = time.time()
    # 1. The committed checkpoint's stand-in, and the GPU image's imports.
    committed = tmp_path / "committed"
    make_committed_checkpoint(session, committed, tmp_path / "seed-run")
    env = restricted_environment(tmp_path, with_requirements(GPU_IMAGE_PACKAGES), roots=[tmp_path / "site"])
    blocked = subprocess.run(["python3", "-c", "import diffusers"], cwd=REPO, env=env, capture_output=True, text=True,
                             check=False)
    assert blocked.stderr.strip().endswith("No module named 'diffusers'"), blocked.stderr[-2000:]
    assert (tmp_path / "blocked").read_text().split() == ["diffusers"]
    env.update(OUT=str(tmp_path / "out"), RTB_DRY_RUN=str(committed))
    (tmp_path / "out").mkdir()

    # 2. The documented command, as the device runs it (from the repository root).
    result = subprocess.run(["bash", "-c", documented_command()], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    log = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, log

    # 3. What comes back fits the device tool's limits and holds the checkpoint, the logs and the record.
    out = tmp_path / "out"
    files = returned_files(out)
    assert set(files) == {"checkpoint/generator.safetensors", "checkpoint/discriminator.safetensors",
                          "checkpoint/ema.safetensors", "checkpoint/state.json", "train.log", "gpu.log",
                          "session.json"}, files
    record = json.loads((out / "session.json").read_text())
    assert record["profile"] == "dry-run" and record["return_problems"] == []
    assert record["work"].startswith(str(tmp_path))  # nothing is written into the repository

    # 4. Training resumed from the committed checkpoint: its steps continue, Adam restarted with a re-warm-up.
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["optimizer_state"] == "none" and state["rewarm_start"] == 2
    sessions = state["record"]["sessions"]
    assert [s["steps"] for s in sessions] == [[0, 2], [2, 4]] and state["record"]["images_seen"] == 8
    assert "--init-from" in sessions[1]["command"] and sessions[1]["workers"] == 2
    # The photos the call trained on (out/gpu-session/photos.npz when `prepare` made it) are scikit-image's.
    assert sessions[0]["photos"].split("sha256 ")[1] == sessions[1]["photos"].split("sha256 ")[1]
    train_log = (out / "train.log").read_text()
    assert f"resumed from {committed} at step 2" in train_log and "re-warm-up over 200 steps" in train_log

    # 5. Adopted here as after a lent session (into the test's folder): the device has no git, so its sessions
    #    carry no commit and adopt fills in this checkout's; the logs get the call's date; the weights load.
    recorded = state["record"]["sessions"][1]["commit"]
    state["record"]["sessions"][1]["commit"] = None
    (out / "checkpoint" / "state.json").write_text(json.dumps(state))
    adopted = tmp_path / "adopted"
    assert session.main(["adopt", str(out), "--checkpoint", str(adopted / "reference-gan"), "--results",
                         str(adopted / "results"), "--weights", str(adopted / "reference-gan.safetensors"),
                         "--accept-dry-run"]) == 0
    adopted_state = json.loads((adopted / "reference-gan" / "state.json").read_text())
    assert adopted_state["record"]["sessions"][1]["commit"] == recorded
    date = record["started"][:10]
    assert sorted(p.name for p in (adopted / "results").iterdir()) == [f"gpu-{date}-train.log", f"gpu-{date}.log"]
    weights = json.loads((adopted / "reference-gan.json").read_text())
    assert weights["steps_done"] == 4 and weights["images_seen"] == 8 and len(weights["sessions"]) == 2
    editor = load_inpainter(adopted / "reference-gan.safetensors", device="cpu")
    x, m = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    m[..., 8:20, 10:24] = 1
    assert torch.equal(editor.edit(x, m) * (1 - m), x * (1 - m))
    with pytest.raises(ValueError, match="'dry-run' session"):
        session.main(["adopt", str(out), "--checkpoint", str(adopted / "again")])

    # 6. The benchmark ran with the carried wheels; without .whl/ (a fresh clone) it stops at the versions line
    #    because diffusers cannot be imported, and the training is unaffected.
    gpu_log = (out / "gpu.log").read_text()
    if list((REPO / ".whl").glob("diffusers-*.whl")):
        wheel = next((REPO / ".whl").glob("diffusers-*.whl")).name.split("-")[1]
        assert re.search(rf"^device CPU .*, diffusers {re.escape(wheel)}, transformers ", gpu_log, re.MULTILINE), gpu_log[-2000:]
        assert "rtb latent-x0" in gpu_log and "best batch" in gpu_log
        assert re.fullmatch(r"speedup: [0-9.]+", gpu_log.strip().splitlines()[-1]), gpu_log[-2000:]
        assert [phase["returncode"] for phase in record["benchmark"]] == [0, 0]
    else:
        assert "No module named 'diffusers'" in gpu_log
        assert [phase["returncode"] != 0 for phase in record["benchmark"]] == [True]
    print(f"dry run: {time.time() - start:.0f} s in all")


def test_return_problems_name_each_limit(tmp_path):
    session = load_session()
    assert session.return_problems(tmp_path) == []
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")
    with open(tmp_path / "big.bin", "wb") as handle:
        handle.truncate(16 * 2**20 + 1)
    for i in range(6):
        (tmp_path / f"f{i}.txt").write_text("x")
    problems = session.return_problems(tmp_path)
    assert any("9 files" in p for p in problems)
    assert any(p.startswith("a/b/c/deep.txt is more than 2 folders deep") for p in problems)
    assert any(p.startswith("bad name.txt has names outside") for p in problems)
    assert any(p.startswith("big.bin has 16777217 bytes") for p in problems)


def test_the_sessions_recipe_is_the_default_model_and_resumes_the_committed_checkpoint():
    """The full profile trains the model card's default architecture and data, open-ended; once a checkpoint is
    committed, it is one the documented call can resume (same architecture, seed and data)."""
    from rtb.reference.lama import LamaConfig
    from rtb_train.checkpoint import (
        COMMITTED,
        check_compatible,
        is_checkpoint,
        read_state,
    )
    from rtb_train.data import GanDataConfig
    from rtb_train.gan import DiscriminatorConfig, GanTrainer
    from rtb_train.lama_gan import build_parser, resolve_config

    session = load_session()
    assert session.COMMITTED == COMMITTED
    run = resolve_config(build_parser().parse_args(list(session.FULL.train_args)))
    assert (run.model, run.disc, run.data) == (LamaConfig(), DiscriminatorConfig(), GanDataConfig())
    assert (run.train.seed, run.train.batch, run.train.decay_fraction, run.train.steps) == (0, 32, 0.0, 1_000_000)
    assert "--optimizer-state" in session.FULL.train_args and run.device.type == "cuda"
    if is_checkpoint(COMMITTED):
        state = read_state(COMMITTED)
        trainer = GanTrainer(run.model, run.disc, run.train)
        check_compatible(COMMITTED, state, trainer, run.data)
        assert state["optimizer_state"] == "none" and state["step"] == state["record"]["steps"]
