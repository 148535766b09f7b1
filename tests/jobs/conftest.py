"""Fixtures for the job tests: a tiny TorchScript model and one local Ray per module (catalogs: tests.fixtures.catalogs)."""

from __future__ import annotations

import pytest

from tests.fixtures.inpainters import build_tiny_torchscript



@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random inpainter saved as TorchScript (loaded through the real ``--model FILE.pt`` path)."""
    return str(build_tiny_torchscript(tmp_path_factory.mktemp("model") / "tiny.pt"))


@pytest.fixture(scope="module")
def ray_session(s3_server):
    """One local Ray for the module (started after the S3 env is set, so workers inherit it too)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()
