#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu.py and benchmarks/build_sd15_inpaint.py need on the GPU machine and
# its image lacks, into .whl/ (git-ignored; it travels with the working tree, 64 MiB at most), and print the size.
#
# The GPU image: python3.12, torch 2.11, numpy, pillow, pyarrow, fsspec, safetensors, transformers, accelerate,
# click, torchmetrics, huggingface_hub (and their own dependencies); not diffusers, kornia, polars, ray, s3fs.
# What `import rtb`, rtb.inpainters.diffusers_inpaint (loading a pipeline and running its surrogates) and the
# two benchmark scripts import, traced in .venv, outside that set:
#   diffusers            the SD-inpainting backend;
#   requests             imported by diffusers.utils.loading_utils, and required at import by diffusers'
#                        runtime version check; with its import-time dependencies urllib3, certifi and
#                        charset-normalizer (idna comes with huggingface_hub's httpx).
# Not needed: kornia (and its binary kornia_rs) is imported by rtb.transforms only for EOT, which the benchmarks
# do not use (diffusers' guiders import it only when present); polars, ray and s3fs are imported by the jobs,
# not by rtb's library or these benchmarks; importlib_metadata is not imported on Python ≥ 3.10.
# Versions are pinned to the ones installed in .venv. diffusers 0.42 uses huggingface_hub ≥ 1.32 APIs: the GPU
# commands print the image's huggingface_hub version first (docs/benchmarks.md, "GPU (issue 12): how to run").
# Every wheel is the pure-Python one (py3-none-any; charset-normalizer also publishes compiled cp312 wheels): the
# same files then install on the device's Python 3.12 and in the CPU dry run of tests/benchmarks/test_gpu_session.py
# (this repository's .venv), so the dry run installs exactly what travels.
#
#     bash benchmarks/gpu_wheels.sh        # from the repository root
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
PACKAGES=(diffusers requests urllib3 certifi charset-normalizer)

rm -rf .whl
mkdir -p .whl
for name in "${PACKAGES[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        --abi none --platform any -d .whl "$name==$version"
done
ls -l .whl
du -sh .whl | awk '{print "total: " $1 " in .whl/"}'
