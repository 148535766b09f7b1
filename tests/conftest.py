"""Shared fixtures: a real S3 API server on loopback (moto's server mode, spoken to over HTTP)."""

from __future__ import annotations

import socket

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """Start moto's S3 server on 127.0.0.1 for the session; yields its endpoint URL.

    The AWS environment variables point every client (s3fs, pyarrow, Ray workers started later) at it.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    yield endpoint
    patch.undo()
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the loopback S3 server; yields ``(bucket_name, storage_options)``."""
    import uuid

    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    options = {"client_kwargs": {"endpoint_url": s3_server}, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(name)
    yield name, options
    fs.rm(name, recursive=True)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny networks on one intra-op thread (several only contend, worst on a busy CPU).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is restored after.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
