"""``ray job submit`` of ``jobs/protect.py`` against a local ``ray start --head`` (the cluster code path).

The head runs with ``RAY_AUTH_MODE=disabled`` (see cluster/README.md: with token auth on, the submit client
needs ``RAY_AUTH_MODE=token`` too). S3 credentials reach the job only through ``--runtime-env-json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rtb import catalog
from tests.fixtures.catalogs import good_rows

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path_factory):
    """A local head node (own ports and temp dir), stopped by killing the process group we started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(RAY_AUTH_MODE="disabled", PATH=f"{BIN}:{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    dashboard = _free_port()
    temp_dir = f"/tmp/rtb-{uuid.uuid4().hex[:6]}"
    command = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={_free_port()}",
               f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
               f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
               f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    head = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:
        probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env, capture_output=True)
        if probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGTERM)
        pytest.fail("ray start --head did not come up within 120 s")
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)  # --block: ray start stops the processes it started
    try:
        head.wait(timeout=10)  # a graceful stop takes ~35 s here; the test has no use for it
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_entrypoint_on_the_cluster(ray_head, s3_bucket, tiny_model):
    address, env = ray_head
    bucket, options = s3_bucket
    endpoint = options["client_kwargs"]["endpoint_url"]
    rows = good_rows(3, prefix="sub")
    catalog.write_shards(rows, f"s3://{bucket}/catalog", rows_per_shard=2, storage_options=options)
    runtime_env = {"env_vars": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_DEFAULT_REGION": "us-east-1"}}
    submission = f"rtb-test-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", submission,
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "jobs/protect.py", "--input", f"s3://{bucket}/catalog", "--output", f"s3://{bucket}/out",
         "--model", tiny_model, "--steps", "2", "--batch-size", "2", "--run-id", "submitted", "--s3-endpoint", endpoint],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rtb protect: run submitted: protected 3, unchanged 0, failed 0 of 3 rows read" in result.stdout
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    manifest = json.loads(fs.cat_file(f"{bucket}/out/runs/submitted.json"))
    assert manifest["counts"]["protected"] == 3
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/images")) == ["sub-0.png", "sub-1.png", "sub-2.png"]

    # The evaluation job under `ray job submit` too, through the same runtime: the job's runtime env already sets
    # the AWS keys (Ray refuses to set the same key twice), and its CPU actors get the protect job's thread share.
    evaluation = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", submission + "-eval",
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "jobs/evaluate.py", "--catalog", f"s3://{bucket}/catalog", "--protected", f"s3://{bucket}/out",
         "--output", f"s3://{bucket}/eval", "--model", tiny_model, "--s3-endpoint", endpoint, "--sample", "1"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert evaluation.returncode == 0, evaluation.stdout[-3000:] + evaluation.stderr[-3000:]
    assert "rtb evaluate: 3 image(s), 0 failed" in evaluation.stdout
    summary = json.loads(fs.cat_file(f"{bucket}/eval/summary.json"))
    assert summary["pool"]["threads"] == manifest["config"]["threads_per_actor"]
    assert summary["pool"]["actors"] == manifest["config"]["actors"]
