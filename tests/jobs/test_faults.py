"""Faults under the job, each with a real local Ray and the S3 API server on loopback: the driver SIGKILLed
mid-run then rerun, an actor process dying mid-batch, an object store answering 503 SlowDown and resets,
and a row whose optimisation turns non-finite. Every id must end in exactly one row, nothing redone."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from rtb import catalog
from tests.fixtures.catalogs import make_image, make_mask, png

REPO = Path(__file__).resolve().parents[2]


def put_pairs(fs, prefix: str, count: int, size=(48, 48), start: int = 0) -> list[str]:
    names = []
    for i in range(start, start + count):
        name = f"f{i:02d}"
        fs.pipe_file(f"{prefix}/{name}.png", png(make_image(i, size)))
        fs.pipe_file(f"{prefix}/{name}_mask.png", png(make_mask(size)))
        names.append(name)
    return names


def committed(fs, out: str, run_id: str) -> dict[str, list[list[str]]]:
    """Per folder, the ids of each commit file of ``run_id``, grouped by attempt."""
    by_attempt: dict[str, dict[str, list[str]]] = {}
    for folder in ("metrics", "errors"):
        for path in sorted(fs.glob(f"{out}/{folder}/{run_id}-a*.parquet")):
            attempt = path.rsplit("/", 1)[1].split("-a", 1)[1].split("-", 1)[0]
            ids = pq.read_table(io.BytesIO(fs.cat_file(path))).column("id").to_pylist()
            by_attempt.setdefault(attempt, {"metrics": [], "errors": []})[folder] += ids
    return by_attempt


def job_command(bucket: str, model: str, run_id: str, *extra: str) -> list[str]:
    return [sys.executable, "jobs/protect.py", "--input", f"s3://{bucket}/catalog", "--output", f"s3://{bucket}/out",
            "--model", model, "--batch-size", "1", "--commit-rows", "1", "--run-id", run_id, *extra]


def run_to_end(command: list[str], env: dict | None = None) -> str:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_driver_killed_mid_run_then_rerun_redoes_only_what_was_not_committed(s3_bucket, tiny_model, tmp_path):
    """With the default --commit-rows (500) and --commit-seconds (60): a commit comes within about a minute although
    far fewer than 500 rows are back, so a run killed after it keeps that work (before the commit went on the
    clock, such a run kept nothing: 'resumed 0')."""
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    names = put_pairs(fs, f"{bucket}/catalog", 10)
    command = [sys.executable, "jobs/protect.py", "--input", f"s3://{bucket}/catalog", "--output", f"s3://{bucket}/out",
               "--model", tiny_model, "--batch-size", "1", "--steps", "2", "--run-id", "killed"]
    # A slow optimizer without the CPU cost (jobs.stages.DELAY_ENV): about 7 s per image, 70 s for the catalog.
    env = {**os.environ, "RTB_TEST_PROTECT_DELAY_S": "7"}
    # 1. Start the job (its own local Ray), wait for its first commit, SIGKILL the driver's whole group.
    log = open(tmp_path / "driver.log", "w+")
    driver = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and not fs.glob(f"{bucket}/out/metrics/killed-a*.parquet"):
            assert driver.poll() is None, "the job ended before it could be killed: " + (tmp_path / "driver.log").read_text()[-2000:]
            time.sleep(0.2)
            fs.invalidate_cache()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    fs.invalidate_cache()
    first = committed(fs, f"{bucket}/out", "killed")
    assert len(first) == 1
    done_first = next(iter(first.values()))["metrics"]
    assert 2 <= len(done_first) < len(names), f"killed after {len(done_first)} of {len(names)} commits"
    assert not fs.exists(f"{bucket}/out/runs/killed.json"), "a killed run has no manifest"

    # 2. Rerun the same run id with the same options: it finishes what was not committed, and only that (at
    #    full speed: the slow optimizer only had to keep the first attempt running past its first commit).
    stdout = run_to_end(command, env={k: v for k, v in env.items() if k != "RTB_TEST_PROTECT_DELAY_S"})
    fs.invalidate_cache()
    attempts = committed(fs, f"{bucket}/out", "killed")
    assert len(attempts) == 2
    # A write task of the killed attempt may have finished a commit while its Ray processes went down.
    done_first = attempts[next(iter(first))]["metrics"]
    done_second = [i for a, rows in attempts.items() if a not in first for i in rows["metrics"]]
    assert sorted(done_first + done_second) == names, "every id exactly once over both attempts"
    assert not set(done_first) & set(done_second), "committed work is not redone"
    assert f"protected {len(names)}, unchanged 0, failed 0" in stdout and f"resumed: {len(done_first)}" in stdout
    images = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/images"))
    assert images == [f"{n}.png" for n in names], "no image without its row, no row without its image"


def test_actor_dying_mid_batch_loses_and_duplicates_nothing(s3_bucket, tiny_model, tmp_path):
    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    names = put_pairs(fs, f"{bucket}/catalog", 4)
    marker = tmp_path / "actor-exited"
    # The test-only hook (jobs.stages.EXIT_ONCE_ENV): the first batch kills its actor process with os._exit.
    env = {**os.environ, "RTB_TEST_ACTOR_EXIT_ONCE": str(marker)}
    stdout = run_to_end(job_command(bucket, tiny_model, "crash", "--steps", "2"), env=env)
    assert marker.exists(), "the actor never died: the hook did not run"
    fs.invalidate_cache()
    attempts = committed(fs, f"{bucket}/out", "crash")
    rows = [i for a in attempts.values() for i in a["metrics"] + a["errors"]]
    assert sorted(rows) == names and not [i for a in attempts.values() for i in a["errors"]]
    assert f"protected {len(names)}, unchanged 0, failed 0" in stdout


class FaultyS3Proxy(ThreadingHTTPServer):
    """A tiny HTTP proxy on 127.0.0.1 in front of the S3 server that answers the first try of about half of
    all distinct requests with 503 SlowDown or a dropped connection, and every request for an object whose
    key contains ``broken`` with 503 SlowDown, always."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.seen: set[str] = set()
        self.injected = {"slowdown": 0, "reset": 0, "permanent": 0}
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _slowdown(self) -> None:
        body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        server: FaultyS3Proxy = self.server
        key = f"{self.command} {self.path}"
        with server.lock:
            first = key not in server.seen
            server.seen.add(key)
            fault = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 4 if first else None
            if "broken" in self.path.split("?")[0]:
                fault = "permanent"
            name = {0: "slowdown", 1: "reset", "permanent": "permanent"}.get(fault)
            if name:
                server.injected[name] += 1
        if name in ("slowdown", "permanent"):
            return self._slowdown()
        if name == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
        headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(server.upstream, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(k, v)
        # A HEAD answer has no body but the object's length.
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def faulty_s3(s3_server, monkeypatch):
    proxy = FaultyS3Proxy(s3_server)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RTB_S3_ATTEMPTS", "2")  # bounded: a permanently failing object costs 2 × 5 tries
    yield proxy
    proxy.shutdown()


def nan_model(path: Path) -> str:
    """A tiny real network that returns NaN for images whose mean red is above 0.8 (and a fill otherwise)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            fill = torch.sigmoid(self.conv(torch.cat([image, mask], dim=1)) * 4)
            red = image[:, 0].mean(dim=(1, 2)).view(-1, 1, 1, 1)
            return torch.where(red > 0.8, torch.full_like(fill, float("nan")), fill)

    torch.manual_seed(0)
    torch.jit.script(Net().eval()).save(str(path))
    return str(path)


@pytest.mark.usefixtures("ray_session")
def test_flaky_object_store_non_finite_rows_and_rotated_photos(faulty_s3, s3_bucket, tmp_path):
    from jobs.protect import JobConfig, run

    bucket, options = s3_bucket
    fs = catalog.url_to_fs(f"s3://{bucket}", options)[0]
    prefix = f"{bucket}/catalog"
    names = put_pairs(fs, prefix, 3)
    # A permanently failing object, a row the model turns into NaN, and a phone photo stored sideways with
    # EXIF orientation 6 whose mask was drawn on the displayed (upright, 40×56) picture.
    fs.pipe_file(f"{prefix}/broken.png", png(make_image(7)))
    fs.pipe_file(f"{prefix}/broken_mask.png", png(make_mask()))
    red = np.zeros((48, 48, 3), np.uint8)
    red[..., 0] = 240
    fs.pipe_file(f"{prefix}/nan.png", png(Image.fromarray(red)))
    fs.pipe_file(f"{prefix}/nan_mask.png", png(make_mask((48, 48))))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = io.BytesIO()
    make_image(3, (56, 40)).save(stored, format="JPEG", quality=95, exif=exif.tobytes())
    fs.pipe_file(f"{prefix}/phone.jpg", stored.getvalue())
    fs.pipe_file(f"{prefix}/phone_mask.png", png(make_mask((40, 56))))

    manifest = run(JobConfig(input=f"s3://{prefix}", output=f"s3://{bucket}/out", model=nan_model(tmp_path / "nan.pt"),
                             steps=2, batch_size=3, run_id="flaky", s3_endpoint=faulty_s3.endpoint))

    assert faulty_s3.injected["slowdown"] > 3 and faulty_s3.injected["reset"] > 3, faulty_s3.injected
    assert 2 <= faulty_s3.injected["permanent"] <= 30
    fs.invalidate_cache()
    attempt = next(iter(committed(fs, f"{bucket}/out", "flaky").values()))
    assert sorted(attempt["metrics"]) == sorted(names + ["phone"]), (manifest["counts"], attempt, [
        pq.read_table(io.BytesIO(fs.cat_file(p))).to_pylist() for p in fs.glob(f"{bucket}/out/errors/flaky-a*.parquet")])
    assert sorted(attempt["errors"]) == ["broken", "nan"]
    errors = pa.concat_tables([pq.read_table(io.BytesIO(fs.cat_file(p)))
                               for p in fs.glob(f"{bucket}/out/errors/flaky-a*.parquet")]).to_pylist()
    reasons = {e["id"]: e for e in errors}
    assert reasons["broken"]["stage"] == "read" and "broken.png" in reasons["broken"]["error"]
    assert reasons["nan"]["stage"] == "protect" and "non-finite" in reasons["nan"]["error"]
    images = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/images"))
    assert images == sorted(f"{n}.png" for n in names + ["phone"]), "no image for the broken or NaN rows"
    phone = Image.open(io.BytesIO(fs.cat_file(f"{bucket}/out/images/phone.png")))
    assert phone.size == (40, 56), "protected upright, as displayed"
    assert manifest["counts"]["protected"] == 4 and manifest["counts"]["failed"] == 2
