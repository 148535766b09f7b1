"""Subject catalogs: the people, artworks or objects a model is protected for (or personalized on).

A subject is a set of images plus a subject id and a class word (the DreamBooth class noun: "person",
"dog", …). Three layouts are read from any fsspec URI:

- ``parquet``: ``*.parquet`` shards with columns ``subject`` (string), ``class_word`` (string), ``image``
  (binary: PNG/JPEG/WebP bytes) and optionally ``name`` (string), one row per image.
- ``webdataset``: ``*.tar`` shards holding ``<key>.{png,jpg,jpeg,webp}`` and ``<key>.json`` with
  ``{"subject": …, "class_word": …}``.
- ``folders``: ``<root>/<subject>/`` folders of images, each with a ``class.txt`` holding the class word.

Everything is checked when read (:func:`read_subjects`): a subject without images, an image that does not
decode, or a missing class word is a ``ValueError`` naming it, before anything is trained.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from rtb import catalog
from rtb.images import decode_image

SUBJECTS_SCHEMA = pa.schema(
    [("subject", pa.string()), ("class_word", pa.string()), ("image", pa.binary()), ("name", pa.string())]
)
LAYOUTS = ("parquet", "webdataset", "folders")


@dataclass(frozen=True)
class Subject:
    """One subject of a catalog."""

    # The subject id (unique in its catalog).
    subject_id: str
    # The class noun of its prompts ("a photo of sks <class_word>").
    class_word: str
    # Encoded image bytes, in catalog order.
    images: tuple[bytes, ...]
    # A name per image (file name or key), for messages and manifests.
    names: tuple[str, ...]

    def sha256s(self) -> list[str]:
        """sha256 of each image's bytes."""
        return [hashlib.sha256(data).hexdigest() for data in self.images]

    def tensor(self, size: int) -> torch.Tensor:
        """The images as an N×3×size×size float tensor in [0, 1] (RGB; centre-cropped square, then resized)."""
        return torch.stack([image_tensor(decode_image(data), size) for data in self.images])


def image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image as a 3×size×size float tensor in [0, 1] (centre square crop, bicubic resize)."""
    rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != size:
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, np.float32) / 255).permute(2, 0, 1).contiguous()


def _detect(files: list[str], uri: str) -> str:
    names = [f.lower() for f in files]
    found = [layout for layout, test in (("parquet", lambda n: n.endswith(".parquet")),
                                         ("webdataset", lambda n: n.endswith(".tar")),
                                         ("folders", lambda n: n.endswith(catalog.IMAGE_SUFFIXES + ("class.txt",))))
             if any(test(n) for n in names)]
    if len(found) != 1:
        what = "nothing readable" if not found else " and ".join(found)
        raise ValueError(f"cannot tell the subject catalog layout of {uri!r}: found {what}")
    return found[0]


def _rows_parquet(files: list[str], options: dict) -> list[dict]:
    rows = []
    for file in files:
        if not file.lower().endswith(".parquet"):
            continue
        fs, path = catalog.url_to_fs(file, options)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        for column in ("subject", "class_word", "image"):
            if column not in table.column_names:
                raise ValueError(f"subject catalog shard {file!r} has no {column!r} column")
        names = table.column("name").to_pylist() if "name" in table.column_names else [None] * table.num_rows
        for i, (subject, word, image) in enumerate(zip(table.column("subject").to_pylist(),
                                                       table.column("class_word").to_pylist(),
                                                       table.column("image").to_pylist())):
            rows.append({"subject": subject, "class_word": word, "image": image,
                         "name": names[i] or f"{posixpath.basename(file)}#{i}"})
    return rows


def _rows_webdataset(files: list[str], options: dict) -> list[dict]:
    rows = []
    for file in files:
        if not file.lower().endswith(".tar"):
            continue
        fs, path = catalog.url_to_fs(file, options)
        samples: dict[str, dict] = {}
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=io.BytesIO(handle.read()), mode="r:*") as archive:
            for member in (m for m in archive if m.isfile()):
                key, dot, suffix = member.name.rpartition(".")
                sample = samples.setdefault(key, {"name": key, "image": None, "subject": None, "class_word": None})
                payload = archive.extractfile(member).read()
                if "." + suffix.lower() in catalog.IMAGE_SUFFIXES:
                    sample["image"] = payload
                elif suffix.lower() == "json":
                    meta = json.loads(payload)
                    sample["subject"], sample["class_word"] = meta.get("subject"), meta.get("class_word")
        rows += samples.values()
    return rows


def _rows_folders(uri: str, files: list[str], options: dict) -> list[dict]:
    fs, root = catalog.url_to_fs(uri, options)
    root = root.rstrip("/")
    by_subject: dict[str, list[str]] = {}
    for file in files:
        relative = catalog.url_to_fs(file, options)[1][len(root):].lstrip("/")
        if "/" in relative:
            subject, name = relative.split("/", 1)
            by_subject.setdefault(subject, []).append(name)
    rows = []
    for subject, names in sorted(by_subject.items()):
        word = None
        if "class.txt" in names:
            with fs.open(f"{root}/{subject}/class.txt", "rb") as handle:
                word = handle.read().decode("utf-8", errors="replace").strip()
        images = [n for n in names if n.lower().endswith(catalog.IMAGE_SUFFIXES)]
        if not images:
            rows.append({"subject": subject, "class_word": word, "image": None, "name": None})
        for name in sorted(images):
            with fs.open(f"{root}/{subject}/{name}", "rb") as handle:
                rows.append({"subject": subject, "class_word": word, "image": handle.read(), "name": name})
    return rows


def read_subjects(uri: str, storage_options: dict | None = None) -> list[Subject]:
    """Read and check a subject catalog (layout detected from the files at ``uri``).

    Returns:
        The subjects, sorted by id, each with its images in catalog order.
    Raises:
        ValueError naming the URI, subject or image: nothing there, unknown layout, a subject without images,
        an image that does not decode, a missing or inconsistent class word.
    """
    # 1. List and read rows
    options = storage_options or {}
    files = catalog.list_files(uri, options)
    layout = _detect(files, uri)
    if layout == "parquet":
        rows = _rows_parquet(files, options)
    elif layout == "webdataset":
        rows = _rows_webdataset(files, options)
    else:
        rows = _rows_folders(uri, files, options)
    # 2. Group and check
    grouped: dict[str, dict] = {}
    for row in rows:
        subject = str(row["subject"] or "").strip()
        if not subject:
            raise ValueError(f"subject catalog {uri!r}: image {row['name']!r} has no subject id")
        catalog.check_id(subject)
        entry = grouped.setdefault(subject, {"words": set(), "images": [], "names": []})
        entry["words"].add(str(row["class_word"] or "").strip())
        if row["image"] is not None:
            entry["images"].append(bytes(row["image"]))
            entry["names"].append(str(row["name"]))
    subjects = []
    for subject_id, entry in sorted(grouped.items()):
        words = entry["words"] - {""}
        if "" in entry["words"] or not words:
            raise ValueError(f"subject {subject_id!r} in {uri!r} has no class word")
        if len(words) > 1:
            raise ValueError(f"subject {subject_id!r} in {uri!r} has several class words: {sorted(words)}")
        if not entry["images"]:
            raise ValueError(f"subject {subject_id!r} in {uri!r} has no images")
        for data, name in zip(entry["images"], entry["names"]):
            try:
                decode_image(data)
            except ValueError as error:
                raise ValueError(f"subject {subject_id!r} image {name!r} does not decode: {error}") from None
        subjects.append(Subject(subject_id, words.pop(), tuple(entry["images"]), tuple(entry["names"])))
    if not subjects:
        raise ValueError(f"subject catalog {uri!r} holds no subjects")
    return subjects


def write_subjects(subjects: list[Subject], uri: str, layout: str = "parquet",
                   storage_options: dict | None = None) -> str:
    """Write ``subjects`` as a catalog at ``uri`` (``parquet``: one ``part-00000.parquet``; ``folders``).
    Returns ``uri``."""
    if layout == "parquet":
        rows = [(s.subject_id, s.class_word, data, name) for s in subjects for data, name in zip(s.images, s.names)]
        table = pa.table({key: [row[i] for row in rows] for i, key in enumerate(SUBJECTS_SCHEMA.names)},
                         schema=SUBJECTS_SCHEMA)
        catalog.write_table(table, catalog.join(uri, "part-00000.parquet"), storage_options)
    elif layout == "folders":
        for s in subjects:
            catalog.put_bytes(catalog.join(uri, s.subject_id, "class.txt"), s.class_word.encode(), storage_options)
            for data, name in zip(s.images, s.names):
                catalog.put_bytes(catalog.join(uri, s.subject_id, name), data, storage_options)
    else:
        raise ValueError(f"layout must be parquet or folders; got {layout!r}")
    return uri
