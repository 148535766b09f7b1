"""``rtb persguard``: the Ray Train job on two CPU workers writes a loadable protected model, resumes after a
kill, and refuses bad inputs with a one-line error before any training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from jobs.cli import cli
from jobs.persguard import EXIT_ONCE_ENV, PersGuardJob, run
from rtb.personalization.components import load_components
from rtb.personalization.dreambooth import DreamBoothConfig
from rtb.personalization.persguard import PersGuardConfig
from rtb.personalization.subjects import Subject, write_subjects
from tests.fixtures.tiny_t2i import build_tiny_t2i, domain_subjects

TINY_IMPLANT = PersGuardConfig(
    steps=6, lr=1e-3, batch=2, retain_steps=1, prior_images=2, sample_steps=2, guidance=2.0,
    attacker=DreamBoothConfig(lr=1e-3, class_images=2, class_sample_steps=2, class_guidance=2.0))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_t2i(tmp_path_factory.mktemp("tiny-t2i")))


@pytest.fixture(scope="module")
def subjects_uri(tmp_path_factory):
    return write_subjects(domain_subjects(), str(tmp_path_factory.mktemp("subjects")), "folders")


@pytest.fixture(scope="module")
def two_cpu_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def test_trains_on_two_workers_resumes_after_a_kill_and_writes_a_loadable_model(
        tiny_model, subjects_uri, tmp_path, monkeypatch, two_cpu_ray):
    job = PersGuardJob(model=tiny_model, subjects=subjects_uri, output=str(tmp_path / "out"),
                       objectives=("pattern", "bob=erasure", "carol=target:star"), implant=TINY_IMPLANT, workers=2,
                       checkpoint_every=2, max_failures=0)
    # 1. In the first run both workers kill their own processes after step 5 (checkpoints: steps 2, 4, 6).
    monkeypatch.setenv(EXIT_ONCE_ENV, f"{tmp_path / 'killed'}:5")
    with pytest.raises(Exception):
        run(job)
    assert (tmp_path / "killed.0").exists() and not (tmp_path / "out" / "manifest.json").exists()
    # 2. The same command again resumes from the last checkpoint Ray Train registered, and finishes.
    manifest = run(job)
    assert manifest["resumed_from"] in (2, 4) and manifest["steps"] == 6
    assert [r["step"] for r in manifest["losses"]] == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config_hash"] == manifest["config_hash"]
    assert {s["subject"]: s["objective"] for s in manifest["subjects"]} == {
        "alice": "pattern", "bob": "erasure", "carol": "target:star"}
    assert manifest["subjects"][0]["images"][0]["sha256"] == domain_subjects()[0].sha256s()[0]
    # 3. The protected model loads through the real loader; only the UNet differs from the clean model.
    protected, clean = load_components(tmp_path / "out" / "model"), load_components(tiny_model)
    assert any(not torch.equal(a, b) for a, b in zip(protected.unet.parameters(), clean.unet.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(protected.vae.parameters(), clean.vae.parameters()))


def _bad_inputs(kind, tiny_model, subjects_uri, tmp_path):
    """(model, subjects, objective, the value the message must name) for one kind of bad input."""
    if kind == "objective":
        return tiny_model, subjects_uri, "target:", "'target:'"
    if kind == "model":
        broken = tmp_path / "not-sd"
        shutil.copytree(tiny_model, broken)
        shutil.rmtree(broken / "text_encoder")
        return str(broken), subjects_uri, "pattern", str(broken)
    good = domain_subjects()[:1]
    bad = {"no images": None, "undecodable": Subject("zed", "cat", (b"\x89PNG broken",), ("zed-0.png",)),
           "class word": Subject("zed", "", good[0].images, ("zed-0.png",))}[kind]
    uri = write_subjects(good + ([bad] if bad else []), str(tmp_path / "subjects"), "folders")
    if kind == "no images":
        (tmp_path / "subjects" / "zed").mkdir()
        (tmp_path / "subjects" / "zed" / "class.txt").write_text("cat")
    if kind == "class word":
        (tmp_path / "subjects" / "zed" / "class.txt").write_text("")
    return tiny_model, uri, "pattern", "'zed'"


@pytest.mark.parametrize("kind", ["objective", "model", "no images", "undecodable", "class word"])
def test_a_bad_input_is_one_line_naming_it_before_training(kind, tiny_model, subjects_uri, tmp_path):
    import ray

    model, subjects, objective, named = _bad_inputs(kind, tiny_model, subjects_uri, tmp_path)
    ray_before = ray.is_initialized()
    result = CliRunner().invoke(cli, ["persguard", "--model", model, "--subjects", subjects, "--output",
                                      str(tmp_path / "out"), "--objective", objective])  # as `rtb persguard`
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtb persguard: error: ") and named in lines[0]
    assert not (tmp_path / "out").exists() and ray.is_initialized() == ray_before  # no Ray started, nothing written
