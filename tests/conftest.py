"""Shared fixtures: one small demo population and one run over it, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from segments import demo, pipeline
from segments.config import load_config


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
