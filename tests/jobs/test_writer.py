"""The writer: the driver's commit on rows or seconds, and images/ kept true for duplicated ids in every format."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.protect import JobConfig, run
from jobs.rows import RESULT_SCHEMA, Prior, Status
from jobs.writer import Committer
from tests.fixtures.catalogs import make_image, make_mask, png


def result_rows(ids, status=Status.OK) -> pa.Table:
    rows = [{name: None for name in RESULT_SCHEMA.names} for _ in ids]
    for row, image_id in zip(rows, ids):
        row.update(id=image_id, status=status, content_key=f"key-{image_id}", protected_path=f"images/{image_id}.png",
                   protected_sha256="0" * 64, model_fingerprint="f", device="cpu")
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


class Clock:
    """A clock the test moves by hand (the committer's seconds are its own argument)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metrics_files(out) -> list:
    return sorted((out / "metrics").glob("*.parquet")) if (out / "metrics").exists() else []


def test_committer_commits_when_rows_or_seconds_come_first(tmp_path):
    clock, out = Clock(), tmp_path / "out"
    committer = Committer(str(out), "r1", "0123abcd", commit_rows=5, commit_seconds=60, clock=clock)
    # 1. Fewer rows than commit_rows, less time than commit_seconds: nothing committed yet.
    committer.add(result_rows(["a", "b"]))
    clock.now = 59.0
    committer.add(result_rows(["c"]))
    assert metrics_files(out) == []
    # 2. A minute after the last commit the next batch commits everything waiting.
    clock.now = 61.0
    committer.add(result_rows(["d"]))
    assert [pq.read_table(f).column("id").to_pylist() for f in metrics_files(out)] == [["a", "b", "c", "d"]]
    # 3. commit_rows rows commit at once, whatever the clock.
    committer.add(result_rows(["e", "f", "g", "h", "i"]))
    assert len(metrics_files(out)) == 2
    # 4. close() commits the rest; every id is in exactly one file, files named by run, attempt and commit number.
    committer.add(result_rows(["j"], Status.ERROR))
    summary = committer.close()
    names = [f.name for f in metrics_files(out)]
    assert names == ["r1-a0123abcd-00000.parquet", "r1-a0123abcd-00001.parquet"]
    assert [f.name for f in (out / "errors").glob("*.parquet")] == ["r1-a0123abcd-00002.parquet"]
    assert (summary.protected, summary.failed) == (9, 1) and len(summary.state_files) == 2


def test_committer_counts_resumed_rows_by_what_was_committed():
    committed = result_rows(["a", "b", "c"], Status.COMMITTED).to_pylist()
    committed[0]["prior_status"], committed[1]["prior_status"] = Prior.COMMITTED, Prior.COMMITTED
    committed[2]["prior_status"] = Prior.COMMITTED_ERROR
    committer = Committer("memory://committer-test", "r", "00000000", commit_rows=100)
    committer.add(pa.Table.from_pylist(committed, schema=RESULT_SCHEMA))
    summary = committer.close()
    assert (summary.resumed_ok, summary.resumed_failed, summary.protected, summary.failed) == (2, 1, 0, 0)


@pytest.mark.usefixtures("ray_session")
def test_an_id_that_becomes_duplicated_loses_its_image_in_every_output_format(tmp_path, tiny_model):
    """A lossy output format stores images/<id>.jpg; a later run that finds the id twice must not leave that file
    behind: the id loses its state row, so an image left there would look protected when it is not."""
    size = (48, 48)
    rows = [{"id": i, "image": png(make_image(k, size)), "mask": png(make_mask(size)), "prompt": None}
            for k, i in enumerate(("a", "b"))]
    catalog_dir, out = tmp_path / "catalog", tmp_path / "out"
    catalog_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), catalog_dir / "part-0.parquet")

    def job(run_id):
        return run(JobConfig(input=str(catalog_dir), output=str(out), model=tiny_model, steps=1, batch_size=2,
                             run_id=run_id, output_format="jpeg:90"))

    assert job("n1")["counts"]["protected"] == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.jpg", "b.jpg"]
    pq.write_table(pa.Table.from_pylist(rows + rows[:1]), catalog_dir / "part-0.parquet")
    manifest = job("n2")
    assert manifest["counts"]["duplicate_ids"] == 1 and manifest["counts"]["failed"] == 1
    assert sorted(p.name for p in (out / "images").iterdir()) == ["b.jpg"]
