"""Fixtures for the personalization tests: a tiny random SD text-to-image model saved like a real one, and the
bundled recogniser."""

from __future__ import annotations

import pytest

from tests.fixtures.tiny_t2i import build_tiny_t2i


@pytest.fixture(scope="session")
def tiny_t2i(tmp_path_factory):
    """The directory of a tiny random SD text-to-image pipeline (loaded through the real loading code)."""
    return build_tiny_t2i(tmp_path_factory.mktemp("tiny-t2i"))


@pytest.fixture
def components(tiny_t2i):
    """A freshly loaded copy of the tiny model."""
    from rtb.personalization.components import load_components

    return load_components(tiny_t2i)


@pytest.fixture(scope="session")
def recogniser():
    """The bundled recogniser of the stand-in's domain (the measures' judge)."""
    from rtb.personalization.components import STANDIN
    from rtb.personalization.recogniser import load_recogniser

    return load_recogniser(STANDIN.parent / "standin-recogniser.safetensors")
