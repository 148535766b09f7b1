"""benchmarks/pipeline.py without Ray: the job's stages driven in one process, on CPU with the reference model."""

from __future__ import annotations

import importlib.util
import math
import re
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline():
    """The benchmark module, loaded from its file; torch's thread count is restored afterwards (it sets it)."""
    threads = torch.get_num_threads()
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", REPO / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)


def test_no_ray_mode_writes_every_id_once_and_reports(pipeline, tmp_path, capsys):
    output = tmp_path / "out"
    pipeline.main(["--no-ray", "--device", "cpu", "--images", "2", "--size", "32", "--steps", "1",
                   "--batch-size", "2", "--decode-workers", "2", "--encode-workers", "2", "--output", str(output)])
    lines = capsys.readouterr().out.strip().splitlines()

    # Every input id (the 4N = 8 catalog rows) came out as exactly one PNG, and nothing else did.
    ids = sorted(row["id"] for row in pipeline.build_catalog(8, 32))
    pngs = sorted(path.name for path in (output / "images").iterdir())
    assert pngs == [f"{row_id}.png" for row_id in ids]
    assert len(set(ids)) == 8

    # The figures: a finite positive efficiency last; the main thread's fractions are fractions.
    assert lines[-1].startswith("efficiency: ")
    efficiency = float(lines[-1].split(": ")[1])
    assert math.isfinite(efficiency) and efficiency > 0
    main_thread = next(line for line in lines if line.startswith("main thread:"))
    fractions = {name: float(re.search(rf"{name} ([0-9.]+)", main_thread).group(1))
                 for name in ("busy", "starved", "blocked")}
    assert all(0 <= value <= 1 for value in fractions.values()), fractions
    # The three account for the main thread's time, up to the loop's own overhead (and three roundings).
    assert 0.9 <= sum(fractions.values()) <= 1.0015, fractions
    steady = next(line for line in lines if line.startswith("job:"))
    assert float(steady.split()[1]) > 0 and "6 images written after the first batch" in steady
    assert "gpu utilisation: n/a (no CUDA)" in lines


def test_no_ray_mode_refuses_bad_arguments(pipeline, tmp_path):
    with pytest.raises(ValueError, match="--batch-size 8"):
        pipeline.main(["--no-ray", "--device", "cpu", "--images", "2", "--batch-size", "8"])
    with pytest.raises(ValueError, match="--output applies to --no-ray only"):
        pipeline.main(["--output", str(tmp_path / "out")])
    (tmp_path / "used" / "images").mkdir(parents=True)
    (tmp_path / "used" / "images" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds images/"):
        pipeline.main(["--no-ray", "--output", str(tmp_path / "used")])
    with pytest.raises(ValueError, match="--queue-depth must be at least 1, got 0"):
        pipeline.main(["--no-ray", "--queue-depth", "0"])


def test_gpu_sampler_reads_nvidia_smi_when_nvml_is_missing(pipeline, tmp_path, monkeypatch):
    # A stand-in nvidia-smi on PATH printing what `--query-gpu=utilization.gpu,memory.used --format=csv,
    # noheader,nounits -lms 50` prints: one "utilisation, MiB" line per period, here alternating 40 and 80 %.
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!{sys.executable}\nimport sys, time\nfor i in range(1000):\n"
                    "    print(f'{40 if i % 2 else 80}, {1000 + i}', flush=True)\n    time.sleep(0.02)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    sampler = pipeline.GpuSampler("0", interval=0.05).start()
    began = time.perf_counter()
    time.sleep(0.5)
    sampler.stop()
    assert sampler.source == "nvidia-smi" and len(sampler.samples) >= 5
    assert {busy for _, busy, _ in sampler.samples} == {40.0, 80.0}
    summary = sampler.summary(began, time.perf_counter())
    assert re.match(r"mean (5|6)\d %, p10 40 %, min 40 % \(\d+ nvidia-smi samples every 0.05 s", summary), summary
    assert sampler.summary(0.0, 0.0 + 1e-9).startswith("n/a (no sample fell in the steady state")


@pytest.mark.parametrize("slow_stage", ["decode_and_validate", "write_images"])
def test_no_ray_mode_tells_a_slow_decode_from_a_slow_writer(pipeline, tmp_path, monkeypatch, slow_stage):
    import jobs.stages
    import jobs.writer
    from rtb import catalog

    # Shards of 3 rows, so that batches of 2 must be cut across shard boundaries as the job's repartition does.
    rows = pipeline.build_catalog(8, 32)
    catalog.write_shards(rows, str(tmp_path / "catalog"), rows_per_shard=3)
    module = jobs.stages if slow_stage == "decode_and_validate" else jobs.writer
    stage = getattr(module, slow_stage)

    def slow(*args, **kwargs):
        time.sleep(0.4)
        return stage(*args, **kwargs)

    monkeypatch.setattr(module, slow_stage, slow)
    run = pipeline.run_no_ray(str(tmp_path / "catalog"), str(tmp_path / "out"), "reference", steps=1, batch_size=2,
                              device="cpu", threads=None, decode_workers=1, encode_workers=1, queue_depth=1)

    assert sorted(run["results"].column("id").to_pylist()) == sorted(row["id"] for row in rows)
    assert set(run["results"].column("status").to_pylist()) == {"ok"}
    # One 0.4 s stage against a Protector call of a few ms: the main thread waits most of its steady state,
    # on the side that is slow.
    waited, other = ("starved", "blocked") if slow_stage == "decode_and_validate" else ("blocked", "starved")
    assert run[waited] > 0.6 and run[other] < 0.2 and run["busy"] < 0.4, run
    assert run["gpu"] == "n/a (no CUDA)"
