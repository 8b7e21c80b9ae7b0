"""Shared fixtures: one small demo population and one run over it, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from segments import demo, pipeline
from segments.config import load_config

# Property tests draw the same examples on every run: CI never fails on a draw that a local
# run did not see (a failure found while developing is still shrunk and reported).
settings.register_profile("segments", derandomize=True, deadline=None)
settings.load_profile("segments")


@pytest.fixture(scope="session")
def demo_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "input"
    demo.generate(out, users=400, seed=11)
    return out


@pytest.fixture(scope="session")
def demo_run(demo_input: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    pipeline.run(load_config(), demo_input, out)
    return out
