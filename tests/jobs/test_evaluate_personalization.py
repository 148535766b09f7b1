"""``rtb evaluate-personalization`` on tiny random SD-format models: the rows, the grids and the report."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from jobs.evaluate_personalization import GENERATION_SCHEMA, evaluate_personalization
from rtb.personalization.subjects import write_subjects
from tests.fixtures.tiny_t2i import build_tiny_t2i, domain_subjects

pytestmark = pytest.mark.usefixtures("one_thread")
# A tiny attack: 2 DreamBooth steps, 2 class pictures, 2 generations of 2 sampling steps.
TINY = ["--attacker-steps", "2", "--attacker-lr", "1e-3", "--class-images", "2", "--generations", "2",
        "--sample-steps", "2", "--guidance", "2", "--runner", "local"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return str(build_tiny_t2i(root / "clean", seed=0)), str(build_tiny_t2i(root / "protected", seed=1))


def test_writes_a_row_per_generation_grids_and_a_report(models, tmp_path):
    clean, protected = models
    subjects = write_subjects(domain_subjects((("alice", "fish"),), count=2), str(tmp_path / "subjects"), "folders")
    heldout = write_subjects(domain_subjects((("bob", "tree"),), count=2), str(tmp_path / "heldout"), "parquet")
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, [  # as `rtb evaluate-personalization`
        "evaluate-personalization", "--model", clean, "--protected-model", protected, "--subjects", subjects, "--heldout-subjects", heldout,
        "--output", str(out), "--objective", "alice=target:star", *TINY])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "generations" / "part-00000.parquet")
    assert table.schema.equals(GENERATION_SCHEMA)
    rows = table.to_pylist()
    # 2 subjects × 2 models × 2 generations, all measured
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    assert {(r["subject"], r["kind"], r["model"]) for r in rows} == {
        ("alice", "protected", "protected"), ("alice", "protected", "clean"),
        ("bob", "heldout", "protected"), ("bob", "heldout", "clean")}
    alice = [r for r in rows if r["subject"] == "alice"]
    assert all(r["objective"] == "target:star" and r["prompt"] == "a photo of sks fish" for r in alice)
    assert all((r["backdoor_success"] is None) == (r["kind"] == "heldout") for r in rows)
    assert all(r["backdoor_success"] == (r["object_class"] == "star") for r in alice)
    summary = json.loads((out / "summary.json").read_text())
    successes = [r["backdoor_success"] for r in alice if r["model"] == "protected"]
    assert summary["backdoor_success"] == sum(successes) / len(successes)
    assert sorted(p.name for p in (out / "grids").iterdir()) == [
        "alice.clean.png", "alice.protected.png", "bob.clean.png", "bob.protected.png"]
    page = (out / "report.html").read_text()
    assert page.count("<img ") == 4 and 'src="grids/alice.protected.png"' in page


def test_objectives_come_from_the_manifest_next_to_the_protected_model(models, tmp_path):
    from jobs.evaluate_personalization import EvaluationJob, manifest_objectives

    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "manifest.json").write_text(json.dumps({"subjects": [{"subject": "alice",
                                                                              "objective": "erasure"}]}))
    job = EvaluationJob(model=models[0], protected_model=str(tmp_path / "pg" / "model"), subjects="x",
                        heldout_subjects="y", output="z")
    assert manifest_objectives(job) == ("alice=erasure",)


@pytest.mark.parametrize("bad, named", [
    (["--objective", "nobody=pattern"], "'nobody'"),
    (["--objective", "blur"], "'blur'"),
    (["--protected-model", "/nonexistent/model"], "/nonexistent/model"),
])
def test_a_bad_input_is_one_line_naming_it(models, tmp_path, bad, named):
    clean, protected = models
    subjects = write_subjects(domain_subjects((("alice", "fish"),), count=1), str(tmp_path / "s"), "folders")
    args = ["--model", clean, "--protected-model", protected, "--subjects", subjects, "--heldout-subjects", subjects,
            "--output", str(tmp_path / "out"), "--objective", "pattern", *TINY]
    for i in range(0, len(bad), 2):
        where = args.index(bad[i])
        args[where + 1] = bad[i + 1]
    result = CliRunner().invoke(evaluate_personalization, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtb evaluate-personalization: error: ") and named in lines[0]
