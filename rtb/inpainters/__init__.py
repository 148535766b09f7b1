"""Model backends behind one contract (:class:`~rtb.inpainters.base.Inpainter`) and the loader that picks one."""

from __future__ import annotations

import os

from rtb.inpainters.base import Inpainter, Noise
from rtb.storage import fetch_to_cache, is_local

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".torchscript", ".ts")

__all__ = ["Inpainter", "Noise", "load_inpainter"]


def load_inpainter(spec, *, device=None, dtype=None, cache_dir: str | os.PathLike | None = None,
                   storage_options: dict | None = None, **backend_options) -> Inpainter:
    """Load an inpainter from a spec.

    Args:
        spec: ``"reference"`` (the bundled MSE-trained model), ``"reference-gan"`` (the bundled LaMa-style
            GAN-trained model; a ValueError says how to train it while its weights are missing), a diffusers
            pipeline directory (has ``model_index.json``), a TorchScript file (``.pt``/``.pth``/``.jit``/
            ``.torchscript``), a ``.safetensors`` file of either reference architecture (read from its
            metadata), each as a local path or any fsspec URI
            (remote ones are copied to ``cache_dir`` first), or an already loaded inpainter.
        device: torch device; default CUDA when available, else CPU.
        dtype: compute dtype; default fp16 on GPU for diffusers, fp32 otherwise.
        cache_dir: where remote models are copied (default ``$RTB_CACHE`` or ``~/.cache/rtb``).
        storage_options: fsspec options for remote URIs (endpoint, keys).
        backend_options: passed to the backend loader (e.g. ``surrogate=`` for diffusers).
    """
    if isinstance(spec, Inpainter) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise ValueError(f"model must be 'reference', 'reference-gan', a path or URI, or an inpainter; got {spec!r}")
    spec = str(spec)
    if spec == "reference":
        from rtb.inpainters.reference import load_reference

        return load_reference(device=device, dtype=dtype, **backend_options)
    if spec == "reference-gan":
        from rtb.inpainters.reference import load_reference_gan

        return load_reference_gan(device=device, dtype=dtype, **backend_options)
    local = fetch_to_cache(spec, cache_dir, storage_options)
    name = spec if not is_local(spec) else str(local)
    if local.is_dir():
        if not (local / "model_index.json").exists():
            raise ValueError(f"model directory {spec!r} has no model_index.json (not a diffusers pipeline)")
        from rtb.inpainters.diffusers_inpaint import load_diffusers

        return load_diffusers(local, device=device, dtype=dtype, name=f"diffusers:{name}", **backend_options)
    if local.suffix in TORCHSCRIPT_SUFFIXES:
        from rtb.inpainters.torchscript import load_torchscript

        return load_torchscript(local, device=device, dtype=dtype, name=f"torchscript:{name}", **backend_options)
    if local.suffix == ".safetensors":
        from rtb.inpainters.reference import load_reference

        return load_reference(local, device=device, dtype=dtype, **backend_options)
    raise ValueError(
        f"model {spec!r} is neither 'reference', 'reference-gan', a diffusers directory, a TorchScript file "
        f"({', '.join(TORCHSCRIPT_SUFFIXES)}) nor a .safetensors file"
    )
