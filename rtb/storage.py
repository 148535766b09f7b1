"""Model files from anywhere fsspec reaches: local paths, ``file://``, ``s3://``, ``gs://``, ``memory://``.

Remote weights are copied once into a local cache keyed by the URI, so loading code (diffusers,
``torch.jit.load``, safetensors) always reads a local path and never touches the network itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import fsspec

# Files whose bytes define a model; the fingerprint hashes these.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".jit", ".torchscript", ".ts")


def is_local(uri: str) -> bool:
    """True when ``uri`` is a plain path or a ``file://`` URI."""
    protocol = fsspec.core.split_protocol(str(uri))[0]
    return protocol in (None, "file", "local")


def local_path(uri: str) -> Path:
    """The path of a local ``uri`` (strips ``file://``)."""
    return Path(fsspec.core.strip_protocol(str(uri)) if str(uri).startswith("file://") else str(uri))


def default_cache_dir() -> Path:
    """``$RTB_CACHE`` or ``~/.cache/rtb``."""
    return Path(os.environ.get("RTB_CACHE", Path.home() / ".cache" / "rtb"))


def fetch_to_cache(
    uri: str, cache_dir: str | os.PathLike | None = None, storage_options: dict | None = None
) -> Path:
    """Return a local path holding the file or directory at ``uri``.

    Local paths are returned as they are. Remote ones are copied into ``cache_dir/<sha256(uri)[:16]>/<name>``;
    a copy is reused when a completion marker says it finished (a half-copied cache entry is redone).
    Raises ``ValueError`` naming the URI when nothing exists there.
    """
    if is_local(uri):
        path = local_path(uri)
        if not path.exists():
            raise ValueError(f"model path {str(uri)!r} does not exist")
        return path
    fs, fs_path = fsspec.core.url_to_fs(str(uri), **(storage_options or {}))
    fs_path = fs_path.rstrip("/")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    target = entry / Path(fs_path).name
    done = entry / ".complete"
    if done.exists():
        return target
    if not fs.exists(fs_path):
        raise ValueError(f"model URI {str(uri)!r} does not exist")
    entry.mkdir(parents=True, exist_ok=True)
    if fs.isdir(fs_path):
        for remote in fs.find(fs_path):
            relative = remote[len(fs_path) :].lstrip("/")
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(destination))
    else:
        fs.get_file(fs_path, str(target))
    done.touch()
    return target


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 over the weight files under ``path`` (a file or a directory), in sorted relative-path order.

    Directories hash every file with a weight suffix plus its relative path, so renaming or swapping
    components changes the fingerprint; configuration JSON is included too, since it shapes the network.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
        base = path.parent
    else:
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.suffix == ".json")
        )
        base = path
    for file in files:
        digest.update(str(file.relative_to(base)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def offline_hub():
    """``HF_HUB_OFFLINE=1`` (and the transformers twin) for the duration of a model load: nothing is downloaded,
    whatever the environment says; the previous values come back afterwards."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({key: "1" for key in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
