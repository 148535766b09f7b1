"""The evaluation job's actor stage: :class:`Evaluator` edits the clean, protected and control images of each
catalog row with every hole and returns one row per edit (:data:`ACTOR_SCHEMA`). Usable without Ray."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from jobs.runtime import storage_options_for
from rtb import catalog
from rtb.evaluation.edits import ROW_FIELDS
from rtb.transforms import OUTPUT_EXTENSIONS, parse_transforms

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
        ("protect_delta_e_mean", pa.float64()),  # CIEDE2000 of the arm's image vs the source: mean over pixels,
        ("protect_delta_e_p95", pa.float64()),  # 95th percentile, and share of pixels above a JND (2.3)
        ("protect_delta_e_above_jnd", pa.float64()),
        ("protect_grey_preserved", pa.float64()),  # grey source: 1 if the arm stayed exactly grey, else 0; NaN: colour
        ("status", pa.string()),  # ok, error (the image could not be evaluated) or skipped (no room for the hole)
        ("error", pa.string()),
    ]
)
assert tuple(EDIT_SCHEMA.names) == ROW_FIELDS
# Rows from the actors also carry the CLIP embeddings of the arm's edit and of the clean edit (float32 bytes).
ACTOR_SCHEMA = pa.schema([*EDIT_SCHEMA, ("clip_edit", pa.binary()), ("clip_clean", pa.binary())])


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

        # 1. Threads: a CPU actor uses exactly its share of the cores (jobs.runtime.resolve_pool).
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
        from rtb.evaluation.sheets import contact_sheet, sheet_name
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
                self._put_png(sheet, "sheets", sheet_name(row["id"], str(transform)))
            rows.extend(result.rows)
        if row["id"] in self.sample_ids:  # the flattest region of a sampled id, zoomed: where δ shows first
            from rtb.evaluation.crops import crop_strip

            self._put_png(crop_strip(source, arms["protected"]), "crops", sheet_name(row["id"]))
        return rows

    def _put_png(self, image, folder: str, name: str) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        catalog.put_bytes(catalog.join(self.output, folder, name), buffer.getvalue(),
                          storage_options_for(self.output, self.s3_endpoint))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rtb.evaluation.edits import error_row

        out = []
        for row in batch.to_pylist():
            try:
                out.extend(self._evaluate(row))
            except Exception as error:  # noqa: BLE001 - a bad image becomes an error row, never a failed job
                out.append(error_row(row.get("id"), f"{type(error).__name__}: {error}"))
        return pa.Table.from_pylist([{n: r.get(n) for n in ACTOR_SCHEMA.names} for r in out], schema=ACTOR_SCHEMA)
