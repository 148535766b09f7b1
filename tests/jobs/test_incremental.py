"""Nightly operation: incremental runs over a changing catalog (unchanged ids skipped, changed ones redone,
failed ones lose their image, missing ones listed and pruned) and ``rtb runs``."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from jobs.protect import JobConfig, run
from jobs.state import read_current
from tests.fixtures.catalogs import make_image, make_mask, png

pytestmark = pytest.mark.usefixtures("ray_session")


def write_pairs(folder, rows: dict[str, tuple[bytes, bytes]]) -> None:
    """A pairs catalog: NAME.png + NAME_mask.png; ``rows`` replaces the folder's content."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        path.unlink()
    for name, (image, mask) in rows.items():
        (folder / f"{name}.png").write_bytes(image)
        (folder / f"{name}_mask.png").write_bytes(mask)


def run_rows(out, run_id: str, folder: str) -> dict[str, list[str]]:
    """Ids in the metrics and errors commit files of one run."""
    rows = {}
    for kind in ("metrics", "errors"):
        paths = sorted((out / kind).glob(f"{run_id}-a*.parquet")) if (out / kind).exists() else []
        rows[kind] = sorted(i for p in paths for i in pq.read_table(p).column("id").to_pylist())
    return rows


def state_ids(out) -> dict[str, str]:
    current = read_current(str(out), {})
    table = pa.concat_tables([pq.read_table(f) for f in current["files"]])
    return dict(zip(table.column("id").to_pylist(), table.column("content_key").to_pylist()))


def test_nightly_runs_recompute_only_what_changed(tmp_path, tiny_model):
    size = (48, 48)
    rows = {f"p{i}": (png(make_image(i, size)), png(make_mask(size))) for i in range(5)}
    source, out = tmp_path / "catalog", tmp_path / "out"
    write_pairs(source, rows)

    def job(run_id, **overrides):
        config = dict(input=str(source), output=str(out), model=tiny_model, steps=1, batch_size=4, run_id=run_id)
        return run(JobConfig(**{**config, **overrides}))

    # 1. First night: everything is new.
    first = job("n1")
    assert (first["counts"]["protected"], first["counts"]["unchanged"]) == (5, 0)
    images = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    keys = state_ids(out)
    assert sorted(keys) == sorted(rows) and read_current(str(out), {})["run_id"] == "n1"

    # 2. Nothing changed: nothing is recomputed, the images and their records stay.
    second = job("n2")
    assert (second["counts"]["protected"], second["counts"]["unchanged"], second["counts"]["failed"]) == (0, 5, 0)
    assert run_rows(out, "n2", "") == {"metrics": [], "errors": []}
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == images
    assert state_ids(out) == keys

    # 3. One image changed, one mask changed, one id added, one removed, one now broken.
    changed = dict(rows)
    changed["p0"] = (png(make_image(50, size)), rows["p0"][1])
    changed["p1"] = (rows["p1"][0], png(make_mask(size, box=(5, 5, 20, 20))))
    changed["p9"] = (png(make_image(9, size)), png(make_mask(size)))
    changed["p3"] = (b"no longer an image", rows["p3"][1])
    del changed["p4"]
    write_pairs(source, changed)
    third = job("n3")
    counts = third["counts"]
    assert (counts["protected"], counts["unchanged"], counts["failed"], counts["missing"]) == (3, 1, 1, 1)
    assert run_rows(out, "n3", "") == {"metrics": ["p0", "p1", "p9"], "errors": ["p3"]}
    assert third["missing_sample"] == ["p4"]
    assert not (out / "images" / "p3.png").exists(), "a failed id must not keep an image of an older source"
    assert (out / "images" / "p4.png").exists(), "a missing id keeps its image until --prune"
    assert (out / "images" / "p0.png").read_bytes() != images["p0.png"]
    assert (out / "images" / "p2.png").read_bytes() == images["p2.png"]
    current = state_ids(out)
    assert sorted(current) == ["p0", "p1", "p2", "p4", "p9"]
    assert current["p2"] == keys["p2"] and current["p0"] != keys["p0"] and current["p1"] != keys["p1"]

    # 4. A new config re-protects every id; --force does too; --prune forgets the missing id.
    fourth = job("n4", steps=2, prune=True)
    assert (fourth["counts"]["protected"], fourth["counts"]["unchanged"], fourth["counts"]["pruned"]) == (4, 0, 1)
    assert not (out / "images" / "p4.png").exists() and "p4" not in state_ids(out)
    fifth = job("n5", steps=2, force=True)
    assert (fifth["counts"]["protected"], fifth["counts"]["unchanged"], fifth["counts"]["missing"]) == (4, 0, 0)
    assert job("n6", steps=2, batch_size=2)["counts"]["unchanged"] == 4, "the batch size is not part of the key"

    # 5. rtb runs: newest first, with the counts.
    listing = CliRunner().invoke(cli, ["runs", "--output", str(out)])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["n6", "n5", "n4", "n3", "n2", "n1"]
    assert lines[4].split()[1] == "complete" and lines[4].split()[5:9] == ["3", "1", "1", "1"]
    manifest = json.loads((out / "runs" / "n3.json").read_text())
    assert manifest["counts"] == counts and manifest["prior"]["state_run_id"] == "n2"

    # 6. The evaluation takes each id's current record, not a stale row of an earlier run.
    from jobs.evaluate import protected_ids

    records = protected_ids(str(out), {})
    assert sorted(records) == ["p0", "p1", "p2", "p9"] and {r["run_id"] for r in records.values()} == {"n5"}


def test_eot_and_lossy_output_format_through_the_job(tmp_path, tiny_model):
    size = (48, 48)
    source, out = tmp_path / "catalog", tmp_path / "out"
    write_pairs(source, {f"q{i}": (png(make_image(i, size)), png(make_mask(size))) for i in range(2)})
    config = dict(input=str(source), output=str(out), model=tiny_model, steps=2, batch_size=2)
    # 1. EOT reaches the actors' config; a JPEG copy records the bound the stored file reaches.
    lossy = run(JobConfig(**config, run_id="lossy", eot="jpeg:60-95,resize:0.5-1.0", output_format="jpeg:90"))
    assert lossy["protect_config"]["eot"] and lossy["counts"]["protected"] == 2
    metrics = pa.concat_tables([pq.read_table(p) for p in sorted((out / "metrics").glob("lossy-a*.parquet"))])
    for row in metrics.to_pylist():
        assert row["output_format"] == "jpeg:90" and row["protected_path"].endswith(f"/images/{row['id']}.jpg")
        assert row["stored_linf"] >= row["linf"] - 1e-9 and row["stored_psnr"] < 60
        assert row["config_hash"] == lossy["config_hash"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["q0.jpg", "q1.jpg"]
    # 2. Another format is another key: re-protected as PNG, and the JPEG copies go.
    lossless = run(JobConfig(**config, run_id="lossless", eot="jpeg:60-95,resize:0.5-1.0"))
    assert (lossless["counts"]["protected"], lossless["counts"]["unchanged"]) == (2, 0)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["q0.png", "q1.png"]
    # 3. A bad spec is refused before anything runs, naming the value.
    from jobs.runtime import JobError

    with pytest.raises(JobError, match="--eot 'jpeg:200'"):
        run(JobConfig(**config, eot="jpeg:200"))
    with pytest.raises(JobError, match="--output-format 'gif'"):
        run(JobConfig(**config, output_format="gif"))
